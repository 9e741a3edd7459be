"""kohya-compatible LoRA network (``--network_module networks.lora``).

What it targets and how it names modules is the file contract with ComfyUI, A1111 and
diffusers (docs/formats.md): Linear/Conv2d children of UNet ``Transformer2DModel``s
(plus ``ResnetBlock2D``/``Downsample2D``/``Upsample2D`` when ``conv_dim`` is set) and of
text-encoder ``CLIPAttention``/``CLIPMLP``. SD1/SD2 UNet names use diffusers paths,
SDXL UNet names the original layout; text encoders are ``lora_te`` or ``lora_te1``/``lora_te2``.

A module wraps its base layer by replacing the layer's ``forward`` (as kohya does; networks/hooking.py),
so the base model's own state dict and module tree stay untouched.
"""

from __future__ import annotations

import logging

import torch

from library.errors import UserError
from networks import lora_blocks, lora_file
from networks import lora_names as names_mod
from library.models.unet_layout import UNetLayout, to_compvis
from networks.lora_math import delta_weight, effective_alpha, max_norm_ratio, rank_dropout_mask
from networks.hooking import HookedModule, HookedNetwork
from networks.lora_ranks import RankResolver

logger = logging.getLogger(__name__)

UNET_TARGETS = ("Transformer2DModel",)
UNET_CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
TEXT_ENCODER_TARGETS = ("CLIPAttention", "CLIPSdpaAttention", "CLIPMLP")
PREFIX_UNET, PREFIX_TE, PREFIX_TE1, PREFIX_TE2 = "lora_unet", "lora_te", "lora_te1", "lora_te2"


