"""--resume from a state folder kohya's sd-scripts wrote (library/train/kohya_state.py).

The state is written here as kohya writes it: accelerate's own ``save_accelerator_state`` over the
network's state dict (kohya's LoRA names), a torch AdamW over kohya's parameter groups and a LambdaLR,
plus kohya's ``train_state.json``.
"""

import json
import logging
import subprocess
import sys

import pytest
import torch
from accelerate.checkpointing import save_accelerator_state
from safetensors.torch import load_file

from library.errors import UserError
from library.options import namespace_from
from library.train.entry import EXIT_USER, main, train
from library.train.setup_model import load_for_training
from tests.faults.harness import child_env, cli_args
from tests.train.conftest import REPO, base_values

STEPS = 3


def _kohya_state(tmp_path, ckpt, data, name="kohya-step00000003-state", optimizer="AdamW", script="train_network",
                 **values):
    """A kohya state at step 3, after 3 AdamW steps on random gradients; returns (folder, weights, optimizer sd)."""
    args = namespace_from(base_values(ckpt, data, tmp_path / "kohya_out", **values), script)
    torch.manual_seed(123)
    net = load_for_training(args, script).network
    groups, _ = net.prepare_optimizer_params(args.text_encoder_lr, args.unet_lr, args.learning_rate)
    opt = torch.optim.AdamW(groups, lr=args.learning_rate) if optimizer == "AdamW" else torch.optim.SGD(groups, lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    for _ in range(STEPS):
        for p in net.parameters():
            if p.requires_grad:
                p.grad = torch.randn_like(p)
        opt.step()
        sched.step()
    folder = tmp_path / name
    folder.mkdir()  # Accelerator.save_state makes the folder, then calls this
    save_accelerator_state(str(folder), [net.state_dict()], [opt], [sched], [], 0, STEPS)
    (folder / "train_state.json").write_text(json.dumps({"current_epoch": 1, "current_step": STEPS}))
    return folder, {k: v.detach().clone() for k, v in net.state_dict().items()}, opt.state_dict()


def _resume(tmp_path, ckpt, data, state, script="train_network", **values):
    args = namespace_from(base_values(ckpt, data, tmp_path / "out", resume=str(state), **values), script)
    return train(args, script)


def test_resume_at_the_states_step_carries_weights_and_adamw_moments(tiny_ckpt, demo_data, tmp_path, caplog):
    """Through train_network.py's main: a run that resumes at its last step writes the state's values back out."""
    ckpt = tiny_ckpt("sd1")
    state, weights, opt_sd = _kohya_state(tmp_path, ckpt, demo_data)
    assert {p.name for p in state.iterdir()} >= {"model.safetensors", "optimizer.bin", "scheduler.bin",
                                                  "random_states_0.pkl", "train_state.json"}
    argv = cli_args(ckpt, demo_data, tmp_path / "out", network_dim=8, network_alpha=8, train_batch_size=2, seed=7,
                    max_train_steps=STEPS, resume=state, save_state=True, network_dropout=None)
    with caplog.at_level(logging.WARNING, logger="lorasmith.train"):
        assert main(argv, "train_network") == 0
    assert "resumed kohya state" in caplog.text and "LoRA weights and optimizer state" in caplog.text
    lora = load_file(tmp_path / "out" / "t.safetensors")
    assert set(lora) == set(weights)
    for k, v in weights.items():  # nothing left to train: the state's values come out as they went in
        assert torch.equal(lora[k].float(), v.float()), k
    ours = tmp_path / "out" / "t-state"
    saved = torch.load(ours / "optimizer.pt", weights_only=True)
    assert json.loads((ours / "train_state.json").read_text())["global_step"] == STEPS
    assert len(saved["state"]) == len(opt_sd["state"]) > 0
    assert opt_sd["param_groups"][0]["initial_lr"] == 5e-3  # kohya's lr; this run's schedule (1e-3, cosine) rules:
    assert saved["param_groups"][0]["initial_lr"] == 1e-3
    assert torch.load(ours / "scheduler.pt", weights_only=True)["last_epoch"] == STEPS
    for i, entry in opt_sd["state"].items():
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved["state"][i][name], entry[name]), (i, name)


@pytest.mark.parametrize("family, script", [("sd1", "train_network"), ("sdxl", "sdxl_train_network")])
def test_resume_continues_training_from_the_states_step(tiny_ckpt, demo_data, tmp_path, family, script):
    ckpt = tiny_ckpt(family)
    state, weights, opt_sd = _kohya_state(tmp_path, ckpt, demo_data, script=script)
    result = _resume(tmp_path, ckpt, demo_data, state, script=script, max_train_steps=STEPS + 2, save_state=True)
    assert result.steps == STEPS + 2 and len(result.losses) == 2  # steps 4 and 5 only
    saved = torch.load(tmp_path / "out" / "t-state" / "optimizer.pt", weights_only=True)
    # AdamW's counts went on from kohya's 3 (SDXL: modules behind the unused last CLIP layer get no gradient, stay at 3)
    counts = {float(e["step"]) for e in saved["state"].values()}
    assert STEPS + 2 in counts and counts <= {STEPS, STEPS + 2}, counts


