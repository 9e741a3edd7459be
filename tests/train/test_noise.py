"""Noise, timesteps, forward diffusion and the schedule (library/train/noise.py, docs/noise_and_loss.md).

"Replay" tests redraw from a generator with the same seed in the documented order, so they pin both
the formulas and the RNG contract the training loop's reproducibility and resume depend on.
"""

import math

import pytest
import torch
from diffusers import DDPMScheduler

from library.errors import UserError
from library.train.noise import (
    NoiseOptions,
    apply_zero_terminal_snr,
    noise_noisy_latents_and_timesteps,
    noisy_latents,
    prepare_scheduler_for_snr,
    sample_noise,
    sample_timesteps,
    snr_at,
)


def sd_scheduler(**kw):
    return DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                         num_train_timesteps=1000, clip_sample=False, **kw)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def latents(b=2, c=4, h=8, w=8, seed=123):
    return torch.randn(b, c, h, w, generator=gen(seed))


def neighbour_corr(x):
    """Correlation of horizontally adjacent values: ~0 for white noise, > 0 with low frequencies."""
    a, b = x[..., :, :-1].flatten(), x[..., :, 1:].flatten()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


# ---------------------------------------------------------------- plain noise and determinism


def test_plain_noise_is_standard_normal_from_the_generator():
    lat = latents()
    noise = sample_noise(lat, NoiseOptions(), gen(7))
    assert noise.shape == lat.shape and noise.dtype == lat.dtype
    assert torch.equal(noise, torch.randn(lat.shape, generator=gen(7)))


def test_same_seed_same_noise_other_seed_other_noise():
    lat = latents()
    opts = NoiseOptions(noise_offset=0.1, noise_offset_random_strength=True, adaptive_noise_scale=0.02,
                        multires_noise_iterations=4, ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True)
    sched = sd_scheduler()
    a = noise_noisy_latents_and_timesteps(sched, lat, opts, gen(1))
    b = noise_noisy_latents_and_timesteps(sched, lat, opts, gen(1))
    c = noise_noisy_latents_and_timesteps(sched, lat, opts, gen(2))
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0])


def test_no_generator_uses_the_global_torch_rng():
    lat = latents()
    opts = NoiseOptions(noise_offset=0.05, multires_noise_iterations=3)
    torch.manual_seed(5)
    a = sample_noise(lat, opts)
    torch.manual_seed(5)
    b = sample_noise(lat, opts)
    assert torch.equal(a, b)


def test_resume_from_saved_generator_state_continues_the_same_stream():
    lat, sched = latents(), sd_scheduler()
    opts = NoiseOptions(noise_offset=0.1, multires_noise_iterations=6, ip_noise_gamma=0.1)
    g = gen(3)
    noise_noisy_latents_and_timesteps(sched, lat, opts, g)  # step 1
    state = g.get_state()  # what a checkpoint stores
    step2 = noise_noisy_latents_and_timesteps(sched, lat, opts, g)
    resumed = torch.Generator()
    resumed.set_state(state)
    again = noise_noisy_latents_and_timesteps(sched, lat, opts, resumed)
    for x, y in zip(step2, again):
        assert torch.equal(x, y)


def test_noise_keeps_the_latents_dtype_and_does_not_depend_on_it():
    lat = latents()
    n32 = sample_noise(lat, NoiseOptions(noise_offset=0.1), gen(0))
    n16 = sample_noise(lat.to(torch.bfloat16), NoiseOptions(noise_offset=0.1), gen(0))
    assert n16.dtype == torch.bfloat16
    assert torch.equal(n16, n32.to(torch.bfloat16))


# ---------------------------------------------------------------- noise offset


def test_noise_offset_exact_values():
    lat = latents(b=3)
    noise = sample_noise(lat, NoiseOptions(noise_offset=0.1), gen(11))
    g = gen(11)
    base = torch.randn(lat.shape, generator=g)
    offset = torch.randn(3, 4, 1, 1, generator=g)
    assert torch.equal(noise, base + 0.1 * offset)


