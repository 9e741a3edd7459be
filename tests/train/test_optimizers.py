"""library.train.optimizers: kohya optimizer names, --optimizer_args parsing, flags, logging, resume."""

import importlib.util
import io
import logging
import sys

import pytest
import torch

from library.errors import UserError
from library.train import optimizers as opt_mod
from library.train.optimizers import (
    OPTIMIZER_TYPES,
    OptimizerError,
    build_optimizer,
    parse_optimizer_args,
)
from library.train.optimizer_logs import current_lrs
from library.train.schedulers import build_scheduler

pytestmark = pytest.mark.filterwarnings("ignore:Paged optimizers are not supported on CPU")

PACKAGES = {spec.name: (spec.module.split(".")[0], spec.package) for spec in opt_mod._SPECS}
ADAPTIVE = {s.name for s in opt_mod._SPECS if s.kind == "adaptive"}
SCHEDULE_FREE = {s.name for s in opt_mod._SPECS if s.kind == "schedule_free"}
# RAdamScheduleFree leaves the weights alone for its first 4 steps by design (silent SGD phase).
EXTRA_ARGS = {"RAdamScheduleFree": ["silent_sgd_phase=False"]}
GPU_ONLY: dict = {}  # bitsandbytes 0.50 steps every optimizer here on CPU (paged ones fall back to non-paged)


def _skip_if_unavailable(type_name):
    module, package = PACKAGES.get(type_name, (None, None))
    if package and importlib.util.find_spec(module) is None:
        pytest.skip(f"optional package '{package}' is not installed (pip install {package})")
    if type_name in GPU_ONLY and not torch.cuda.is_available():
        pytest.skip(f"{type_name} needs CUDA: {GPU_ONLY[type_name]}")


class Tiny(torch.nn.Module):
    """Two parts like a LoRA network: 'textencoder' (64x64 = 4096 elements, the bitsandbytes 8-bit threshold)
    and 'unet'."""

    def __init__(self):
        super().__init__()
        self.te = torch.nn.Linear(64, 64)
        self.unet = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 8))

    def forward(self, x):
        return self.unet(self.te(x))


def tiny(seed=0):
    torch.manual_seed(seed)
    return Tiny()


def groups_for(model, lrs):
    return [{"params": list(model.te.parameters()), "lr": lrs[0]}, {"params": list(model.unet.parameters()), "lr": lrs[1]}]


def lrs_for(type_name):
    return (1.0, 1.0) if type_name in ADAPTIVE else (1e-3, 2e-3)


def train_steps(model, info, scheduler, n, seed=1):
    gen = torch.Generator().manual_seed(seed)
    seen = []
    for _ in range(n):
        x = torch.randn(4, 64, generator=gen)
        info.optimizer.zero_grad(set_to_none=True)
        model(x).pow(2).mean().backward()
        info.optimizer.step()
        if scheduler is not None:
            scheduler.step()
        seen.append(current_lrs(info, scheduler))
    return seen


ALL_TYPES = list(OPTIMIZER_TYPES) + ["torch.optim.RMSprop", "RMSprop", "adamw8BIT"]


# --- parsing --------------------------------------------------------------------------------------


def test_parse_kohya_examples():
    assert parse_optimizer_args(["weight_decay=0.01", "betas=0.9,0.999", "decouple=True"]) == {
        "weight_decay": 0.01, "betas": (0.9, 0.999), "decouple": True}


def test_parse_prodigy_seed():
    args = parse_optimizer_args(["weight_decay=0.01", "decouple=True", "d0=0.0001", "use_bias_correction=True"])
    assert args == {"weight_decay": 0.01, "decouple": True, "d0": 0.0001, "use_bias_correction": True}
    assert isinstance(args["decouple"], bool) and isinstance(args["use_bias_correction"], bool)


def test_parse_adafactor_seed():
    assert parse_optimizer_args(["scale_parameter=False", "relative_step=False", "warmup_init=False"]) == {
        "scale_parameter": False, "relative_step": False, "warmup_init": False}


@pytest.mark.parametrize("entry, value", [
    ("x=[0.9,0.99]", [0.9, 0.99]),
    ("x=(0.9, 0.99)", (0.9, 0.99)),
    ("x=1e-4", 1e-4),
    ("x=10", 10),
    ("x='cosine'", "cosine"),
    ("x=cosine", "cosine"),  # not a literal: the raw string
    ("x=false", False),  # kohya would pass the truthy string "false"
    ("x=TRUE", True),
    ("x=none", None),
    ("x=a=b", "a=b"),  # split on the first '=' only
    ("x=0.9,true", (0.9, True)),
    ("x=1:10,0.5", ("1:10", 0.5)),
    ("  x = 0.5  ", 0.5),
])
def test_parse_values(entry, value):
    assert parse_optimizer_args([entry]) == {"x": value}


