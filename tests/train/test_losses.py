"""Targets, loss types, Huber schedules and SNR weights (library/train/losses.py, docs/noise_and_loss.md).

Expected values are computed here in plain Python doubles from the SD schedule's definition
(scaled_linear betas, 0.00085..0.012, 1000 steps), not from the scheduler under test.
"""

import math

import pytest
import torch

from library.errors import UserError
from library.train.losses import (
    LossOptions,
    check_options,
    elementwise_loss,
    huber_c_for,
    loss_weight_for,
    per_sample_loss,
    target_for,
    total_loss,
)
from library.train.noise import NoiseOptions, apply_zero_terminal_snr
from tests.train.test_noise import sd_scheduler


def _alphas_cumprod_by_hand():
    lo, hi = math.sqrt(0.00085), math.sqrt(0.012)
    out, prod = [], 1.0
    for i in range(1000):
        beta = (lo + i * (hi - lo) / 999) ** 2
        prod *= 1.0 - beta
        out.append(prod)
    return out


AC = _alphas_cumprod_by_hand()
TS = [0, 250, 500, 999]


def snr(t):
    return AC[t] / (1.0 - AC[t])


def unit_loss_inputs(timesteps):
    """pred - target == 1 everywhere: the l2 per-sample loss is exactly 1 before weighting."""
    b = len(timesteps)
    target = torch.randn(b, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    return target + 1.0, target, torch.tensor(timesteps)


def weights(opts, timesteps=TS, sched=None):
    pred, target, t = unit_loss_inputs(timesteps)
    return per_sample_loss(pred, target, t, sched or sd_scheduler(), opts).tolist()


def close(actual, expected, rel=2e-4):
    assert actual == pytest.approx(expected, rel=rel), (actual, expected)


def test_hand_computed_schedule_matches_diffusers():
    close(sd_scheduler().alphas_cumprod[[0, 500, 999]].tolist(), [AC[0], AC[500], AC[999]], rel=1e-4)


# ---------------------------------------------------------------- targets


def test_epsilon_target_is_the_noise():
    lat, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    assert target_for(sd_scheduler(), lat, noise, torch.tensor([1, 2]), "epsilon") is noise


def test_v_target_equals_diffusers_get_velocity():
    sched = sd_scheduler()
    lat, noise, t = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8), torch.tensor([0, 500, 999])
    v = target_for(sched, lat, noise, t, "v_prediction")
    assert torch.equal(v, sched.get_velocity(lat, noise, t))
    a, s = math.sqrt(AC[500]), math.sqrt(1 - AC[500])
    torch.testing.assert_close(v[1], a * noise[1] - s * lat[1], rtol=1e-4, atol=1e-5)
    half = target_for(sched, lat.half(), noise.half(), t, "v_prediction")
    assert half.dtype == torch.float32  # computed in float32, not fp16
    assert LossOptions(v_parameterization=True).prediction_type == "v_prediction"
    assert LossOptions().prediction_type == "epsilon"


def test_v_target_at_zero_terminal_snr_is_minus_latents():
    sched = sd_scheduler()
    apply_zero_terminal_snr(sched)
    lat, noise = torch.randn(1, 4, 8, 8), torch.randn(1, 4, 8, 8)
    assert torch.equal(target_for(sched, lat, noise, torch.tensor([999]), "v_prediction"), -lat)


def test_unsupported_prediction_type():
    with pytest.raises(UserError, match="v_parameterization"):
        target_for(sd_scheduler(), torch.zeros(1), torch.zeros(1), torch.tensor([0]), "sample")


# ---------------------------------------------------------------- loss types


D = [0.0, 0.05, -0.3, 2.0]  # pred - target


def _elementwise(loss_type, c=0.1):
    pred = torch.tensor([D])
    return elementwise_loss(pred, torch.zeros_like(pred), loss_type, torch.tensor([c]))[0].tolist()


def test_l2_and_l1_by_hand():
    close(_elementwise("l2"), [d * d for d in D])
    close(_elementwise("l1"), [abs(d) for d in D])


def test_huber_by_hand():
    c = 0.1
    close(_elementwise("huber", c), [2 * c * (math.sqrt(d * d + c * c) - c) for d in D])
    # for values: 0, 0.05 -> 0.0023607, -0.3 -> 0.0432456, 2.0 -> 0.380500
    close(_elementwise("huber", c)[1:], [0.00236068, 0.04324555, 0.38049969], rel=1e-5)


def test_smooth_l1_by_hand():
    c = 0.1
    close(_elementwise("smooth_l1", c), [2 * (math.sqrt(d * d + c * c) - c) for d in D])
    close(_elementwise("smooth_l1", c)[1:], [0.0236068, 0.4324555, 3.8049969], rel=1e-5)