def add_up_projection(out: torch.Tensor, lx: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """``out + up(lx)`` with ``up`` already scaled: the small weight is scaled, not the full-size
    output, and the GEMM does the add (no extra full-size elementwise passes forward or backward)."""
    if up.dim() == 2:
        return torch.addmm(out.flatten(0, -2), lx.flatten(0, -2), up.t()).view_as(out)
    return out + torch.nn.functional.conv2d(lx, up)


class LoRAModule(HookedModule):
    """One low-rank adapter around a Linear or Conv2d: ``y = base(x) + up(down(x)) * scale * multiplier``."""

    NETWORK_MODULE = "networks.lora"  # the --network_module that trains this kind of module

    def __init__(self, lora_name, org_module, multiplier=1.0, lora_dim=4, alpha=1, dropout=None, rank_dropout=None, module_dropout=None):
        super().__init__(lora_name, org_module, multiplier)
        self.lora_dim = int(lora_dim)
        if isinstance(org_module, torch.nn.Conv2d):
            in_dim, out_dim = org_module.in_channels, org_module.out_channels
            self.lora_down = torch.nn.Conv2d(
                in_dim, self.lora_dim, org_module.kernel_size, org_module.stride, org_module.padding, bias=False
            )
            self.lora_up = torch.nn.Conv2d(self.lora_dim, out_dim, (1, 1), (1, 1), bias=False)
        else:
            in_dim, out_dim = org_module.in_features, org_module.out_features
            self.lora_down = torch.nn.Linear(in_dim, self.lora_dim, bias=False)
            self.lora_up = torch.nn.Linear(self.lora_dim, out_dim, bias=False)
        alpha = effective_alpha(alpha, self.lora_dim)
        self.scale = alpha / self.lora_dim
        self.register_buffer("alpha", torch.tensor(alpha))
        torch.nn.init.kaiming_uniform_(self.lora_down.weight, a=5**0.5)
        torch.nn.init.zeros_(self.lora_up.weight)
        self.dropout = dropout
        self.rank_dropout = rank_dropout
        self.module_dropout = module_dropout

    def forward(self, x):
        out = self._org_forward(x)
        if self.skips():
            return out
        return self.add_low_rank(out, self.lora_down(x), self.lora_up.weight, self.scale, self.lora_dim)

    def skips(self) -> bool:
        """Merged into the base weight already, or dropped for this step by module dropout."""
        return self.merged or (self.module_dropout is not None and self.training and torch.rand(1) < self.module_dropout)

    def add_low_rank(self, out, lx, up, scale, rank):
        """``out + up(lx) * scale * multiplier`` after dropout and rank dropout (kohya's order; a rank
        dropout rescales by 1/(1-p)). ``lx`` is the down projection's output, ``rank`` its width."""
        if self.dropout is not None and self.training:
            lx = torch.nn.functional.dropout(lx, p=self.dropout)
        if self.rank_dropout is not None and self.training:
            lx = lx * rank_dropout_mask(lx.size(0), rank, self.rank_dropout, lx.dim(), lx.device)
            scale = scale / (1.0 - self.rank_dropout)
        return add_up_projection(out, lx, up * (self.multiplier * scale))

    def weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(down, up) as saved in the file: [r, in(, kh, kw)] and [out, r(, 1, 1)]."""
        return self.lora_down.weight, self.lora_up.weight

    def get_weight(self, multiplier=None) -> torch.Tensor:
        """The delta this module adds to the base weight (float32)."""
        m = self.multiplier if multiplier is None else multiplier
        down, up = self.weights()
        return delta_weight(down, up, self.scale * m)

    @torch.no_grad()
    def rescale_(self, ratio: torch.Tensor) -> None:
        """Multiply the delta by ``ratio`` (max-norm): both factors by its square root."""
        for w in self.weights():
            w.mul_(ratio.sqrt().to(w.dtype))

    @torch.no_grad()
    def merge(self, sign: float = 1.0) -> None:
        """Add (sign=1) or subtract (sign=-1) the delta into/from the base weight."""
        w = self.org_module.weight
        w.copy_((w.float() + sign * self.get_weight().to(w.device)).to(w.dtype))
        self.merged = sign > 0


def _is_sdxl(text_encoders, unet) -> bool:
    if unet is not None:
        return getattr(unet.config, "addition_embed_type", None) == "text_time"
    return len(text_encoders) == 2


def _target_layers(root, targets, prefix, name_fn):
    """Yield (lora_name, layer, is_linear_or_1x1) for Linear/Conv2d under modules of the target classes."""
    for name, module in root.named_modules():
        if type(module).__name__ not in targets:
            continue
        for child_name, child in module.named_modules():
            if isinstance(child, torch.nn.Linear):
                small = True
            elif isinstance(child, torch.nn.Conv2d):
                small = child.kernel_size == (1, 1)
            else:
                continue
            path = f"{name}.{child_name}" if child_name else name
            yield f"{prefix}_{name_fn(path).replace('.', '_')}", child, small


def _hf_clip_path(path: str) -> str:
    """Module path as in HF CLIP checkpoints: transformers v5's CLIPTextModel drops the ``text_model.`` level."""
    return path if path.startswith("text_model.") else "text_model." + path


class LoRANetwork(HookedNetwork):
    """All LoRA modules of a model; the object the trainer optimises and saves."""

    def __init__(self, text_encoder, unet, ranks: RankResolver | None = None, multiplier=1.0, dropout=None,
                 rank_dropout=None, module_dropout=None, module_class=LoRAModule, is_sdxl=None):
        """Modules on the text encoder(s) and the UNet, at the ranks ``ranks`` gives (networks/lora_ranks.py)."""
        super().__init__()
        text_encoders = list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
        text_encoders = [te for te in text_encoders if te is not None]
        self.is_sdxl = _is_sdxl(text_encoders, unet) if is_sdxl is None else is_sdxl
        self.ranks = ranks or RankResolver()
        self.multiplier = multiplier
        self.dropout, self.rank_dropout, self.module_dropout = dropout, rank_dropout, module_dropout
        self.loraplus_lr_ratio = self.loraplus_unet_lr_ratio = self.loraplus_text_encoder_lr_ratio = None
        self.block_lr_weight = None
        self.text_encoder_loras = []
        for i, te in enumerate(text_encoders):
            prefix = PREFIX_TE if len(text_encoders) == 1 else (PREFIX_TE1, PREFIX_TE2)[i]
            self.text_encoder_loras += self._modules_on(te, TEXT_ENCODER_TARGETS, prefix, _hf_clip_path, module_class)
        self.unet_loras = []
        if unet is not None:
            targets = UNET_TARGETS + UNET_CONV_TARGETS if self.ranks.adapts_conv else UNET_TARGETS
            layout = UNetLayout.from_config(unet.config) if self.is_sdxl else None
            name_fn = (lambda p: to_compvis(p, layout)) if self.is_sdxl else (lambda p: p)
            self.unet_loras = self._modules_on(unet, targets, PREFIX_UNET, name_fn, module_class)
        names = [lora.lora_name for lora in self.all_loras]
        if len(set(names)) != len(names):
            raise RuntimeError("duplicated LoRA module names")
        for lora in self.all_loras:
            self.add_module(lora.lora_name, lora)
        logger.info("LoRA: %d text-encoder modules, %d UNet modules", len(self.text_encoder_loras), len(self.unet_loras))

    def _modules_on(self, root, targets, prefix, name_fn, module_class) -> list:
        """One module per target layer under ``root`` that the rank resolver gives a rank."""
        loras = []
        for lora_name, layer, small in _target_layers(root, targets, prefix, name_fn):
            dim, alpha = self.ranks.for_module(lora_name, small, self.is_sdxl)
            if dim:
                loras.append(module_class(lora_name, layer, self.multiplier, dim, alpha, self.dropout,
                                          self.rank_dropout, self.module_dropout))
        return loras

    @property
    def all_loras(self) -> list[LoRAModule]:
        return self.text_encoder_loras + self.unet_loras

    def hooked_modules(self) -> list[LoRAModule]:
        return self.all_loras

    # --- wiring into the model -------------------------------------------------------
    def apply_to(self, text_encoder=None, unet=None, apply_text_encoder=True, apply_unet=True):
        """Hook every module into its base layer and register it (kohya's signature)."""
        dropped = (self.text_encoder_loras if not apply_text_encoder else []) + (self.unet_loras if not apply_unet else [])
        for lora in dropped:
            delattr(self, lora.lora_name)
        if not apply_text_encoder:
            self.text_encoder_loras = []
        if not apply_unet:
            self.unet_loras = []
        for lora in self.all_loras:
            lora.apply_to()

    def merge_to(self, text_encoder=None, unet=None, weights_sd=None, dtype=None, device=None):
        """Add the deltas into the base weights; hooked forwards then skip the LoRA path."""
        if weights_sd is not None:
            self.load_state_dict(weights_sd, strict=False)
        self.merge_hooked()

    def unmerge(self):
        """Subtract the deltas again: the base weights return (up to float rounding)."""
        for lora in self.all_loras:
            if lora.merged:
                lora.merge(-1.0)

    # --- training hooks kohya's trainer calls ----------------------------------------
    def set_loraplus_lr_ratio(self, ratio=None, unet_ratio=None, text_encoder_ratio=None):
        self.loraplus_lr_ratio = ratio
        self.loraplus_unet_lr_ratio = unet_ratio
        self.loraplus_text_encoder_lr_ratio = text_encoder_ratio

    def set_block_lr_weight(self, weights):
        self.block_lr_weight = weights


    def prepare_optimizer_params(self, text_encoder_lr, unet_lr, default_lr):
        """(param_groups, descriptions): text encoder(s), UNet (per block with block lr), LoRA+ 'plus' groups.

        ``text_encoder_lr`` may be a list (one lr per SDXL text encoder). Groups whose lr is
        0 or None are left out (their modules stay frozen), as in kohya.
        """
        self.requires_grad_(True)
        groups, descriptions = [], []

        def add(loras, lr, ratio, label):
            plain = [p for lora in loras for n, p in lora.named_parameters() if ratio is None or "lora_up" not in n]
            plus = [p for lora in loras for n, p in lora.named_parameters() if ratio is not None and "lora_up" in n]
            for params, group_lr, suffix in ((plain, lr, ""), (plus, None if lr is None else lr * (ratio or 1), " plus")):
                if not params:
                    continue
                if not group_lr:
                    for p in params:
                        p.requires_grad_(False)
                    continue
                groups.append({"params": params, "lr": group_lr})
                descriptions.append(label + suffix)

        te_ratio = self.loraplus_text_encoder_lr_ratio or self.loraplus_lr_ratio
        te_lrs = text_encoder_lr if isinstance(text_encoder_lr, (list, tuple)) else None
        for prefix in (PREFIX_TE, PREFIX_TE1, PREFIX_TE2):
            loras = [lora for lora in self.text_encoder_loras if lora.lora_name.startswith(prefix + "_")]
            if not loras:
                continue
            if te_lrs:
                lr = te_lrs[0] if prefix != PREFIX_TE2 or len(te_lrs) == 1 else te_lrs[1]
            else:
                lr = text_encoder_lr
            lr = default_lr if lr is None else lr
            label = "textencoder" if prefix == PREFIX_TE else f"textencoder{prefix[-1]}"
            add(loras, lr, te_ratio, label)

        unet_ratio = self.loraplus_unet_lr_ratio or self.loraplus_lr_ratio
        base_lr = default_lr if unet_lr is None else unet_lr
        if self.block_lr_weight is None:
            add(self.unet_loras, base_lr, unet_ratio, "unet")
        else:
            by_block: dict[int, list] = {}
            for lora in self.unet_loras:
                by_block.setdefault(lora_blocks.block_index(lora.lora_name, self.is_sdxl), []).append(lora)
            for idx, loras in sorted(by_block.items()):
                add(loras, base_lr * self.block_lr_weight[idx], unet_ratio, f"unet_block{idx}")
        return groups, descriptions

    @torch.no_grad()
    def apply_max_norm_regularization(self, max_norm_value: float, device=None):
        """Scale modules whose delta norm exceeds ``max_norm_value`` -> (keys_scaled, mean_norm, max_norm)."""
        norms, scaled = [], 0
        for lora in self.all_loras:
            norm = lora.get_weight(1.0).norm()
            ratio = max_norm_ratio(norm, max_norm_value)
            if ratio != 1:
                scaled += 1
                lora.rescale_(ratio)
            norms.append((norm * ratio).item())
        if not norms:
            return 0, 0.0, 0.0
        return scaled, sum(norms) / len(norms), max(norms)

    # --- files -----------------------------------------------------------------------
    def lora_state_dict(self) -> dict[str, torch.Tensor]:
        """The kohya file layout: ``<name>.lora_down.weight``, ``<name>.lora_up.weight``, ``<name>.alpha``."""
        sd = {}
        for lora in self.all_loras:
            down, up = lora.weights()
            sd[f"{lora.lora_name}.lora_down.weight"] = down
            sd[f"{lora.lora_name}.lora_up.weight"] = up
            sd[f"{lora.lora_name}.alpha"] = lora.alpha
        return sd

    def save_weights(self, file, dtype=None, metadata=None):
        lora_file.save_lora_file(self.lora_state_dict(), file, metadata, dtype)

    def load_weights(self, file_or_sd, strict: bool = True):
        """Load weights from a file or state dict; mismatched names or shapes are a clear error."""
        path = file_or_sd if isinstance(file_or_sd, (str, bytes)) or hasattr(file_or_sd, "__fspath__") else "<state dict>"
        tensors = lora_file.read_lora_file(path)[0] if path != "<state dict>" else file_or_sd
        check_fits(self, tensors, path, strict=strict)
        own = self.lora_state_dict()
        self.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
        for lora in self.all_loras:  # alpha may have changed: recompute the scale
            lora.scale = effective_alpha(lora.alpha, lora.lora_dim) / lora.lora_dim
        return {"loaded": sum(k in own for k in tensors), "missing": [k for k in own if k not in tensors]}


def check_fits(network: LoRANetwork, tensors: dict[str, torch.Tensor], path: str, strict: bool = True) -> None:
    """Raise a one-line error when a LoRA's modules or shapes do not match this model."""
    own = network.lora_state_dict()
    unknown = [k for k in tensors if k not in own]
    if unknown and strict:
        names = sorted({k.split(".")[0] for k in unknown})
        this = "SDXL" if network.is_sdxl else "SD1.x/SD2.x"
        raise lora_file.LoRAFileError(
            f"{path}: {len(names)} LoRA modules do not exist in this {this} model (e.g. {names[0]}); "
            f"the file looks like a {names_mod.guess_lora_family(tensors)} LoRA: use it with a matching base model"
        )
    for key, value in tensors.items():
        if key in own and own[key].shape != value.shape:
            raise lora_file.LoRAFileError(
                f"{path}: {key} has shape {tuple(value.shape)} but this model needs {tuple(own[key].shape)}; "
                "the LoRA was trained on another base model family (e.g. SD2 vs SD1)"
            )


def _float_or_none(v):
    return None if v is None or v == "None" else float(v)


def create_network(multiplier, network_dim, network_alpha, vae, text_encoder, unet, neuron_dropout=None, **kwargs):
    """kohya's factory: ``--network_dim/--network_alpha/--network_dropout`` plus ``--network_args`` as kwargs."""
    return build_network(multiplier, network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs)


def build_network(multiplier, network_dim, network_alpha, text_encoder, unet, neuron_dropout, kwargs, module_class=LoRAModule):
    """``create_network`` with the per-module class as a parameter (networks.lora_fa, networks.dylora)."""
    network_dim = 4 if network_dim is None else int(network_dim)
    network_alpha = 1.0 if network_alpha is None else float(network_alpha)
    if network_dim <= 0:
        raise UserError(f"--network_dim must be a positive integer, got {network_dim}")
    te_list = list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
    is_sdxl = _is_sdxl([t for t in te_list if t is not None], unet)
    block_lr_weight = lora_blocks.block_lr_weights(is_sdxl, kwargs)
    ranks = RankResolver.from_network_args(is_sdxl, network_dim, network_alpha, kwargs, block_lr_weight)
    network = LoRANetwork(
        text_encoder, unet, ranks, multiplier=multiplier, dropout=_float_or_none(neuron_dropout),
        rank_dropout=_float_or_none(kwargs.get("rank_dropout")), module_dropout=_float_or_none(kwargs.get("module_dropout")),
        module_class=module_class, is_sdxl=is_sdxl,
    )
    ratios = [_float_or_none(kwargs.get(k)) for k in ("loraplus_lr_ratio", "loraplus_unet_lr_ratio", "loraplus_text_encoder_lr_ratio")]
    if any(r is not None for r in ratios):
        network.set_loraplus_lr_ratio(*ratios)
    if block_lr_weight is not None:
        network.set_block_lr_weight(block_lr_weight)
    network.network_args = {k: str(v) for k, v in kwargs.items()}
    return network


def create_network_from_weights(multiplier, file, vae, text_encoder, unet, weights_sd=None, for_inference=False, **kwargs):
    """A network shaped like a saved file (ranks and alphas per module), kohya files included.

    Returns ``(network, weights_sd)``; the weights are not loaded yet (call ``load_weights``
    or ``merge_to``), as in kohya.
    """
    return build_network_from_weights(multiplier, file, text_encoder, unet, weights_sd, kwargs)


def build_network_from_weights(multiplier, file, text_encoder, unet, weights_sd, kwargs, module_class=LoRAModule):
    """``create_network_from_weights`` with the per-module class as a parameter."""
    if weights_sd is None:
        weights_sd = lora_file.read_lora_file(file)[0]
    path = str(file) if file is not None else "<weights>"
    lora_file.require_plain_lora(weights_sd, path, module_class.NETWORK_MODULE)
    dims, alphas = lora_file.module_dims_and_alphas(weights_sd, path)
    network = LoRANetwork(text_encoder, unet, RankResolver.from_file(dims, alphas), multiplier=multiplier,
                          module_class=module_class)
    check_fits(network, weights_sd, path)
    block_lr_weight = lora_blocks.block_lr_weights(network.is_sdxl, kwargs)
    if block_lr_weight is not None:
        network.set_block_lr_weight(block_lr_weight)
    return network, weights_sd
