"""library.train.schedulers: kohya lr curves, warmup as steps or fraction, errors, resume round trips."""

import importlib.util
import io
import logging
import math

import pytest
import torch

from library.errors import UserError
from library.train.optimizers import build_optimizer
from library.train.schedulers import SCHEDULER_NAMES, SchedulerError, build_scheduler, resolve_steps

TOTAL = 100


def make_opt(lrs=(1.0,), type_name="AdamW", args=None):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(4, 4)) for _ in lrs]
    groups = [{"params": [p], "lr": lr} for p, lr in zip(params, lrs)]
    return build_optimizer(type_name, groups, lrs[0], args), params


def curve(name, steps, lrs=(1.0,), **kwargs):
    """The lr of the first group after each of ``steps`` scheduler steps (step 0 = right after construction)."""
    info, params = make_opt(lrs)
    scheduler = build_scheduler(name, info, TOTAL, **kwargs)
    out, done = {}, 0
    for target in sorted(steps):
        while done < target:
            info.optimizer.step()  # no gradients: a no-op that keeps torch's step-order check quiet
            scheduler.step()
            done += 1
        out[target] = scheduler.get_last_lr()[0]
    return out


def approx(values):
    return {k: pytest.approx(v, abs=1e-12) for k, v in values.items()}


def cos_half(progress):
    return 0.5 * (1 + math.cos(math.pi * progress))


def test_constant():
    assert curve("constant", [0, 50, 100]) == {0: 1.0, 50: 1.0, 100: 1.0}
    assert curve(None, [0, 7]) == {0: 1.0, 7: 1.0}


@pytest.mark.parametrize("warmup", [10, 0.1, "10%", "10"])
def test_constant_with_warmup_int_and_fraction(warmup):
    assert curve("constant_with_warmup", [0, 5, 10, 99], num_warmup_steps=warmup) == approx({0: 0.0, 5: 0.5, 10: 1.0, 99: 1.0})


def test_linear():
    assert curve("linear", [0, 5, 10, 55, 100], num_warmup_steps=10) == approx({0: 0, 5: 0.5, 10: 1, 55: 0.5, 100: 0})


def test_cosine():
    got = curve("cosine", [5, 10, 55, 100], num_warmup_steps=10)
    assert got == approx({5: 0.5, 10: 1.0, 55: 0.5, 100: 0.0})
    got = curve("cosine", [25], num_warmup_steps=0)
    assert got[25] == pytest.approx(cos_half(0.25))


def test_cosine_with_restarts():
    got = curve("cosine_with_restarts", [0, 25, 50, 75], num_cycles=2)
    assert got == approx({0: 1.0, 25: 0.5, 50: 1.0, 75: 0.5})


def test_polynomial_power():
    got = curve("polynomial", [0, 50, 100], power=2.0)
    end = 1e-7
    assert got == approx({0: 1.0, 50: (1 - end) * 0.25 + end, 100: end})
    got = curve("polynomial", [50], power=1.0, scheduler_args=["lr_end=0.1"])
    assert got[50] == pytest.approx(0.9 * 0.5 + 0.1)


def test_inverse_sqrt():
    got = curve("inverse_sqrt", [5, 10, 40], num_warmup_steps=10)
    assert got == approx({5: 0.5, 10: 1.0, 40: 1 / math.sqrt(4)})
    got = curve("inverse_sqrt", [30], num_warmup_steps=10, timescale=20)
    assert got[30] == pytest.approx(1 / math.sqrt((30 + 10) / 20))


def test_cosine_with_min_lr():
    got = curve("cosine_with_min_lr", [0, 50, 100], min_lr_ratio=0.1)
    assert got == approx({0: 1.0, 50: 0.1 + 0.9 * 0.5, 100: 0.1})