def test_parse_several_in_one_string_and_spaces_inside_values():
    assert parse_optimizer_args("weight_decay=0.01 betas=0.9, 0.999 decouple=True") == {
        "weight_decay": 0.01, "betas": (0.9, 0.999), "decouple": True}


def test_parse_none_empty_and_mapping():
    assert parse_optimizer_args(None) == {}
    assert parse_optimizer_args([]) == {}
    assert parse_optimizer_args(["", "  "]) == {}
    given = {"betas": [0.9, 0.99]}
    parsed = parse_optimizer_args(given)
    assert parsed == given and parsed is not given


@pytest.mark.parametrize("entry", ["weight_decay", "=0.1", "weight_decay=", "1x=2", "weight-decay=0.1"])
def test_parse_malformed_names_the_entry(entry):
    with pytest.raises(OptimizerError) as err:
        parse_optimizer_args([entry])
    assert "--optimizer_args" in str(err.value)
    assert isinstance(err.value, UserError)
    assert "\n" not in str(err.value)


def test_parse_duplicate_key():
    with pytest.raises(OptimizerError, match="twice"):
        parse_optimizer_args(["x=1", "x=2"])


def test_parse_option_name_in_message():
    with pytest.raises(OptimizerError, match="--lr_scheduler_args"):
        parse_optimizer_args(["T_max"], option="--lr_scheduler_args")


# --- every type -----------------------------------------------------------------------------------


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_every_type_builds_and_steps(type_name):
    _skip_if_unavailable(type_name)
    model = tiny()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    info = build_optimizer(type_name, groups_for(model, lrs_for(type_name)), lrs_for(type_name)[0],
                           EXTRA_ARGS.get(type_name), descriptions=["textencoder", "unet"])
    scheduler = build_scheduler("constant", info, 10)
    logs = train_steps(model, info, scheduler, 3)
    info.eval()
    changed = {n: not torch.equal(before[n], p) for n, p in model.named_parameters()}
    assert all(changed.values()), changed
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert info.description.startswith(info.name)
    assert info.name == f"{type(info.optimizer).__module__}.{type(info.optimizer).__name__}"
    assert set(logs[-1]) >= {"lr/textencoder", "lr/unet"}
    assert info.is_adaptive == (type_name in ADAPTIVE)
    assert info.is_schedule_free == (type_name in SCHEDULE_FREE)
    assert info.fused_lr_schedule == (type_name == "Adafactor")
    if info.is_adaptive:
        assert logs[-1]["lr/d*lr/unet"] > 0


def test_bitsandbytes_8bit_really_is_8bit_on_cpu():
    _skip_if_unavailable("AdamW8bit")
    model = tiny()
    info = build_optimizer("AdamW8bit", groups_for(model, (1e-3, 1e-3)), 1e-3)
    train_steps(model, info, None, 1)
    state = info.optimizer.state[model.te.weight]
    assert state["state1"].dtype == torch.uint8 and state["state2"].dtype == torch.uint8


def test_names_are_case_insensitive_and_default_is_adamw():
    model = tiny()
    assert build_optimizer("adamw", model.parameters(), 1e-3).type == "AdamW"
    assert build_optimizer(None, model.parameters(), 1e-3).name == "torch.optim.adamw.AdamW"
    assert build_optimizer("", model.parameters(), 1e-3).name == "torch.optim.adamw.AdamW"


def test_caller_groups_are_not_modified():
    model = tiny()
    groups = groups_for(model, (1e-3, 2e-3))
    snapshot = [dict(g) for g in groups]
    build_optimizer("Adafactor", groups, 1e-3)  # kohya pops 'lr' from the caller's groups here
    assert groups == snapshot


def test_group_without_lr_gets_base_lr():
    model = tiny()
    info = build_optimizer("AdamW", [{"params": model.te.parameters()}, {"params": model.unet.parameters(), "lr": 5e-4}], 1e-3)
    assert [g["lr"] for g in info.optimizer.param_groups] == [1e-3, 5e-4]


# --- descriptions (ss_optimizer) -----------------------------------------------------------------