def test_huber_limits():
    c, small, big = 0.1, 1e-3, 1e3
    assert _elementwise("huber", c)[0] == 0.0
    pred = torch.tensor([[small, big]])
    huber = elementwise_loss(pred, torch.zeros_like(pred), "huber", torch.tensor([c]))[0].tolist()
    close(huber, [small * small, 2 * c * big], rel=1e-3)  # quadratic near 0, linear far away


def test_per_sample_loss_l2_is_mse_per_sample():
    pred, target = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    out = per_sample_loss(pred, target, torch.tensor([1, 2, 3]), sd_scheduler(), LossOptions())
    ref = torch.stack([torch.nn.functional.mse_loss(p, q) for p, q in zip(pred, target)])
    torch.testing.assert_close(out, ref)


def test_huber_per_sample_uses_each_samples_threshold():
    sched, opts = sd_scheduler(), LossOptions(loss_type="huber", huber_schedule="exponential")
    pred, target, t = unit_loss_inputs([0, 999])
    c0, c999 = 1.0, 0.1 ** 0.999
    close(per_sample_loss(pred, target, t, sched, opts).tolist(),
          [2 * c * (math.sqrt(1 + c * c) - c) for c in (c0, c999)], rel=1e-5)


# ---------------------------------------------------------------- huber schedules


def _huber_c(schedule, t, c=0.1, scale=1.0, sched=None):
    opts = LossOptions(loss_type="huber", huber_schedule=schedule, huber_c=c, huber_scale=scale)
    return huber_c_for(torch.tensor(t), sched or sd_scheduler(), opts).tolist()


def sigma(t):
    return math.sqrt((1 - AC[t]) / AC[t])


def test_huber_constant_schedule():
    close(_huber_c("constant", [0, 999]), [0.1, 0.1])
    close(_huber_c("constant", [0, 999], scale=2.0), [0.2, 0.2])


def test_huber_exponential_schedule():
    close(_huber_c("exponential", [0, 999]), [1.0, 0.1 ** (999 / 1000)])
    close(_huber_c("exponential", [0, 500, 999], c=0.2, scale=3.0),
          [3.0, 3.0 * 0.2 ** 0.5, 3.0 * 0.2 ** 0.999])


def test_huber_snr_schedule():
    expected = [(1 - 0.1) / (1 + sigma(t)) ** 2 + 0.1 for t in (0, 999)]
    close(_huber_c("snr", [0, 999]), expected)
    assert 0.94 < expected[0] < 0.95 and 0.10 < expected[1] < 0.11  # ~1 when clean, ~huber_c when noisy
    close(_huber_c("snr", [0, 999], scale=2.0), [2 * e for e in expected])


def test_huber_snr_schedule_at_zero_terminal_snr_is_huber_c():
    sched = sd_scheduler()
    apply_zero_terminal_snr(sched)
    close(_huber_c("snr", [999], sched=sched), [0.1])


# ---------------------------------------------------------------- SNR-based weights


def test_no_weighting_by_default():
    assert weights(LossOptions()) == [1.0] * len(TS)


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_epsilon(gamma):
    close(weights(LossOptions(min_snr_gamma=gamma)), [min(snr(t), gamma) / snr(t) for t in TS])


@pytest.mark.parametrize("gamma", [1.0, 5.0])
def test_min_snr_v_prediction(gamma):
    close(weights(LossOptions(min_snr_gamma=gamma, v_parameterization=True)),
          [min(snr(t), gamma) / (snr(t) + 1) for t in TS])


def test_scale_v_pred_loss_like_noise_pred_caps_snr_at_1000():
    capped = [min(snr(t), 1000.0) for t in TS]
    assert snr(0) > 1000  # the cap matters at t = 0
    close(weights(LossOptions(scale_v_pred_loss_like_noise_pred=True, v_parameterization=True)),
          [s / (s + 1) for s in capped])


def test_v_pred_like_loss():
    k = 0.5
    capped = [min(snr(t), 1000.0) for t in TS]
    close(weights(LossOptions(v_pred_like_loss=k)), [1 + k * (s + 1) / s for s in capped])


def test_debiased_estimation():
    capped = [min(snr(t), 1000.0) for t in TS]
    close(weights(LossOptions(debiased_estimation_loss=True)), [1 / math.sqrt(s) for s in capped])
    close(weights(LossOptions(debiased_estimation_loss=True, v_parameterization=True)), [1 / (s + 1) for s in capped])


def test_weights_combine_in_kohyas_order():
    gamma, k = 5.0, 0.3
    opts = LossOptions(min_snr_gamma=gamma, v_pred_like_loss=k, debiased_estimation_loss=True)
    expected = []
    for t in TS:
        s, sc = snr(t), min(snr(t), 1000.0)
        loss = 1.0 * min(s, gamma) / s  # min-SNR
        loss = loss + loss / (sc / (sc + 1)) * k  # v_pred_like_loss adds to the weighted loss
        loss = loss / math.sqrt(sc)  # debiased
        expected.append(loss)
    close(weights(opts), expected)
    v_opts = LossOptions(min_snr_gamma=gamma, scale_v_pred_loss_like_noise_pred=True, debiased_estimation_loss=True,
                         v_parameterization=True)
    close(weights(v_opts), [min(snr(t), gamma) / (snr(t) + 1) * (min(snr(t), 1000) / (min(snr(t), 1000) + 1))
                            / (min(snr(t), 1000) + 1) for t in TS])