def test_another_optimizer_keeps_the_weights_and_restarts_the_optimizer_with_one_notice(tiny_ckpt, demo_data, tmp_path, caplog):
    ckpt = tiny_ckpt("sd1")
    state, weights, _ = _kohya_state(tmp_path, ckpt, demo_data, optimizer="SGD")
    with caplog.at_level(logging.WARNING, logger="lorasmith.train"):
        result = _resume(tmp_path, ckpt, demo_data, state, max_train_steps=STEPS, save_state=True)
    notices = [r.getMessage() for r in caplog.records if "resumed kohya state" in r.getMessage()]
    assert len(notices) == 1 and "optimizer restarted: the state's optimizer is SGD, this run's AdamW" in notices[0]
    lora = load_file(result.lora)
    assert all(torch.equal(lora[k].float(), v.float()) for k, v in weights.items())
    assert torch.load(tmp_path / "out" / "t-state" / "optimizer.pt", weights_only=True)["state"] == {}


def test_missing_optimizer_file_restarts_the_optimizer(tiny_ckpt, demo_data, tmp_path, caplog):
    ckpt = tiny_ckpt("sd1")
    state, _, _ = _kohya_state(tmp_path, ckpt, demo_data)
    (state / "optimizer.bin").unlink()
    (state / "train_state.json").write_text(json.dumps({"current_epoch": 2, "current_step": STEPS}))
    with caplog.at_level(logging.WARNING, logger="lorasmith.train"):
        _resume(tmp_path, ckpt, demo_data, state, max_train_steps=STEPS)
    assert "optimizer restarted: optimizer.bin is missing" in caplog.text
    assert "kohya counted epoch 2 at this step, this run has" in caplog.text  # another epoch length: said, not hidden


@pytest.mark.parametrize("change, message", [
    ({"network_dim": 4}, r"the state's LoRA has rank 8 at lora_\w+, this run 4; resume with --network_dim 8"),
    ({"network_alpha": 2}, r"the state's network alpha is 8 at lora_\w+, this run 2; resume with --network_alpha 8"),
    ({"network_train_unet_only": True}, r"LoRA modules of the state are not in this run \(e\.g\. lora_te_"),
])
def test_network_settings_that_differ_are_refused_before_training(tiny_ckpt, demo_data, tmp_path, change, message):
    ckpt = tiny_ckpt("sd1")
    state, _, _ = _kohya_state(tmp_path, ckpt, demo_data)
    with pytest.raises(UserError, match=message):
        _resume(tmp_path, ckpt, demo_data, state, **change)
    assert not (tmp_path / "out" / "t.safetensors").exists()


def test_an_sdxl_state_on_an_sd1_run_is_refused(tiny_ckpt, demo_data, tmp_path):
    state, _, _ = _kohya_state(tmp_path, tiny_ckpt("sdxl"), demo_data, script="sdxl_train_network")
    with pytest.raises(UserError, match="the state is a SDXL LoRA but this run's base model is SD1.x/SD2.x"):
        _resume(tmp_path, tiny_ckpt("sd1"), demo_data, state)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_pickle_that_references_code_is_refused_and_nothing_runs(tiny_ckpt, demo_data, tmp_path):
    """Through a real ``python train_network.py``: exit 2, one error line, the pickle's code never ran."""
    ckpt = tiny_ckpt("sd1")
    state, _, _ = _kohya_state(tmp_path, ckpt, demo_data)
    marker = tmp_path / "PWNED"
    torch.save({"state": {}, "param_groups": [], "x": _Evil(str(marker))}, state / "optimizer.bin")
    argv = cli_args(ckpt, demo_data, tmp_path / "out", network_dim=8, network_alpha=8, train_batch_size=2, resume=state)
    proc = subprocess.run([sys.executable, str(REPO / "train_network.py"), *argv], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_USER, proc.stderr[-3000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr
    assert "optimizer.bin: refused to load: the pickle references code" in errors[0] and "--network_weights" in errors[0]
    assert not marker.exists()


@pytest.mark.parametrize("damage, message", [
    (lambda s: (s / "train_state.json").unlink(), "no train_state.json, so the step to continue at is unknown"),
    (lambda s: (s / "model.safetensors").unlink(), r"no network weights \(model.safetensors or pytorch_model.bin\)"),
    (lambda s: (s / "train_state.json").write_text('{"current_epoch": 1}'), "not kohya's train state"),
    (lambda s: (s / "train_state.json").write_text('{"current_epoch": 9, "current_step": 999}'),
     "the state is at step 999, beyond this run's 8 steps"),
])
def test_incomplete_states_give_one_clear_error(tiny_ckpt, demo_data, tmp_path, damage, message):
    ckpt = tiny_ckpt("sd1")
    state, _, _ = _kohya_state(tmp_path, ckpt, demo_data)
    damage(state)
    with pytest.raises(UserError, match=message):
        _resume(tmp_path, ckpt, demo_data, state)


def test_a_ddp_state_with_module_prefixes_and_a_pickled_weights_file_loads(tiny_ckpt, demo_data, tmp_path):
    ckpt = tiny_ckpt("sd1")
    state, weights, _ = _kohya_state(tmp_path, ckpt, demo_data)
    (state / "model.safetensors").unlink()
    torch.save({f"module.{k}": v for k, v in weights.items()}, state / "pytorch_model.bin")
    result = _resume(tmp_path, ckpt, demo_data, state, max_train_steps=STEPS)
    lora = load_file(result.lora)
    assert all(torch.equal(lora[k].float(), v.float()) for k, v in weights.items())
