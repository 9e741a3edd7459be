"""Build a small *trained* SDXL-layout base model of the shapes world, on CPU, from a seed.

Why a second build: SDXL's maths differs from SD1's in exactly the places a trainer can get
wrong and still "train": two text encoders (CLIP-L and bigG penultimate layers concatenated as
the context), bigG's *projected pooled* output as an extra vector, and the size/crop
micro-conditioning (``add_time_ids`` = original (h, w), crop (top, left), target (h, w)). A
base that has learnt all three lets a LoRA case catch a swapped order, a wrong pooled output
or a wrong layer (tests/quality/test_concept_cases.py).

Recipe, as library/eval/shapes_model.py's SD1 one (its VAE training, latent normalisation,
diffusion loop and caption helpers are called, not copied), with the same budget:

* VAE: the SD1 shapes model's (same AutoencoderKL layout; built or taken from the cache), its
  latents re-normalised for SDXL's factor 0.13025 — measured: a VAE trained at the SDXL build's
  own smaller budget (900 steps) turned red and yellow orange and stars into blobs on the way
  back (6/16 round trips right vs 16/16), and a UNet cannot draw what its VAE cannot decode;
* text encoders: the project's tiny SDXL pair (CLIP-L-like, bigG-like with projection), trained
  with the UNet as the SD1 build's CLIP is (some captions with an unknown word in place of "a"):
  frozen random encoders left the held-out "sks" wherever they happened to put it;
* UNet: the SDXL block layout (3 levels, cross-attention in the last two, varying transformer
  depth, ``text_time`` additional embedding) at tiny widths, trained on SDXL's DDPM schedule;
* size/crop conditioning as SDXL trains it: most images are native 64 px (``64, 64, 0, 0, 64, 64``),
  a share are *crops* of an upscaled render (original size 80 or 96, a random crop offset), so the
  model learns that crop (0, 0) means "the whole picture" — which is what inference asks for;
* classifier-free guidance as SDXL does it: a dropped caption is *zeros* for the context and the
  pooled vector (diffusers' SDXL pipeline sets ``force_zeros_for_empty_prompt``).

Saved as one original-layout SDXL ``.safetensors`` (``conditioner.embedders.*``) that
``sdxl_train_network.py`` and library.inference load like any SDXL checkpoint; in fp16 as the SD1
one (14 MB instead of 28), so that it ships in the repository beside it (``--sdxl --ship``).
"""

from __future__ import annotations

import copy
import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from library.eval import shapes_data, shapes_model
from library.inference.text_encoding import encode, tokenize
from library.models import assemble, build_models, save_base_model, tiny_configs
from library.models.configs import with_prediction_type

SIZE = shapes_data.SIZE
NATIVE_TIME_IDS = (SIZE, SIZE, 0, 0, SIZE, SIZE)  # what inference and a 64 px LoRA dataset give


@dataclass(frozen=True)
class SdxlBudget:
    """How much training each part gets: the SD1 build's world and recipe (round 5, docs/quality.md), with
    SDXL's crops and two text encoders."""

    images: int = 2000
    star_share: float | None = 0.4
    # The stars' colour prior (shapes_model.Budget.star_colours): the class prompt "a star" needs a mode.
    star_colours: tuple | None = shapes_model.Budget.star_colours
    crop_share: float = 0.2  # images that are crops of an upscaled render, with their size/crop ids
    vae_from_sd1: bool = True  # take the SD1 shapes model's VAE; False: train one here (vae_* below)
    vae_steps: int = 900
    vae_batch: int = 8
    vae_lr: float = 3e-3
    unet_steps: int = 3600
    unet_batch: int = 32
    unet_lr: float = 2e-3
    drop_caption: float = 0.1
    drop_colour: float = 0.35
    drop_position: float = 0.25
    unknown_word: float = 0.3  # as shapes_model.Budget: an unknown word in place of "a"
    text_lr: float = 5e-4  # both text encoders train with the UNet (0: random and frozen)
    ema_decay: float = 0.998


SMOKE = SdxlBudget(images=16, star_share=None, star_colours=None, vae_from_sd1=False, vae_steps=2, vae_batch=4,
                   unet_steps=2, unet_batch=4)
BUDGETS = {"default": SdxlBudget(), "smoke": SMOKE}