def test_warmup_stable_decay():
    got = curve("warmup_stable_decay", [5, 10, 80, 90, 100], num_warmup_steps=0.1, num_decay_steps=0.2, min_lr_ratio=0.1)
    assert got == approx({5: 0.1 + 0.9 * 0.5, 10: 1.0, 80: 1.0, 90: 0.1 + 0.9 * 0.5, 100: 0.1})
    got = curve("warmup_stable_decay", [90], num_decay_steps=20)
    assert got[90] == pytest.approx(0.5)


def test_piecewise_constant():
    expected = {0: 1.0, 9: 1.0, 10: 0.5, 19: 0.5, 20: 0.1, 99: 0.1}
    assert curve("piecewise_constant", list(expected), scheduler_args=["step_rules='1:10,0.5:20,0.1'"]) == expected
    assert curve("piecewise_constant", list(expected), scheduler_args=["step_rules=1:10,0.5:20,0.1"]) == expected


def test_every_group_is_scaled():
    info, _ = make_opt((2e-3, 1e-3))
    scheduler = build_scheduler("linear", info, 10, num_warmup_steps=0)
    for _ in range(5):
        info.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [pytest.approx(1e-3), pytest.approx(5e-4)]
    assert [g["lr"] for g in info.optimizer.param_groups] == scheduler.get_last_lr()


def test_bare_torch_optimizer_is_accepted():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    scheduler = build_scheduler("linear", opt, 10)
    assert scheduler.get_last_lr() == [1.0]


def test_dotted_and_bare_torch_class_with_args():
    for name in ("torch.optim.lr_scheduler.StepLR", "StepLR"):
        got = curve(name, [9, 10, 20], scheduler_args=["step_size=10", "gamma=0.5"])
        assert got == approx({9: 1.0, 10: 0.5, 20: 0.25})


# --- warmup values ---------------------------------------------------------------------------------


@pytest.mark.parametrize("value, steps", [(0, 0), (None, 0), (10, 10), (0.1, 10), (0.05, 5), (0.999, 99), ("10%", 10),
                                          ("0.25", 25), ("30", 30), (1.0, 1), (250.0, 250)])
def test_resolve_steps(value, steps):
    assert resolve_steps(value, TOTAL) == steps


@pytest.mark.parametrize("value", [-1, 1.5, "abc", float("nan"), True, "150%"])
def test_resolve_steps_errors(value):
    with pytest.raises(SchedulerError, match="--lr_warmup_steps"):
        resolve_steps(value, TOTAL)


def test_fraction_needs_total():
    with pytest.raises(SchedulerError, match="unknown"):
        resolve_steps(0.1, 0)


@pytest.mark.parametrize("name, fix", [
    ("constant", "constant_with_warmup"),
    ("piecewise_constant", "step_rules"),
    ("torch.optim.lr_scheduler.StepLR", "--lr_warmup_steps=0"),
])
def test_warmup_with_a_scheduler_without_warmup_is_an_error(name, fix):
    info, _ = make_opt()
    with pytest.raises(SchedulerError) as err:
        build_scheduler(name, info, TOTAL, num_warmup_steps=10, scheduler_args=["step_rules='1:10,0.5'", "step_size=5"]
                        if name == "piecewise_constant" else (["step_size=5"] if "." in name else None))
    text = str(err.value)
    assert "--lr_warmup_steps=10" in text and fix in text and "\n" not in text
    assert isinstance(err.value, UserError)


def test_warmup_not_below_total_warns(caplog):
    with caplog.at_level(logging.WARNING):
        curve("cosine", [1], num_warmup_steps=100)
    assert "never decay" in caplog.text


# --- errors ---------------------------------------------------------------------------------------


def test_unknown_scheduler_suggests():
    info, _ = make_opt()
    with pytest.raises(SchedulerError) as err:
        build_scheduler("cosin", info, TOTAL)
    assert "Did you mean cosine" in str(err.value) and "warmup_stable_decay" in str(err.value)