def test_prodigy_description_matches_kohya():
    _skip_if_unavailable("Prodigy")
    model = tiny()
    info = build_optimizer("Prodigy", groups_for(model, (1.0, 1.0)), 1.0,
                           ["weight_decay=0.01", "decouple=True", "d0=0.0001", "use_bias_correction=True"])
    assert info.description == ("prodigyopt.prodigy.Prodigy(weight_decay=0.01,decouple=True,d0=0.0001,"
                                "use_bias_correction=True)")
    assert info.args == {"weight_decay": 0.01, "decouple": True, "d0": 0.0001, "use_bias_correction": True}
    group = info.optimizer.param_groups[0]
    assert group["d0"] == 0.0001 and group["use_bias_correction"] is True and group["weight_decay"] == 0.01


def test_description_plain_and_tuple():
    model = tiny()
    assert build_optimizer("AdamW", model.parameters(), 1e-3).description == "torch.optim.adamw.AdamW"
    info = build_optimizer("AdamW", model.parameters(), 1e-3, ["weight_decay=0.1", "betas=0.9,0.99"])
    assert info.description == "torch.optim.adamw.AdamW(weight_decay=0.1,betas=(0.9, 0.99))"


def test_sgd_nesterov_defaults_momentum_like_kohya():
    model = tiny()
    info = build_optimizer("SGDNesterov", model.parameters(), 1e-2)
    assert info.description == "torch.optim.sgd.SGD(momentum=0.9)"
    group = info.optimizer.param_groups[0]
    assert group["nesterov"] is True and group["momentum"] == 0.9
    info = build_optimizer("SGDNesterov", model.parameters(), 1e-2, ["momentum=0.5"])
    assert info.optimizer.param_groups[0]["momentum"] == 0.5


# --- Adafactor ------------------------------------------------------------------------------------


def test_adafactor_relative_step_mode(caplog):
    model = tiny()
    groups = groups_for(model, (1e-3, 2e-3))
    with caplog.at_level(logging.WARNING):
        info = build_optimizer("Adafactor", groups, 1e-3, descriptions=["textencoder", "unet"])
    assert "initial lr" in caplog.text and "ignores per-group learning rates" in caplog.text
    assert info.fused_lr_schedule and info.initial_lr == 1e-3 and info.learning_rate is None
    assert info.description == "transformers.optimization.Adafactor(relative_step=True)"
    opt = info.optimizer
    assert opt.defaults["lr"] is None and all(g["relative_step"] for g in opt.param_groups)
    scheduler = build_scheduler("constant", info, 100)  # kohya switches to the adafactor schedule
    assert type(scheduler).__name__ == "AdafactorSchedule"
    assert current_lrs(info, scheduler) == {"lr/textencoder": 1e-3, "lr/unet": 1e-3}
    before = model.te.weight.detach().clone()
    logs = train_steps(model, info, scheduler, 3)
    assert not torch.equal(before, model.te.weight)
    # what is logged is Adafactor's own step size: min(1e-2, 1/sqrt(step)) * RMS(param)
    state = opt.state[model.te.weight]
    expected = min(1e-2, 1 / state["step"] ** 0.5) * max(1e-3, state["RMS"])
    assert logs[-1]["lr/textencoder"] == pytest.approx(expected)


def test_adafactor_warmup_init_turns_on_relative_step():
    model = tiny()
    info = build_optimizer("Adafactor", model.parameters(), 1e-3, ["relative_step=False", "warmup_init=True"])
    assert info.fused_lr_schedule and info.optimizer.param_groups[0]["relative_step"] is True


def test_adafactor_plain_lr_mode(caplog):
    model = tiny()
    with caplog.at_level(logging.WARNING):
        info = build_optimizer("Adafactor", groups_for(model, (1e-4, 2e-4)), 1e-4,
                               ["scale_parameter=False", "relative_step=False", "warmup_init=False"], max_grad_norm=1.0)
    assert "max_grad_norm" in caplog.text
    assert not info.fused_lr_schedule and info.learning_rate == 1e-4
    assert info.description == ("transformers.optimization.Adafactor(scale_parameter=False,relative_step=False,"
                                "warmup_init=False)")
    assert [g["lr"] for g in info.optimizer.param_groups] == [1e-4, 2e-4]
    scheduler = build_scheduler("constant_with_warmup", info, 100, num_warmup_steps=10)
    assert type(scheduler).__name__ == "LambdaLR"
    before = model.unet[0].weight.detach().clone()
    logs = train_steps(model, info, scheduler, 3)
    assert not torch.equal(before, model.unet[0].weight)
    assert logs[-1] == {"lr/textencoder": pytest.approx(1e-4 * 0.3), "lr/unet": pytest.approx(2e-4 * 0.3)}


