"""--network_module takes any installed module; network_args are checked for ours and passed through for others."""

from library.options import network_kwargs
from tests.options.test_validate import build, error


def test_any_installed_module_is_accepted_and_typos_are_errors_before_loading():
    for module in ("networks.lora", "networks.dylora", "networks.lora_fa", "networks.oft", "tests.networks.kohya_contract_module"):
        assert network_kwargs(build(network_module=module)) == {}
    message = error(network_module="networks.nope")
    assert "networks.nope" in message and "networks.lora" in message
    assert "not a Python module name" in error(network_module="networks/lora.py")
    assert "pip install lycoris-lora" in error(network_module="lycoris.not_a_module")


def test_network_args_checked_per_own_module_and_passed_through_for_others():
    assert network_kwargs(build(network_module="networks.dylora", network_args=["unit=2"])) == {"unit": "2"}
    assert "unknown key 'unti'" in error(network_args=["unti=2"])  # networks.lora still refuses typos
    assert "unknown key 'unit'" in error(network_module="networks.oft", network_args=["unit=2"])
    assert "at least 1" in error(network_module="networks.dylora", network_args=["unit=0"])
    assert "use True or False" in error(network_module="networks.oft", network_args=["enable_conv=maybe"])
    assert "has no LoRA+" in error(network_module="networks.oft", loraplus_lr_ratio=4)
    foreign = build(network_module="tests.networks.kohya_contract_module", network_args=["algo=loha", "preset=attn-mlp"],
                    loraplus_lr_ratio=4)
    assert network_kwargs(foreign) == {"algo": "loha", "preset": "attn-mlp", "loraplus_lr_ratio": "4.0"}