def test_noise_offset_random_strength_exact_values():
    lat = latents()
    noise = sample_noise(lat, NoiseOptions(noise_offset=0.1, noise_offset_random_strength=True), gen(12))
    g = gen(12)
    base = torch.randn(lat.shape, generator=g)
    strength = 0.1 * float(torch.rand(1, generator=g).item())
    offset = torch.randn(2, 4, 1, 1, generator=g)
    assert torch.equal(noise, base + strength * offset)
    assert 0.0 <= strength < 0.1


def test_noise_offset_shifts_each_channel_mean_by_offset_times_normal():
    b, c, h, w = 512, 4, 32, 32
    lat = torch.zeros(b, c, h, w)
    plain = sample_noise(lat, NoiseOptions(), gen(0))
    shifted = sample_noise(lat, NoiseOptions(noise_offset=0.1), gen(0))
    channel_means = (shifted - plain).mean(dim=(2, 3))
    # a constant per (sample, channel): the difference has no spatial variation at all
    torch.testing.assert_close((shifted - plain).amax(dim=(2, 3)), channel_means)
    assert abs(channel_means.std().item() - 0.1) < 0.01  # 2048 draws of 0.1 * N(0, 1)
    expected_std = math.sqrt(1 / (h * w) + 0.1**2)  # per-channel mean of the whole noise
    assert abs(shifted.mean(dim=(2, 3)).std().item() - expected_std) < 0.01


def test_adaptive_noise_scale_adds_abs_channel_mean_to_the_offset():
    lat = torch.randn(2, 4, 8, 8, generator=gen(0)) + torch.tensor([1.0, -2.0, 0.5, 0.0]).view(1, 4, 1, 1)
    opts = NoiseOptions(noise_offset=0.1, adaptive_noise_scale=0.05)
    noise = sample_noise(lat, opts, gen(4))
    g = gen(4)
    base = torch.randn(lat.shape, generator=g)
    offset = torch.randn(2, 4, 1, 1, generator=g)
    strength = 0.1 + 0.05 * lat.mean(dim=(2, 3), keepdim=True).abs()
    torch.testing.assert_close(noise, base + strength * offset)


def test_negative_adaptive_scale_clamps_the_offset_at_zero():
    lat = torch.full((2, 4, 8, 8), 10.0)
    noise = sample_noise(lat, NoiseOptions(noise_offset=0.1, adaptive_noise_scale=-1.0), gen(4))
    assert torch.equal(noise, torch.randn(lat.shape, generator=gen(4)))


def test_zero_noise_offset_is_off():
    lat = latents()
    assert torch.equal(sample_noise(lat, NoiseOptions(noise_offset=0.0), gen(1)),
                       sample_noise(lat, NoiseOptions(), gen(1)))


# ---------------------------------------------------------------- pyramid / multires noise


def test_pyramid_one_iteration_exact_values():
    # i = 0: r is drawn but r**0 = 1, so a second full-resolution noise is added, then unit std.
    lat = latents()
    noise = sample_noise(lat, NoiseOptions(multires_noise_iterations=1), gen(9))
    g = gen(9)
    base = torch.randn(lat.shape, generator=g)
    torch.rand(1, generator=g)
    extra = torch.randn(lat.shape, generator=g)
    expected = (base + extra) / (base + extra).std()
    torch.testing.assert_close(noise, expected)


def test_pyramid_noise_is_unit_std_and_low_frequency():
    lat = torch.zeros(16, 4, 64, 64)
    plain = sample_noise(lat, NoiseOptions(), gen(0))
    pyr = sample_noise(lat, NoiseOptions(multires_noise_iterations=6), gen(0))
    strong = sample_noise(lat, NoiseOptions(multires_noise_iterations=6, multires_noise_discount=0.8), gen(0))
    assert pyr.shape == lat.shape
    assert abs(pyr.std().item() - 1.0) < 1e-5
    assert abs(neighbour_corr(plain)) < 0.008  # 258k pairs: white noise gives |corr| ~ 0.002
    c_pyr, c_strong = neighbour_corr(pyr), neighbour_corr(strong)
    # the low resolutions add spatial correlation; the larger the discount, the more (≈0.02 vs ≈0.27)
    assert 0.012 < c_pyr < 0.03 and c_strong > 0.2
    assert not torch.equal(pyr, plain)