# --- adaptive (Prodigy / D-Adaptation) ------------------------------------------------------------


def test_prodigy_low_lr_warns(caplog):
    _skip_if_unavailable("Prodigy")
    with caplog.at_level(logging.WARNING):
        build_optimizer("Prodigy", tiny().parameters(), 1e-4)
    assert "around 1.0" in caplog.text


def test_prodigy_with_loraplus_is_refused():
    _skip_if_unavailable("Prodigy")
    model = tiny()
    with pytest.raises(OptimizerError, match="loraplus_lr_ratio") as err:
        build_optimizer("Prodigy", groups_for(model, (1.0, 16.0)), 1.0, descriptions=["unet", "unet plus"])
    assert "unet plus=16.0" in str(err.value)


def test_prodigy_different_te_unet_lr_is_refused():
    _skip_if_unavailable("Prodigy")
    model = tiny()
    with pytest.raises(OptimizerError, match="--unet_lr and --text_encoder_lr"):
        build_optimizer("prodigy", groups_for(model, (0.5, 1.0)), 1.0, descriptions=["textencoder", "unet"])
    # a 0 lr group is allowed by Prodigy itself
    info = build_optimizer("prodigy", groups_for(model, (0.0, 1.0)), 1.0)
    train_steps(model, info, None, 1)


def test_dadapt_first_group_only_warns(caplog):
    _skip_if_unavailable("DAdaptAdaGrad")
    model = tiny()
    with caplog.at_level(logging.WARNING):
        build_optimizer("DAdaptAdaGrad", groups_for(model, (1.0, 2.0)), 1.0)
    assert "only the first parameter group's learning rate" in caplog.text


def test_current_lrs_labels_and_d_lr():
    _skip_if_unavailable("Prodigy")
    model = tiny()
    info = build_optimizer("Prodigy", groups_for(model, (1.0, 1.0)), 1.0)
    scheduler = build_scheduler("linear", info, 10)
    train_steps(model, info, scheduler, 2)
    logs = current_lrs(info, scheduler)
    d = info.optimizer.param_groups[0]["d"]
    assert logs == {"lr/textencoder": 0.8, "lr/d*lr/textencoder": d * 0.8, "lr/unet": 0.8, "lr/d*lr/unet": d * 0.8}
    assert set(current_lrs(info, scheduler, ["te1", "unet plus"])) == {"lr/te1", "lr/d*lr/te1", "lr/unet plus", "lr/d*lr/unet plus"}