def sdxl_shapes_configs(prediction_type: str = "epsilon") -> dict:
    """The project's tiny SDXL layout (two text encoders, text_time embedding) at the SD1 shapes widths."""
    cfg = copy.deepcopy(tiny_configs("sdxl"))
    cfg["unet"].update(block_out_channels=[32, 48, 64], attention_head_dim=[2, 2, 4],
                       transformer_layers_per_block=[1, 1, 2])
    return with_prediction_type(cfg, prediction_type)


def source_hash() -> str:
    """Hash of the code that decides the model: this module, the SD1 builder it calls, the shapes world."""
    h = hashlib.sha256()
    for mod in (__file__, shapes_model.__file__, shapes_data.__file__):
        h.update(Path(mod).read_bytes())
    return h.hexdigest()[:16]


def _to_tensor(images: list[Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def cropped_render(spec, rng: random.Random) -> tuple[Image.Image, tuple[int, ...]]:
    """``spec`` rendered, upscaled to an "original" 80 or 96 px and cropped back to 64 px at a random
    offset: the picture SDXL's crop conditioning describes, with its time ids (orig h, w, top, left, 64, 64)."""
    original = rng.choice((80, 96))
    top, left = rng.randint(0, original - SIZE), rng.randint(0, original - SIZE)
    big = shapes_data.render(spec).resize((original, original), Image.Resampling.BICUBIC)
    return big.crop((left, top, left + SIZE, top + SIZE)), (original, original, top, left, SIZE, SIZE)


def training_images(budget: SdxlBudget, seed: int):
    """(specs, pixels [N,3,64,64], time ids [N,6], cropped [N] bool), deterministic from ``seed``."""
    specs = shapes_data.base_dataset(budget.images, seed=seed, star_share=budget.star_share,
                                     star_colours=dict(budget.star_colours or ()))
    rng = random.Random(seed + 7)
    images, ids, cropped = [], [], []
    for spec in specs:
        if rng.random() < budget.crop_share:
            img, tid = cropped_render(spec, rng)
        else:
            img, tid = shapes_data.render(spec), NATIVE_TIME_IDS
        images.append(img)
        ids.append(tid)
        cropped.append(tid != NATIVE_TIME_IDS)
    return specs, _to_tensor(images), torch.tensor(ids, dtype=torch.float32), torch.tensor(cropped)


def choose_captions(variants: torch.Tensor, idx: torch.Tensor, cropped: torch.Tensor, budget: SdxlBudget,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(caption-table index per image, dropped mask). Variants are [full, no position, no colour, neither]
    (shapes_model.caption_table); a crop's caption never names a position (the crop moved the shape)."""
    n = len(idx)
    no_col = (torch.rand(n, generator=gen) < budget.drop_colour).long()
    no_pos = ((torch.rand(n, generator=gen) < budget.drop_position) | cropped[idx]).long()
    chosen = variants[idx].gather(1, (no_col * 2 + no_pos).view(-1, 1)).squeeze(1)
    dropped = torch.rand(n, generator=gen) < budget.drop_caption
    return chosen, dropped


def train_sdxl_unet(unet, latents, table, variants, time_ids, cropped, text_model, scheduler, budget: SdxlBudget,
                    gen: torch.Generator, log) -> None:
    """Diffusion training with SDXL's added conditioning (pooled text + time ids); a dropped caption is zeros
    for context and pooled (SDXL's unconditional). As the SD1 builder (shapes_model.train_unet), some captions
    get an unknown word, and with ``budget.text_lr`` both text encoders train with the UNet."""
    tokenizers, encoders = text_model
    words = shapes_model.unknown_words(tokenizers[0]) if budget.unknown_word else []
    trained = bool(budget.text_lr)
    for te in encoders:
        te.requires_grad_(trained).train(trained)

    def condition(idx):
        chosen, dropped = choose_captions(variants, idx, cropped, budget, gen)
        texts = [table[i] for i in chosen.tolist()]
        if words:
            texts = shapes_model.with_unknown_words(texts, words, budget.unknown_word, gen)
        keep = (~dropped).float()
        with torch.set_grad_enabled(trained):
            cond = encode(encoders, [tokenize(tok, texts) for tok in tokenizers], "sdxl")
        return {"encoder_hidden_states": cond.context * keep.view(-1, 1, 1),
                "added_cond_kwargs": {"text_embeds": cond.pooled * keep.view(-1, 1), "time_ids": time_ids[idx]}}

    extra = tuple((te, budget.text_lr) for te in encoders) if trained else ()
    shapes_model.train_diffusion(unet, latents, scheduler, budget, gen, log, condition, label="sdxl unet",
                                 extra=extra)
    for te in encoders:
        te.requires_grad_(False).eval()


def _vae_budget(budget: SdxlBudget) -> shapes_model.Budget:
    """The SD1 builder's VAE trainer reads its step count, batch and lr from its own Budget."""
    return shapes_model.Budget(vae_steps=budget.vae_steps, vae_batch=budget.vae_batch, vae_lr=budget.vae_lr)


def sd1_vae(vae, seed: int, cache_dir, log) -> None:
    """Load the SD1 shapes model's VAE weights into ``vae`` (same layout): the shipped model while it is current,
    else the cached one, else built."""
    from library.models import load_base_model

    sd1 = load_base_model(str(shapes_model.cached_shapes_model(seed=seed, cache_dir=cache_dir, log=log)))
    vae.load_state_dict(sd1.vae.state_dict())


def build_sdxl_shapes_model(out: str | os.PathLike, seed: int = 0, budget: SdxlBudget = SdxlBudget(),
                            prediction_type: str = "epsilon", log=print, cache_dir=None) -> Path:
    """Train the SDXL-layout shapes model from ``seed`` and save it to ``out``; returns the path.
    ``cache_dir``: where the SD1 shapes model whose VAE it takes is cached (``budget.vae_from_sd1``)."""
    t0 = time.time()
    configs = sdxl_shapes_configs(prediction_type)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the SD1 builder: small kernels, a shared machine
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            model = assemble(configs, build_models(configs, device="cpu", seed=seed))
            specs, pixels, time_ids, cropped = training_images(budget, seed)
            log(f"rendered {len(specs)} images ({int(cropped.sum())} crops) ({time.time() - t0:.0f}s)")
            if budget.vae_from_sd1:
                sd1_vae(model.vae, seed, cache_dir, log)
            else:
                extra = _to_tensor([shapes_data.render(s) for s in shapes_data.vae_specs(budget.images, seed=seed + 1)])
                shapes_model.train_vae(model.vae, torch.cat([pixels, extra]), _vae_budget(budget), gen, log)
            shapes_model.normalise_latents(model.vae, pixels, model.vae_scale_factor)
            with torch.no_grad():
                latents = torch.cat([model.vae.encode(pixels[i : i + 256]).latent_dist.mean
                                     for i in range(0, len(pixels), 256)]) * model.vae_scale_factor
            log(f"vae done, latent std {latents.std():.3f} ({time.time() - t0:.0f}s)")

            table, variants = shapes_model.caption_table(specs, budget)
            train_sdxl_unet(model.unet, latents, table, variants, time_ids, cropped,
                            (model.tokenizers, model.text_encoders), model.noise_scheduler, budget, gen, log)
            log(f"sdxl unet done ({time.time() - t0:.0f}s)")
    finally:
        torch.set_num_threads(threads)
    meta = {"lorasmith.shapes": f"sdxl seed={seed} source={source_hash()} budget={asdict(budget)}"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_base_model(model, out, dtype=shapes_model.SAVE_DTYPE, metadata=meta)
    return out


def shipped_sdxl_path(seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Where ``tools/make_shapes_model.py --sdxl --ship`` writes the model kept in the repository."""
    return shapes_model.SHIPPED_DIR / f"shapes_sdxl_{prediction_type}_seed{seed}.safetensors"


def cached_sdxl_shapes_model(seed: int = 0, prediction_type: str = "epsilon", cache_dir=None, log=print) -> Path:
    """The SDXL shapes model for ``seed``: the shipped one while this builder made it (same source hash), else
    built once per source hash into the cache and reused (atomic save)."""
    shipped = shipped_sdxl_path(seed, prediction_type)
    if shipped.is_file() and shapes_model.built_from(shipped) == source_hash():
        return shipped
    folder = Path(cache_dir or shapes_model.default_cache_dir()) / f"shapes-sdxl-{source_hash()}"
    path = folder / f"shapes_sdxl_{prediction_type}_seed{seed}.safetensors"
    if not path.exists():
        build_sdxl_shapes_model(path, seed=seed, prediction_type=prediction_type, log=log, cache_dir=cache_dir)
    return path