def test_pyramid_stops_at_one_pixel():
    # 8x8 with r >= 2: 8 -> <=4 -> <=2 -> 1; more iterations than that change nothing
    lat = latents(h=8, w=8)
    a = sample_noise(lat, NoiseOptions(multires_noise_iterations=5), gen(2))
    b = sample_noise(lat, NoiseOptions(multires_noise_iterations=50), gen(2))
    assert torch.equal(a, b)


def test_offset_then_pyramid():
    lat = latents()
    both = sample_noise(lat, NoiseOptions(noise_offset=0.1, multires_noise_iterations=1), gen(5))
    g = gen(5)
    base = torch.randn(lat.shape, generator=g)
    offset = torch.randn(2, 4, 1, 1, generator=g)
    torch.rand(1, generator=g)
    extra = torch.randn(lat.shape, generator=g)
    pre = base + 0.1 * offset + extra
    torch.testing.assert_close(both, pre / pre.std())


# ---------------------------------------------------------------- timesteps


def test_timesteps_uniform_within_range():
    t = sample_timesteps(20000, NoiseOptions(min_timestep=200, max_timestep=300), "cpu", gen(0))
    assert t.dtype == torch.long and t.shape == (20000,)
    assert t.min().item() == 200 and t.max().item() == 299  # max is exclusive
    counts = torch.bincount(t - 200, minlength=100).float()
    assert counts.min() > 120 and counts.max() < 290  # ~200 each


def test_default_timesteps_cover_the_whole_schedule():
    t = sample_timesteps(50000, NoiseOptions(), "cpu", gen(1))
    assert t.min().item() == 0 and t.max().item() == 999


def test_timesteps_exact_draw():
    t = sample_timesteps(8, NoiseOptions(min_timestep=10, max_timestep=20), "cpu", gen(6))
    assert torch.equal(t, torch.randint(10, 20, (8,), generator=gen(6)))


# ---------------------------------------------------------------- forward diffusion and ip noise


def test_noisy_latents_is_add_noise():
    sched, lat = sd_scheduler(), latents()
    noise, t = torch.randn(lat.shape, generator=gen(1)), torch.tensor([10, 900])
    out = noisy_latents(sched, lat, noise, t, NoiseOptions(), gen(2))
    assert torch.equal(out, sched.add_noise(lat, noise, t))


def test_ip_noise_gamma_perturbs_the_input_noise_only():
    sched, lat = sd_scheduler(), latents()
    noise, t = torch.randn(lat.shape, generator=gen(1)), torch.tensor([10, 900])
    out = noisy_latents(sched, lat, noise, t, NoiseOptions(ip_noise_gamma=0.1), gen(2))
    extra = torch.randn(lat.shape, generator=gen(2))
    torch.testing.assert_close(out, sched.add_noise(lat, noise + 0.1 * extra, t))


def test_ip_noise_gamma_random_strength():
    sched, lat = sd_scheduler(), latents()
    noise, t = torch.randn(lat.shape, generator=gen(1)), torch.tensor([10, 900])
    opts = NoiseOptions(ip_noise_gamma=0.1, ip_noise_gamma_random_strength=True)
    out = noisy_latents(sched, lat, noise, t, opts, gen(2))
    g = gen(2)
    gamma = 0.1 * float(torch.rand(1, generator=g).item())
    extra = torch.randn(lat.shape, generator=g)
    torch.testing.assert_close(out, sched.add_noise(lat, noise + gamma * extra, t))


def test_noisy_latents_computes_in_float32_for_half_latents():
    sched, lat = sd_scheduler(), latents()
    noise, t = torch.randn(lat.shape, generator=gen(1)), torch.tensor([0, 1])
    out = noisy_latents(sched, lat.half(), noise.half(), t, NoiseOptions())
    assert out.dtype == torch.float16
    ref = sched.add_noise(lat.half().float(), noise.half().float(), t).half()
    assert torch.equal(out, ref)


