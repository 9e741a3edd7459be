"""Build a small but *trained* SD1-layout base model of the shapes world, on CPU, from a seed.

Why: a LoRA trained on random weights proves only that the loss moves. A base that really
draws "a red circle, top left" lets a test ask the question users ask: does the LoRA make
the model draw the concept (see tests/quality/ and docs/quality.md).

The recipe, each part as cheap as the question allows:

* data: ``shapes_data.base_dataset`` (4 shapes x 4 colours x 5 positions, jittered), 64 px,
  40 % stars, mostly yellow or green (a class prior: "a star" has a colour to commit to); the VAE
  sees the same shapes in even colours plus ``shapes_data.vae_specs`` (any colour, white
  outlines), never captioned;
* VAE: the SD1 AutoencoderKL layout at tiny widths, trained as an autoencoder (MSE weighted on
  the shape, its edge and its chroma, + a small KL), then its latent channels normalised
  *inside the weights* (quant_conv / post_quant_conv) so the stock SD1 factor 0.18215 gives
  unit-variance latents, as in SD;
* text encoder: a small CLIP on the shipped BPE tokenizer, trained with the UNet at a low rate
  (frozen and random it gave the held-out "sks" the meaning "green", docs/quality.md round 3);
* UNet: the SD1 block layout at tiny widths, trained for epsilon (or v) prediction on
  SD1.5's DDPM schedule, captions sometimes shortened ("a star", "a red star"), dropped
  (classifier-free guidance needs the empty prompt) or given an unknown word in place of "a"
  (so a rare token means little, as in real SD); an EMA of its weights is what is saved.

Saved in fp16 (SAVE_DTYPE): that exact file is what the quality tests score, and what
``tools/make_shapes_model.py --ship`` keeps in the repository (models/shapes/).

The result is one original-layout ``.safetensors`` (library.models.save_base_model) that
train_network.py and library.inference load like any other checkpoint.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from library.eval import shapes_data
from library.models import assemble, build_models, save_base_model, tiny_configs
from library.models.configs import with_prediction_type
from library.inference.text_encoding import encode, tokenize


@dataclass(frozen=True)
class Budget:
    """How much training each part gets; the defaults build in about 25 minutes on one CPU thread."""

    # The UNet's world: 2000 images and 3600 steps draw every base caption right at guidance 3 (1000 and 1800 did not,
    # docs/quality.md, rounds 4 and 5).
    images: int = 2000
    # The VAE's images (even colours + any hue), None: as many as ``images``. A VAE trained 1200 steps on
    # 2000 + 2000 decoded the purple concept as blue circles (docs/quality.md, round 4).
    vae_images: int | None = 1000
    vae_any_images: int | None = None  # of them in any hue, saturation and outline (vae_specs); None: vae_images
    star_share: float | None = 0.4  # stars are the hardest shape and the concept test's class
    # The stars' colour prior, so the colourless class prompt "a star" has a mode to commit to. Yellow and green:
    # their mean is purple's complement, so guidance, which pushes the LoRA's concept away from the class images,
    # keeps its hue (all yellow slid it to blue, all green to magenta: docs/quality.md, round 3).
    star_colours: tuple | None = (("yellow", 0.45), ("green", 0.35), ("red", 0.1), ("blue", 0.1))
    other_colours: tuple | None = None  # circles, squares, triangles: (colour, weight) pairs, None = even
    vae_steps: int = 2400
    vae_batch: int = 8
    # The VAE's loss beyond pixel MSE (docs/quality.md, round 5): pixels within ``vae_edge`` px of the shape weigh
    # like the shape, so a star's notches count as much as its points (without it green stars decoded as circles),
    # and ``vae_chroma`` weighs the colour difference apart from brightness (without it purple decoded 30-110 deg off).
    vae_edge: int = 2
    vae_chroma: float = 2.0
    vae_lr: float = 3e-3
    unet_steps: int = 3600
    unet_batch: int = 32
    unet_lr: float = 2e-3
    drop_caption: float = 0.1  # empty prompt, for classifier-free guidance
    drop_colour: float = 0.35  # "a star" (the concept test's class prompt) is trained this often
    drop_position: float = 0.25
    # An unknown word in place of "a" ("zebra red star"): web captions teach real SD that a word it
    # cannot place means little, so a DreamBooth token like "sks" starts near the class, not as
    # whatever the random frozen text encoder happens to make of it (docs/quality.md, round 3).
    unknown_word: float = 0.3
    text_width: int = 64  # the small CLIP's hidden size
    # The small CLIP trains with the UNet at this rate (0: random and frozen). A frozen random encoder put the
    # held-out "sks" next to "green" (docs/quality.md, round 3); trained, the unknown words teach it that a word
    # it cannot place means little.
    text_lr: float = 5e-4
    ema_decay: float = 0.998  # the UNet saved is an EMA of its weights (0: the raw weights)


# A few steps of everything: for tests of the machinery (determinism, layout), not of quality.
SMOKE = Budget(images=16, vae_images=None, star_share=None, star_colours=None, vae_steps=2, vae_batch=4, unet_steps=2,
               unet_batch=4)
BUDGETS = {"default": Budget(), "smoke": SMOKE}
# Saved in fp16: half the size (the model ships in the repo under SHIPPED_DIR) and loaders upcast
# to fp32; the quality tests score exactly this rounded model, whether shipped or built.
SAVE_DTYPE = torch.float16
SHIPPED_DIR = Path(__file__).resolve().parents[2] / "models" / "shapes"


def shapes_configs(prediction_type: str = "epsilon", hidden: int = 64) -> dict:
    """SD1 layout (4 UNet levels, cross-attention in the first three; 4-level VAE, 8x downscale)."""
    cfg = copy.deepcopy(tiny_configs("sd1"))
    cfg["text_encoders"][0]["config"].update(
        hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2, num_attention_heads=4,
        projection_dim=hidden,
    )
    cfg["unet"].update(block_out_channels=[32, 48, 64, 64], attention_head_dim=2, cross_attention_dim=hidden)
    cfg["vae"].update(block_out_channels=[8, 16, 32, 32])
    return with_prediction_type(cfg, prediction_type)


def source_hash() -> str:
    """Hash of the code that decides the model: this module and the shapes world."""
    h = hashlib.sha256()
    for mod in (__file__, shapes_data.__file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()[:16]


def _pixels(specs) -> torch.Tensor:
    arr = np.stack([np.asarray(shapes_data.render(s), dtype=np.float32) for s in specs])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def train_vae(vae, pixels: torch.Tensor, budget: Budget, gen: torch.Generator, log) -> None:
    """Autoencoder training: MSE on pixels (sampled latents) + a small KL toward N(0, 1).

    The shape covers ~15 % of an image, so its pixels and the background within ``vae_edge`` px
    of it weigh 10x: otherwise the background dominates the loss and the decoder learns blurred
    blobs in washed-out colours, and a star's notches (background) count for nothing. The error's
    chroma (each channel less the pixel's mean error) weighs ``vae_chroma`` more, so a hue the
    world's palette lacks (the concept's purple) is not pulled toward the nearest palette colour."""
    bg = torch.tensor(shapes_data.BACKGROUND, dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1.0
    vae.train()
    opt = torch.optim.AdamW(vae.parameters(), lr=budget.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, budget.vae_lr, total_steps=budget.vae_steps, pct_start=0.1)
    for step in range(budget.vae_steps):
        idx = torch.randint(0, len(pixels), (budget.vae_batch,), generator=gen)
        x = pixels[idx]
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        near = ((x - bg).abs().amax(dim=1, keepdim=True) > 0.1).float()
        if budget.vae_edge:
            near = F.max_pool2d(near, 2 * budget.vae_edge + 1, stride=1, padding=budget.vae_edge)
        weight = 1.0 + 9.0 * near
        err = rec - x
        loss = (weight * err**2).mean() + 1e-6 * dist.kl().mean()
        if budget.vae_chroma:
            loss = loss + budget.vae_chroma * (weight * (err - err.mean(dim=1, keepdim=True)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 100 == 0 or step == budget.vae_steps - 1:
            log(f"vae step {step}: mse {F.mse_loss(rec, x).item():.4f}")
    vae.eval()


@torch.no_grad()
def normalise_latents(vae, pixels: torch.Tensor, scale: float) -> None:
    """Fold a per-channel affine map into quant_conv/post_quant_conv so ``mean * scale`` has
    zero mean and unit variance per channel; the decoded image is unchanged."""
    means = torch.cat([vae.encode(pixels[i : i + 256]).latent_dist.mean for i in range(0, len(pixels), 256)])
    m = means.mean(dim=(0, 2, 3))
    k = 1.0 / (means.std(dim=(0, 2, 3)) * scale)  # z' = k (z - m)
    c = len(m)
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] *= k.view(-1, 1, 1, 1)
    q.bias[:c] = (q.bias[:c] - m) * k
    q.bias[c:] += 2 * torch.log(k)  # logvar of k*z
    # post(z) = W z + b with z = z'/k + m  ->  (W/k) z' + (W m + b)
    p.bias += (p.weight[:, :, 0, 0] @ m)
    p.weight /= k.view(1, -1, 1, 1)


def caption_table(specs, budget: Budget):
    """All caption variants of each image: index lists into one table of unique strings."""
    table, variants = [""], []
    index = {"": 0}
    for s in specs:
        opts = []
        for col in (True, False):
            for pos in (True, False):
                text = s.caption(with_colour=col, with_position=pos)
                if text not in index:
                    index[text] = len(table)
                    table.append(text)
                opts.append(index[text])
        variants.append(opts)  # [full, no position, no colour, neither]
    return table, torch.tensor(variants)


def _pick_captions(variants: torch.Tensor, idx: torch.Tensor, budget: Budget, gen: torch.Generator) -> torch.Tensor:
    n = len(idx)
    no_col = (torch.rand(n, generator=gen) < budget.drop_colour).long()
    no_pos = (torch.rand(n, generator=gen) < budget.drop_position).long()
    chosen = variants[idx].gather(1, (no_col * 2 + no_pos).view(-1, 1)).squeeze(1)
    drop = torch.rand(n, generator=gen) < budget.drop_caption
    return torch.where(drop, torch.zeros_like(chosen), chosen)


def unknown_words(tokenizer) -> list[str]:
    """The pool of words the world never uses: the tokenizer's whole-word ASCII tokens of 3+ letters,
    minus the captions' own words and the concept tests' tokens (``shapes_data.HELD_OUT_WORDS``, which
    must stay unseen), in vocabulary order so a seed picks the same words everywhere."""
    world = set(" ".join(shapes_data.SHAPES + tuple(shapes_data.COLOURS) + tuple(shapes_data.POSITIONS)).split())
    skip = world | {"a"} | set(shapes_data.HELD_OUT_WORDS)
    words = []
    for token, i in tokenizer.get_vocab().items():
        word = token[:-4]
        if token.endswith("</w>") and len(word) >= 3 and word.isascii() and word.isalpha() and word not in skip:
            words.append((i, word))
    return [w for _, w in sorted(words)]


def with_unknown_words(texts: list[str], words: list[str], share: float, gen: torch.Generator) -> list[str]:
    """Each non-empty caption, with probability ``share``, gets a random word of ``words`` in place of
    its leading "a" (drawn from ``gen``: the same build gives the same captions)."""
    n = len(texts)
    swap = (torch.rand(n, generator=gen) < share).tolist()
    pick = torch.randint(0, len(words), (n,), generator=gen).tolist()
    return [words[k] + t[1:] if s and t.startswith("a ") else t for t, s, k in zip(texts, swap, pick)]


def train_diffusion(unet, latents, scheduler, budget, gen: torch.Generator, log, condition, label: str = "unet",
                    extra: tuple = ()) -> None:
    """Diffusion training on cached latents, min-SNR(5) weighted; SD1 and SDXL builders share it.

    ``condition(idx)`` gives the UNet's keyword inputs beyond the noisy latents and timesteps for the images
    ``idx`` (drawing its random caption choices from ``gen`` after the noise). With ``budget.ema_decay`` the
    weights left in ``unet`` are an exponential moving average of the trained ones (decay warmed up as
    (1 + step) / (10 + step)), the usual diffusion recipe: averaging smooths the last steps' noise, which a
    short run has most of."""
    unet.train()
    groups = [{"params": list(unet.parameters()), "lr": budget.unet_lr}]
    groups += [{"params": [p for p in module.parameters() if p.requires_grad], "lr": lr} for module, lr in extra]
    opt = torch.optim.AdamW(groups, lr=budget.unet_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, [g["lr"] for g in groups], total_steps=budget.unet_steps,
                                                pct_start=0.05)
    alphas = scheduler.alphas_cumprod
    snr = alphas / (1 - alphas)
    v_pred = scheduler.config.prediction_type == "v_prediction"
    weight = torch.clamp(snr, max=5.0) / (snr + 1 if v_pred else snr)
    avg = None
    params = [p for g in groups for p in g["params"] if p.requires_grad]
    ema_decay = getattr(budget, "ema_decay", 0.0)
    ema = [p.detach().clone() for p in params] if ema_decay else None
    for step in range(budget.unet_steps):
        idx = torch.randint(0, len(latents), (budget.unet_batch,), generator=gen)
        x0 = latents[idx]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        xt = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t) if v_pred else noise
        pred = unet(xt, t, **condition(idx)).sample
        loss = (((pred - target) ** 2).mean(dim=(1, 2, 3)) * weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if ema is not None:
            decay = min(ema_decay, (1 + step) / (10 + step))
            with torch.no_grad():
                torch._foreach_mul_(ema, decay)
                torch._foreach_add_(ema, [p.detach() for p in params], alpha=1 - decay)
        avg = loss.item() if avg is None else 0.98 * avg + 0.02 * loss.item()
        if step % 100 == 0 or step == budget.unet_steps - 1:
            log(f"{label} step {step}: loss {avg:.4f}")
    if ema is not None:
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    unet.eval()


def train_unet(unet, latents, table, variants, text_model, scheduler, budget: Budget, gen: torch.Generator,
               log) -> None:
    """The SD1 UNet: text contexts of the captions picked per image (some shortened or dropped, some with an
    unknown word). ``text_model`` (the tokenizer and text encoders) encodes them batch by batch; with
    ``budget.text_lr`` the encoders train with the UNet, else they stay frozen."""
    tokenizer, encoders = text_model
    words = unknown_words(tokenizer) if budget.unknown_word else []

    trained = bool(budget.text_lr)
    for te in encoders:
        te.requires_grad_(trained).train(trained)

    def condition(idx):
        texts = [table[i] for i in _pick_captions(variants, idx, budget, gen).tolist()]
        if words:
            texts = with_unknown_words(texts, words, budget.unknown_word, gen)
        with torch.set_grad_enabled(trained):
            return {"encoder_hidden_states": encode(encoders, [tokenize(tokenizer, texts)], "sd1").context}

    extra = tuple((te, budget.text_lr) for te in encoders) if trained else ()
    train_diffusion(unet, latents, scheduler, budget, gen, log, condition, extra=extra)
    for te in encoders:
        te.requires_grad_(False).eval()


def build_shapes_model(out: str | os.PathLike, seed: int = 0, budget: Budget = Budget(),
                       prediction_type: str = "epsilon", log=print) -> Path:
    """Train the shapes base model from ``seed`` and save it to ``out``; returns the path."""
    t0 = time.time()
    configs = shapes_configs(prediction_type, budget.text_width)
    threads = torch.get_num_threads()
    # One thread: these small kernels gain little from two, and on a shared machine two
    # threads spin against other jobs (measured 0.12 s vs > 10 s per VAE step under load).
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = assemble(configs, build_models(configs, device="cpu", seed=seed))
            specs = shapes_data.base_dataset(budget.images, seed=seed, star_share=budget.star_share,
                                             star_colours=dict(budget.star_colours or ()),
                                             other_colours=dict(budget.other_colours or ()))
            pixels = _pixels(specs)
            # The colour priors are the UNet's world; the VAE sees every colour evenly (a VAE trained mostly on
            # blue shapes decoded purple as blue), plus any hue at all (vae_specs).
            n_vae = budget.vae_images or budget.images
            even = shapes_data.base_dataset(n_vae, seed=seed, star_share=budget.star_share)
            anyhue = shapes_data.vae_specs(budget.vae_any_images or n_vae, seed=seed + 1)
            vae_pixels = torch.cat([_pixels(even), _pixels(anyhue)])
            log(f"rendered {len(specs)} UNet + {len(vae_pixels)} VAE images ({time.time() - t0:.0f}s)")

            train_vae(model.vae, vae_pixels, budget, gen, log)
            normalise_latents(model.vae, pixels, model.vae_scale_factor)
            with torch.no_grad():
                latents = torch.cat([model.vae.encode(pixels[i : i + 256]).latent_dist.mean
                                     for i in range(0, len(pixels), 256)]) * model.vae_scale_factor
            log(f"vae done, latent std {latents.std():.3f} ({time.time() - t0:.0f}s)")

            table, variants = caption_table(specs, budget)
            train_unet(model.unet, latents, table, variants, (model.tokenizers[0], model.text_encoders),
                       model.noise_scheduler, budget, gen, log)
            log(f"unet done ({time.time() - t0:.0f}s)")
    finally:
        torch.set_num_threads(threads)
    meta = {"lorasmith.shapes": f"seed={seed} source={source_hash()} budget={asdict(budget)}"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_base_model(model, out, dtype=SAVE_DTYPE, metadata=meta)
    return out


def default_cache_dir() -> Path:
    """The one lorasmith cache folder (library.cache_dir: ``$LORASMITH_CACHE_DIR`` or ``~/.cache/lorasmith``)."""
    from library.cache_dir import cache_dir

    return cache_dir()


def shipped_path(seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Where ``tools/make_shapes_model.py --ship`` writes the model kept in the repository."""
    return SHIPPED_DIR / f"shapes_{prediction_type}_seed{seed}.safetensors"


def built_from(path: str | os.PathLike) -> str | None:
    """The builder's source hash recorded in a shapes model's metadata (None if it has none)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        text = (f.metadata() or {}).get("lorasmith.shapes", "")
    found = re.search(r"\bsource=([0-9a-f]+)", text)
    return found.group(1) if found else None


def cached_shapes_model(seed: int = 0, prediction_type: str = "epsilon", cache_dir=None, log=print) -> Path:
    """The shapes model for ``seed``: the one shipped in the repository while it was built by this
    very builder (same source hash), else built once per source hash into the cache (atomic save)."""
    shipped = shipped_path(seed, prediction_type)
    if shipped.is_file() and built_from(shipped) == source_hash():
        return shipped
    folder = Path(cache_dir or default_cache_dir()) / f"shapes-{source_hash()}"
    path = folder / f"shapes_{prediction_type}_seed{seed}.safetensors"
    if not path.exists():
        build_shapes_model(path, seed=seed, prediction_type=prediction_type, log=log)
    return path