def test_bad_scheduler_args():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="--lr_scheduler_args.*accepts"):
        build_scheduler("linear", info, TOTAL, scheduler_args=["foo=1"])
    with pytest.raises(SchedulerError, match="accepts"):
        build_scheduler("torch.optim.lr_scheduler.StepLR", info, TOTAL, scheduler_args=["stepsize=1"])
    with pytest.raises(SchedulerError, match="has no 'StepLr'.*StepLR"):
        build_scheduler("torch.optim.lr_scheduler.StepLr", info, TOTAL)


def test_cosine_with_min_lr_needs_a_minimum():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="--lr_scheduler_min_lr_ratio"):
        build_scheduler("cosine_with_min_lr", info, TOTAL)
    scheduler = build_scheduler("cosine_with_min_lr", info, TOTAL, scheduler_args=["min_lr=0.2"])
    assert scheduler.lr_lambdas[0](TOTAL) == pytest.approx(0.2)


def test_polynomial_end_above_lr_is_user_error():
    info, _ = make_opt((1e-8,))
    with pytest.raises(SchedulerError, match="lr_end"):
        build_scheduler("polynomial", info, TOTAL)


def test_decaying_curves_need_total_steps():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="--max_train_steps"):
        build_scheduler("cosine", info, 0)


def test_wsd_phases_must_fit():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="exceed"):
        build_scheduler("warmup_stable_decay", info, TOTAL, num_warmup_steps=60, num_decay_steps=50)


def test_piecewise_needs_rules():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="step_rules"):
        build_scheduler("piecewise_constant", info, TOTAL)


# --- Adafactor ------------------------------------------------------------------------------------


def test_adafactor_schedule_only_with_relative_step_adafactor():
    info, _ = make_opt()
    with pytest.raises(SchedulerError, match="--optimizer_type=Adafactor"):
        build_scheduler("adafactor", info, TOTAL)
    plain, _ = make_opt((1e-3,), "Adafactor", ["relative_step=False", "scale_parameter=False"])
    with pytest.raises(SchedulerError, match="relative_step=True"):
        build_scheduler("adafactor", plain, TOTAL)


def test_adafactor_relative_step_overrides_scheduler(caplog):
    info, _ = make_opt((1e-3,), "Adafactor")
    with caplog.at_level(logging.WARNING):
        scheduler = build_scheduler("cosine", info, TOTAL)
    assert type(scheduler).__name__ == "AdafactorSchedule" and "replaced by the adafactor schedule" in caplog.text
    assert scheduler.get_last_lr() == [1e-3]
    assert type(build_scheduler("adafactor:0.002", info.optimizer, TOTAL)).__name__ == "AdafactorSchedule"
    with pytest.raises(SchedulerError, match="warmup_init"):
        build_scheduler("adafactor", info, TOTAL, num_warmup_steps=10)


# --- schedule-free --------------------------------------------------------------------------------


@pytest.mark.skipif(importlib.util.find_spec("schedulefree") is None,
                    reason="optional package 'schedulefree' is not installed (pip install schedulefree)")
def test_schedule_free_gets_constant_and_warmup_is_forwarded(caplog):
    info, _ = make_opt((1e-2,), "AdamWScheduleFree")
    with caplog.at_level(logging.WARNING):
        scheduler = build_scheduler("cosine", info, TOTAL, num_warmup_steps=0.1)
    assert "ignored" in caplog.text
    assert info.optimizer.param_groups[0]["warmup_steps"] == 10
    for _ in range(50):
        info.optimizer.step()
        scheduler.step()
    assert scheduler.get_last_lr() == [1e-2] and info.optimizer.param_groups[0]["lr"] == 1e-2


@pytest.mark.skipif(importlib.util.find_spec("dadaptation") is None,
                    reason="optional package 'dadaptation' is not installed (pip install dadaptation)")
def test_dadapt_sgd_with_warmup_is_refused():
    info, _ = make_opt((1.0,), "DAdaptSGD")
    with pytest.raises(SchedulerError, match="DAdaptSGD"):
        build_scheduler("linear", info, TOTAL, num_warmup_steps=10)