# ---------------------------------------------------------------- schedule: zero terminal SNR and SNR


def test_zero_terminal_snr_last_alpha_cumprod_is_zero_first_kept():
    orig, sched = sd_scheduler(), sd_scheduler()
    apply_zero_terminal_snr(sched)
    assert sched.alphas_cumprod[-1].item() == 0.0
    assert sched.betas[-1].item() == pytest.approx(1.0)
    torch.testing.assert_close(sched.alphas_cumprod[0], orig.alphas_cumprod[0], rtol=1e-6, atol=0)
    assert torch.all(sched.alphas_cumprod[1:] < sched.alphas_cumprod[:-1])  # still strictly decreasing
    torch.testing.assert_close(sched.alphas, 1 - sched.betas)
    # same schedule as diffusers builds natively, and recorded in the config
    torch.testing.assert_close(sched.alphas_cumprod, sd_scheduler(rescale_betas_zero_snr=True).alphas_cumprod)
    assert sched.config.rescale_betas_zero_snr is True


def test_zero_terminal_snr_is_idempotent_and_changes_training_noise():
    sched = sd_scheduler()
    apply_zero_terminal_snr(sched)
    once = sched.alphas_cumprod.clone()
    apply_zero_terminal_snr(sched)
    torch.testing.assert_close(sched.alphas_cumprod, once)
    lat, noise = latents(), torch.randn(2, 4, 8, 8, generator=gen(1))
    t = torch.tensor([999, 999])
    assert torch.equal(noisy_latents(sched, lat, noise, t, NoiseOptions()), noise)  # pure noise at T


def test_snr_table_and_lookup():
    sched = sd_scheduler()
    table = prepare_scheduler_for_snr(sched)
    ac = sched.alphas_cumprod
    assert table.shape == (1000,)
    torch.testing.assert_close(table, ac / (1 - ac))
    t = torch.tensor([0, 500, 999])
    torch.testing.assert_close(snr_at(sched, t), table[t])
    assert table[0].item() == pytest.approx(0.99915 / 0.00085, rel=1e-4)  # beta_0 = beta_start
    assert not hasattr(sched, "all_snr")  # nothing cached that could go stale


def test_snr_follows_zero_terminal_snr_whenever_it_is_applied():
    sched = sd_scheduler()
    prepare_scheduler_for_snr(sched)
    apply_zero_terminal_snr(sched)
    assert snr_at(sched, torch.tensor([999])).item() == 0.0
    assert prepare_scheduler_for_snr(sched)[-1].item() == 0.0


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize("kw, option", [
    (dict(adaptive_noise_scale=0.1), "adaptive_noise_scale"),
    (dict(noise_offset=0.0, adaptive_noise_scale=0.1), "adaptive_noise_scale"),
    (dict(noise_offset=-0.1), "noise_offset"),
    (dict(multires_noise_iterations=-1), "multires_noise_iterations"),
    (dict(multires_noise_iterations=6, multires_noise_discount=1.5), "multires_noise_discount"),
    (dict(ip_noise_gamma=-0.1), "ip_noise_gamma"),
    (dict(min_timestep=500, max_timestep=500), "min_timestep"),
    (dict(min_timestep=600, max_timestep=500), "min_timestep"),
    (dict(min_timestep=-1), "min_timestep"),
    (dict(max_timestep=1001), "max_timestep"),
    (dict(max_timestep=0), "max_timestep"),
])
def test_validation_errors_name_the_option(kw, option):
    with pytest.raises(UserError, match=option) as err:
        NoiseOptions(**kw).validate()
    assert "\n" not in str(err.value)


def test_valid_options_pass():
    NoiseOptions(noise_offset=0.1, adaptive_noise_scale=-0.5, multires_noise_iterations=6,
                 ip_noise_gamma=0.1, min_timestep=0, max_timestep=1000).validate()
    NoiseOptions(max_timestep=500).validate(num_train_timesteps=500)
    with pytest.raises(UserError, match="max_timestep"):
        NoiseOptions().validate(num_train_timesteps=500)
    # options without effect are noticed by the options layer: tests/options/test_values.py