def test_current_lrs_default_labels():
    model = tiny()
    one = build_optimizer("AdamW", model.parameters(), 1e-3)
    assert current_lrs(one, build_scheduler("constant", one, 10)) == {"lr/unet": 1e-3}
    three = build_optimizer("AdamW", groups_for(model, (1e-3, 2e-3)) + [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": 3e-3}], 1e-3)
    assert list(current_lrs(three, None)) == ["lr/group0", "lr/group1", "lr/group2"]


# --- schedule-free --------------------------------------------------------------------------------


def test_schedule_free_train_eval():
    _skip_if_unavailable("AdamWScheduleFree")
    model = tiny()
    info = build_optimizer("AdamWScheduleFree", model.parameters(), 1e-2, ["warmup_steps=2"])
    assert info.is_schedule_free and info.optimizer.param_groups[0]["train_mode"]
    train_steps(model, info, None, 3)
    train_point = model.te.weight.detach().clone()
    info.eval()
    assert not torch.equal(train_point, model.te.weight)
    info.train()
    assert torch.allclose(train_point, model.te.weight, atol=1e-6)


def test_plain_optimizer_train_eval_are_noops():
    model = tiny()
    info = build_optimizer("AdamW", model.parameters(), 1e-3)
    info.eval()
    info.train()


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_type_lists_names_and_suggests():
    with pytest.raises(OptimizerError) as err:
        build_optimizer("Prodigi", tiny().parameters(), 1.0)
    text = str(err.value)
    assert "Did you mean Prodigy" in text and "AdamW8bit" in text and "torch.optim.RMSprop" in text
    assert "\n" not in text


def test_missing_package_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lion_pytorch", None)  # import now fails as if not installed
    with pytest.raises(OptimizerError, match=r"pip install lion-pytorch"):
        build_optimizer("Lion", tiny().parameters(), 1e-4)
    monkeypatch.setitem(sys.modules, "dadaptation", None)
    monkeypatch.setitem(sys.modules, "dadaptation.experimental", None)
    with pytest.raises(OptimizerError, match=r"pip install dadaptation"):
        build_optimizer("DAdaptation", tiny().parameters(), 1.0)


def test_unexpected_optimizer_arg_lists_accepted():
    with pytest.raises(OptimizerError) as err:
        build_optimizer("AdamW", tiny().parameters(), 1e-3, ["decouple=True"])
    assert "decouple" in str(err.value) and "weight_decay" in str(err.value) and "--optimizer_args" in str(err.value)


def test_rejected_value_is_user_error():
    with pytest.raises(OptimizerError, match="rejected"):
        build_optimizer("AdamW", tiny().parameters(), 1e-3, ["betas=1.5,0.999"])


def test_lr_in_optimizer_args_refused():
    with pytest.raises(OptimizerError, match="--learning_rate"):
        build_optimizer("AdamW", tiny().parameters(), 1e-3, ["lr=1e-4"])


def test_bad_learning_rate():
    with pytest.raises(OptimizerError, match="--learning_rate"):
        build_optimizer("AdamW", tiny().parameters(), float("nan"))


def test_dotted_path_errors():
    with pytest.raises(OptimizerError, match="did you mean torch.optim.RMSprop"):
        build_optimizer("torch.optim.RMSpro", tiny().parameters(), 1e-3)
    with pytest.raises(OptimizerError, match="no module 'no_such_pkg_xyz'"):
        build_optimizer("no_such_pkg_xyz.Opt", tiny().parameters(), 1e-3)


def test_empty_groups_refused():
    with pytest.raises(OptimizerError, match="nothing to train"):
        build_optimizer("AdamW", [{"params": [], "lr": 1e-3}], 1e-3)


# --- resume: optimizer + scheduler state round trip ------------------------------------------------


def _roundtrip(obj_state):
    buffer = io.BytesIO()
    torch.save(obj_state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)  # what our checkpoints must load with


def _build(type_name, model):
    lrs = lrs_for(type_name)
    info = build_optimizer(type_name, groups_for(model, lrs), lrs[0], EXTRA_ARGS.get(type_name),
                           descriptions=["textencoder", "unet"])
    name = "constant" if info.is_schedule_free or info.fused_lr_schedule else "cosine"
    warmup = 0 if name == "constant" or type_name == "DAdaptSGD" else 2  # DAdaptSGD cannot start at lr 0
    return info, build_scheduler(name, info, 12, num_warmup_steps=warmup)


@pytest.mark.parametrize("type_name", ALL_TYPES)
def test_state_dict_round_trip_continues_identically(type_name):
    _skip_if_unavailable(type_name)
    model = tiny()
    info, scheduler = _build(type_name, model)
    train_steps(model, info, scheduler, 4, seed=1)
    saved = _roundtrip({"model": model.state_dict(), "optimizer": info.optimizer.state_dict(),
                        "scheduler": scheduler.state_dict()})
    expected_logs = train_steps(model, info, scheduler, 5, seed=2)
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}

    resumed = tiny(seed=123)  # different init: everything must come from the checkpoint
    resumed.load_state_dict(saved["model"])
    info2, scheduler2 = _build(type_name, resumed)
    info2.optimizer.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    logs = train_steps(resumed, info2, scheduler2, 5, seed=2)
    assert logs == expected_logs
    for n, p in resumed.named_parameters():
        assert torch.equal(p, expected[n]), n


def test_docs_list_every_optimizer_and_scheduler():
    from pathlib import Path

    from library.train.schedulers import SCHEDULER_NAMES

    doc = (Path(__file__).resolve().parents[2] / "docs" / "optimizers.md").read_text(encoding="utf-8")
    rows = {line.split("|")[1].strip() for line in doc.splitlines() if line.startswith("| ")}
    assert set(OPTIMIZER_TYPES) <= rows, set(OPTIMIZER_TYPES) - rows
    assert {n for n in SCHEDULER_NAMES if n != "constant"} | {"constant (default)"} <= rows
    for spec in opt_mod._SPECS:
        if spec.package:
            assert f"| {spec.name} | {spec.module}.{spec.attr} | {spec.package} |" in doc, spec.name


@pytest.mark.parametrize("args", [{"betas": (0.9, float("nan"))}, {"eps": float("inf")}, ["weight_decay=nan"],
                                  ["betas=0.9,1e999"]])
def test_nan_or_inf_optimizer_args_are_refused_from_any_caller(args):
    """A mapping (ComfyUI node, Python callers) is checked like the command line's key=value text."""
    with pytest.raises(OptimizerError, match="finite number"):
        build_optimizer("AdamW", [torch.zeros(2, requires_grad=True)], 1e-3, args)