# --- resume ---------------------------------------------------------------------------------------

ROUND_TRIP = [
    ("constant", {}),
    ("constant_with_warmup", {"num_warmup_steps": 3}),
    ("linear", {"num_warmup_steps": 0.1}),
    ("cosine", {"num_warmup_steps": 3}),
    ("cosine_with_restarts", {"num_warmup_steps": 2, "num_cycles": 3}),
    ("polynomial", {"num_warmup_steps": 2, "power": 2.0}),
    ("inverse_sqrt", {"num_warmup_steps": 3}),
    ("cosine_with_min_lr", {"num_warmup_steps": 3, "min_lr_ratio": 0.1}),
    ("warmup_stable_decay", {"num_warmup_steps": 3, "num_decay_steps": 0.3}),
    ("piecewise_constant", {"scheduler_args": ["step_rules='1:5,0.5:12,0.1'"]}),
    ("torch.optim.lr_scheduler.CosineAnnealingLR", {"scheduler_args": ["T_max=20"]}),  # chainable: needs optimizer state
    ("torch.optim.lr_scheduler.ExponentialLR", {"scheduler_args": ["gamma=0.9"]}),
    ("adafactor", {}),
]


def _roundtrip(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def _setup(name, kwargs, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(8, 4)
    groups = [{"params": [model.weight], "lr": 1e-2}, {"params": [model.bias], "lr": 5e-3}]
    info = build_optimizer("Adafactor" if name == "adafactor" else "AdamW", groups, 1e-2)
    return model, info, build_scheduler(name, info, 30, **kwargs)


def _run(model, info, scheduler, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    lrs = []
    for _ in range(steps):
        info.optimizer.zero_grad()
        model(torch.randn(3, 8, generator=gen)).pow(2).mean().backward()
        info.optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr())
    return lrs


def test_round_trip_covers_every_name():
    assert {n for n, _ in ROUND_TRIP} >= set(SCHEDULER_NAMES)


@pytest.mark.parametrize("name, kwargs", ROUND_TRIP, ids=[n for n, _ in ROUND_TRIP])
def test_state_dict_round_trip_gives_identical_lrs(name, kwargs):
    model, info, scheduler = _setup(name, kwargs)
    _run(model, info, scheduler, 7, seed=1)
    saved = _roundtrip({"model": model.state_dict(), "optimizer": info.optimizer.state_dict(),
                        "scheduler": scheduler.state_dict()})
    expected = _run(model, info, scheduler, 15, seed=2)

    model2, info2, scheduler2 = _setup(name, kwargs, seed=99)
    model2.load_state_dict(saved["model"])
    info2.optimizer.load_state_dict(saved["optimizer"])
    scheduler2.load_state_dict(saved["scheduler"])
    assert scheduler2.get_last_lr() == saved["scheduler"]["_last_lr"]
    assert _run(model2, info2, scheduler2, 15, seed=2) == expected
    assert torch.equal(model.weight, model2.weight) and torch.equal(model.bias, model2.bias)


def test_scheduler_args_may_fill_an_unset_argument_but_not_replace_one_the_options_set():
    import torch

    from library.train.schedulers import SchedulerError, build_scheduler

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler("inverse_sqrt", opt, 100, num_warmup_steps=0, scheduler_args=["timescale=7"])
    opt.step()
    sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(1 / ((1 + 7) / 7) ** 0.5)  # the given timescale is used
    with pytest.raises(SchedulerError, match="num_training_steps=.*already set from the options"):
        build_scheduler("cosine", opt, 100, scheduler_args=["num_training_steps=5"])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_scheduler("cosine_with_min_lr", opt, 10, min_lr_ratio=0.5, scheduler_args=["min_lr_rate=0.2"])
    for _ in range(10):
        opt.step()
        sched.step()
    assert sched.get_last_lr()[0] == pytest.approx(0.2)  # the explicit rate, not the ratio option
