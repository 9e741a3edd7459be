"""Tell SD1 / SD2 / SDXL apart from a checkpoint's key names and shapes, and reject the rest.

The text-encoder prefix decides the family (SDXL ``conditioner.embedders.1.model.``,
SD2 ``cond_stage_model.model.``, SD1 ``cond_stage_model.transformer.``); the UNet's
cross-attention width (768 / 1024 / 2048) cross-checks it. Files that are not a base
checkpoint at all (a LoRA, an SDXL refiner, a lone UNet or VAE) get an error that says
what the file is and what to pass instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

from library.models.errors import ModelLoadError
from library.models.layout import SDXL_REFINER_PREFIX, TEXT_ENCODER_LAYOUTS, UNET_PREFIX
from library.vocabulary import is_network_key

FAMILY_PREFIX = {family: layouts[-1][0] for family, layouts in TEXT_ENCODER_LAYOUTS.items()}
CONTEXT_DIM = {"sd1": 768, "sd2": 1024, "sdxl": 2048}
_EXPECTED = (
    "model.diffusion_model. + first_stage_model. + one of cond_stage_model.transformer. (SD1), "
    "cond_stage_model.model. (SD2), conditioner.embedders.0.transformer. and conditioner.embedders.1.model. (SDXL)"
)


def _top_prefixes(keys: Sequence[str], n: int = 5) -> str:
    counts = Counter(k.split(".", 1)[0] + ("." if "." in k else "") for k in keys)
    return ", ".join(f"{p}* ({c})" for p, c in counts.most_common(n))


def reject_non_checkpoints(path, keys: Sequence[str], metadata: dict[str, str]) -> None:
    """Raise for files that are clearly something other than a full SD base checkpoint."""
    if not keys:
        raise ModelLoadError(f"{path}: the file holds no tensors; re-download it or pick the right file")
    if "ss_network_module" in metadata or any(is_network_key(k) for k in keys):
        raise ModelLoadError(
            f"{path}: this is a LoRA/network file, not a base model checkpoint; give it as the network weights "
            "(--network_weights) and pass an SD1/SD2/SDXL checkpoint as the base model"
        )
    if any(k.startswith(SDXL_REFINER_PREFIX) for k in keys):
        raise ModelLoadError(
            f"{path}: this is an SDXL refiner checkpoint, which cannot be trained here; use the SDXL base model"
        )


def _what_is_it(keys: Sequence[str]) -> str:
    if any(k.startswith(UNET_PREFIX) for k in keys):
        return "it has a UNet (model.diffusion_model.*) but no text encoder we know"
    if any(k.startswith(("down_blocks.", "mid_block.")) for k in keys) and any(k.startswith("time_embedding.") for k in keys):
        return "it looks like a lone diffusers UNet file; pass the diffusers folder (with unet/, vae/, text_encoder/) instead"
    if any(k.startswith(("encoder.down.", "decoder.up.", "encoder.down_blocks.", "decoder.up_blocks.")) for k in keys):
        return "it looks like a standalone VAE; pass a full checkpoint"
    return "it is not an SD1/SD2/SDXL checkpoint"


def families_by_prefix(keys: Sequence[str]) -> list[str]:
    """Families whose text-encoder prefix occurs in ``keys``, most specific first."""
    return [f for f in ("sdxl", "sd2", "sd1") if any(k.startswith(FAMILY_PREFIX[f]) for k in keys)]


def unet_context_dim(keys: Sequence[str], shape: Callable[[str], tuple[int, ...]]) -> int | None:
    """The in-features of the first cross-attention key projection of the UNet, if any."""
    for k in keys:
        if k.startswith(UNET_PREFIX) and k.endswith("attn2.to_k.weight"):
            s = shape(k)
            return s[1] if len(s) == 2 else None
    return None


def detect_family(
    path,
    keys: Sequence[str],
    shape: Callable[[str], tuple[int, ...]],
    *,
    forced: str | None = None,
    declared: str | None = None,
) -> str:
    """The family of a checkpoint; ``declared`` comes from our own metadata, ``forced`` from the user.

    ``forced`` skips the width cross-check (for unusual merges) but must agree with the
    text-encoder prefixes actually present.
    """
    found = families_by_prefix(keys)
    if len(found) > 1:
        raise ModelLoadError(
            f"{path}: mixes text encoders of {' and '.join(found)}; the file is not a single model, pick another checkpoint"
        )
    by_prefix = found[0] if found else None
    if forced is not None:
        if declared is not None and declared != forced:
            raise ModelLoadError(
                f"{path}: family '{forced}' was forced but the file's metadata says it is {declared}; "
                f"pass family '{declared}' or leave it unset"
            )
        if by_prefix is not None and by_prefix != forced:
            raise ModelLoadError(
                f"{path}: family '{forced}' was forced but the file is an {by_prefix} checkpoint "
                f"(it has {FAMILY_PREFIX[by_prefix]}* keys); pass family '{by_prefix}' or leave it unset"
            )
        return forced
    if by_prefix is None:
        raise ModelLoadError(
            f"{path}: unknown checkpoint layout ({_what_is_it(keys)}); expected keys under {_EXPECTED}; "
            f"found {_top_prefixes(keys)}"
        )
    if declared is not None and declared != by_prefix:
        raise ModelLoadError(
            f"{path}: its metadata says '{declared}' but its keys are {by_prefix}; the file is inconsistent, save it again"
        )
    if declared is None:
        width = unet_context_dim(keys, shape)
        if width is not None and width != CONTEXT_DIM[by_prefix]:
            other = next((f for f, w in CONTEXT_DIM.items() if w == width), "no known family")
            raise ModelLoadError(
                f"{path}: the text encoder is {by_prefix} but the UNet's cross-attention width is {width} "
                f"({other}); the file is a broken merge, or force the family if you are sure"
            )
    return by_prefix