def test_loss_weights_apply_per_sample_before_snr_weights():
    pred, target, t = unit_loss_inputs([500, 500])
    opts = LossOptions(min_snr_gamma=1.0)
    out = per_sample_loss(pred, target, t, sd_scheduler(), opts, loss_weights=torch.tensor([1.0, 0.25]))
    w = min(snr(500), 1.0) / snr(500)
    close(out.tolist(), [w, 0.25 * w])
    close([total_loss(pred, target, t, sd_scheduler(), opts, torch.tensor([1.0, 0.25])).item()], [0.625 * w])


def test_min_snr_epsilon_is_finite_at_zero_terminal_snr():
    sched = sd_scheduler()
    apply_zero_terminal_snr(sched)
    t = torch.tensor([998, 999])
    w = loss_weight_for(t, sched, LossOptions(min_snr_gamma=5.0))
    assert w.tolist() == [1.0, 1.0]  # min(s, γ)/s -> 1 as s -> 0 (kohya's formula would give 0/0 at s = 0)
    v = loss_weight_for(t, sched, LossOptions(min_snr_gamma=5.0, v_parameterization=True))
    assert v[1].item() == 0.0 and torch.isfinite(v).all()


# ---------------------------------------------------------------- masks, gradients


def test_mask_is_area_resized_and_multiplied_before_the_mean():
    pred, target, t = unit_loss_inputs([0, 0])
    mask = torch.zeros(2, 64, 64)  # image resolution: 8x the latent
    mask[0, :, :32] = 1.0  # left half
    mask[1] = 1.0
    out = per_sample_loss(pred, target, t, sd_scheduler(), LossOptions(), mask=mask)
    close(out.tolist(), [0.5, 1.0])
    soft = per_sample_loss(pred, target, t, sd_scheduler(), LossOptions(), mask=torch.full((2, 1, 64, 64), 0.3))
    close(soft.tolist(), [0.3, 0.3])


def test_total_loss_backpropagates():
    pred, target, t = unit_loss_inputs([10, 600])
    pred = pred.clone().requires_grad_(True)
    opts = LossOptions(loss_type="huber", min_snr_gamma=5.0)
    total_loss(pred.half(), target.half(), t, sd_scheduler(), opts).backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("kw, option", [
    (dict(loss_type="mse"), "loss_type"),
    (dict(huber_schedule="linear"), "huber_schedule"),
    (dict(huber_c=0.0, loss_type="huber"), "huber_c"),  # l2 does not read huber_c (kohya neither)
    (dict(huber_scale=-1.0), "huber_scale"),
    (dict(min_snr_gamma=-5.0), "min_snr_gamma"),
    (dict(v_pred_like_loss=-0.1), "v_pred_like_loss"),
    (dict(scale_v_pred_loss_like_noise_pred=True), "scale_v_pred_loss_like_noise_pred"),
    (dict(v_pred_like_loss=0.2, v_parameterization=True), "v_pred_like_loss"),
])
def test_loss_validation_errors_name_the_option(kw, option):
    with pytest.raises(UserError, match=option) as err:
        LossOptions(**kw).validate()
    assert "\n" not in str(err.value)


def test_valid_loss_options_pass():
    for kw in (dict(), dict(loss_type="smooth_l1", huber_schedule="exponential"),
               dict(min_snr_gamma=5.0, debiased_estimation_loss=True, scale_v_pred_loss_like_noise_pred=True,
                    v_parameterization=True),
               dict(v_pred_like_loss=0.2)):
        LossOptions(**kw).validate()


def test_check_options_zero_terminal_snr():
    zt = NoiseOptions(zero_terminal_snr=True)
    assert check_options(zt, LossOptions(v_parameterization=True, debiased_estimation_loss=True)) == []
    warnings = check_options(zt, LossOptions())
    assert len(warnings) == 1 and "--v_parameterization" in warnings[0]
    for loss, option in ((LossOptions(debiased_estimation_loss=True), "--debiased_estimation_loss"),
                         (LossOptions(v_pred_like_loss=0.1), "--v_pred_like_loss")):
        with pytest.raises(UserError, match=option):
            check_options(zt, loss)
        check_options(NoiseOptions(), loss)
    with pytest.raises(UserError, match="adaptive_noise_scale"):
        check_options(NoiseOptions(adaptive_noise_scale=0.1), LossOptions())
