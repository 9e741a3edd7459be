"""OFT (``--network_module networks.oft``): kohya's orthogonal finetuning of the UNet.

``network_dim`` is the number of blocks per layer (it must divide each layer's output channels),
``network_alpha`` the constraint (kohya: the rotation's norm is limited to alpha × output channels;
kohya's default and advice is a small alpha such as 1e-3). network_args: ``enable_all_linear``
(every Linear/1x1 conv of the transformer blocks, not only attention) and ``enable_conv`` (also the
ResNet/sampler convs). Text encoders are not trained (as kohya).

The file holds ``<name>.oft_blocks`` [blocks, size, size] and ``<name>.alpha`` per layer — the keys
ComfyUI's and A1111's OFT loaders read. Module names are networks.lora's (``lora_unet_…``: diffusers
paths for SD1/SD2, the original layout for SDXL), the names ComfyUI maps; kohya's own files name
them ``oft_unet_…``, which are read too (docs/networks.md).
"""

from __future__ import annotations

import logging

import torch

from library.errors import UserError
from networks import lora_file
from networks.hooking import HookedModule, HookedNetwork
from library.models.unet_layout import UNetLayout, to_compvis
from networks.lora import PREFIX_UNET, _is_sdxl, _target_layers
from networks.oft_math import constraint_for, rotate_weight, rotation

logger = logging.getLogger(__name__)

ATTENTION_TARGETS = ("Attention",)
ALL_LINEAR_TARGETS = ("Transformer2DModel",)
CONV_TARGETS = ("ResnetBlock2D", "Downsample2D", "Upsample2D")
KOHYA_PREFIX = "oft_unet_"


class OFTModule(HookedModule):
    """Block-diagonal orthogonal rotation of one layer's weight (replaces the layer's forward)."""

    def __init__(self, lora_name, org_module, multiplier=1.0, num_blocks=4, alpha=1e-3):
        super().__init__(lora_name, org_module, multiplier)
        out_dim = org_module.out_channels if isinstance(org_module, torch.nn.Conv2d) else org_module.out_features
        if num_blocks < 1 or out_dim % num_blocks:
            raise UserError(f"networks.oft: {lora_name} has {out_dim} output channels, which network_dim={num_blocks} "
                            "(the number of blocks) does not divide; choose a network_dim such as 4 or 8")
        if isinstance(alpha, torch.Tensor):
            alpha = float(alpha.float().item())
        self.constraint = constraint_for(alpha, out_dim)
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        size = out_dim // num_blocks
        self.oft_blocks = torch.nn.Parameter(torch.zeros(num_blocks, size, size))

    def rotated_weight(self, multiplier=None) -> torch.Tensor:
        m = self.multiplier if multiplier is None else multiplier
        return rotate_weight(rotation(self.oft_blocks, self.constraint, m), self.org_module.weight)

    def forward(self, x):
        if self.merged or self.multiplier == 0:
            return self._org_forward(x)
        org = self.org_module
        w = self.rotated_weight().to(x.dtype)
        bias = None if org.bias is None else org.bias.to(x.dtype)
        if isinstance(org, torch.nn.Conv2d):
            return torch.nn.functional.conv2d(x, w, bias, org.stride, org.padding, org.dilation, org.groups)
        return torch.nn.functional.linear(x, w, bias)

    @torch.no_grad()
    def merge(self) -> None:
        w = self.org_module.weight
        w.copy_(self.rotated_weight().to(w.device, w.dtype))
        self.merged = True


class OFTNetwork(HookedNetwork):
    """All OFT modules of a UNet; the object the trainer optimises and saves."""

    def __init__(self, unet, multiplier=1.0, dim=4, alpha=1e-3, enable_all_linear=False, enable_conv=False,
                 only_names=None, is_sdxl=False):
        super().__init__()
        self.multiplier, self.dim, self.alpha = multiplier, dim, alpha
        targets = ALL_LINEAR_TARGETS if enable_all_linear or only_names is not None else ATTENTION_TARGETS
        if enable_conv or only_names is not None:
            targets = targets + CONV_TARGETS
        if is_sdxl:
            layout = UNetLayout.from_config(unet.config)
            name_fn = lambda p: to_compvis(p, layout)  # noqa: E731
        else:
            name_fn = lambda p: p  # noqa: E731
        self.unet_ofts = []
        seen = set()
        for name, layer, small in _target_layers(unet, targets, PREFIX_UNET, name_fn):
            if name in seen or (only_names is None and not small and not enable_conv):
                continue
            if only_names is not None and name not in only_names:
                continue
            seen.add(name)
            blocks = dim if only_names is None else only_names[name]
            self.unet_ofts.append(OFTModule(name, layer, multiplier, blocks, alpha if only_names is None else alpha[name]))
        for oft in self.unet_ofts:
            self.add_module(oft.lora_name, oft)
        self.text_encoder_loras, self.unet_loras = [], self.unet_ofts
        logger.info("OFT: %d UNet modules", len(self.unet_ofts))

    # --- kohya's network-module contract ---------------------------------------------------
    def apply_to(self, text_encoder=None, unet=None, apply_text_encoder=True, apply_unet=True):
        if not apply_unet:
            raise UserError("networks.oft trains only the UNet: leave out --network_train_text_encoder_only")
        for oft in self.unet_ofts:
            oft.apply_to()

    def hooked_modules(self) -> list[OFTModule]:
        return self.unet_ofts

    def merge_to(self, text_encoder=None, unet=None, weights_sd=None, dtype=None, device=None):
        if weights_sd is not None:
            self.load_weights(weights_sd, strict=False)
        self.merge_hooked()

    def prepare_optimizer_params(self, text_encoder_lr, unet_lr, default_lr):
        self.requires_grad_(True)
        lr = default_lr if unet_lr is None else unet_lr
        params = list(self.parameters())
        if not params or not lr:
            return [], []
        return [{"params": params, "lr": lr}], ["unet"]

    def save_weights(self, file, dtype=None, metadata=None):
        lora_file.save_lora_file(self.state_dict(), file, metadata, dtype)

    def load_weights(self, file_or_sd, strict: bool = True):
        """Load ``oft_blocks``/``alpha`` from a file or state dict (kohya's ``oft_unet_`` names too)."""
        is_path = isinstance(file_or_sd, (str, bytes)) or hasattr(file_or_sd, "__fspath__")
        path = file_or_sd if is_path else "<state dict>"
        tensors = kohya_names_to_ours(lora_file.read_lora_file(path)[0] if is_path else file_or_sd)
        own = self.state_dict()
        unknown = [k for k in tensors if k not in own]
        if unknown and strict:
            raise lora_file.LoRAFileError(f"{path}: {len(unknown)} OFT tensors do not exist in this network "
                                          f"(e.g. {unknown[0]}); use the base model family the file was trained on")
        for key, value in tensors.items():
            if key in own and own[key].shape != value.shape:
                raise lora_file.LoRAFileError(f"{path}: {key} has shape {tuple(value.shape)} but this network needs "
                                              f"{tuple(own[key].shape)} (another network_dim or base model)")
        self.load_state_dict({k: v for k, v in tensors.items() if k in own}, strict=False)
        for oft in self.unet_ofts:
            oft.constraint = constraint_for(float(oft.alpha), oft.oft_blocks.shape[0] * oft.oft_blocks.shape[1])
        return {"loaded": sum(k in own for k in tensors), "missing": [k for k in own if k not in tensors]}


def kohya_names_to_ours(tensors: dict) -> dict:
    """kohya's OFT files name modules ``oft_unet_…``; ours (and ComfyUI's map) ``lora_unet_…``."""
    return {("lora_unet_" + k[len(KOHYA_PREFIX):] if k.startswith(KOHYA_PREFIX) else k): v for k, v in tensors.items()}


def _flag(kwargs, key) -> bool:
    value = kwargs.get(key)
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "none", ""):
        return False
    raise UserError(f"network_args {key}={value}: use True or False")


def create_network(multiplier, network_dim, network_alpha, vae, text_encoder, unet, neuron_dropout=None, **kwargs):
    """kohya's factory: network_dim = blocks per layer (default 4), network_alpha = constraint (default 1e-3)."""
    dim = 4 if network_dim is None else int(network_dim)
    if network_alpha is None:
        network_alpha = 1e-3
    elif network_alpha >= 1:
        logger.warning("networks.oft: network_alpha %s is large for OFT's constraint (kohya advises about 1e-3); "
                       "the rotation is then practically unlimited", network_alpha)
    te_list = list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
    network = OFTNetwork(unet, multiplier, dim, float(network_alpha), _flag(kwargs, "enable_all_linear"),
                         _flag(kwargs, "enable_conv"), is_sdxl=_is_sdxl([t for t in te_list if t is not None], unet))
    network.network_args = {k: str(v) for k, v in kwargs.items()}
    return network


def create_network_from_weights(multiplier, file, vae, text_encoder, unet, weights_sd=None, for_inference=False, **kwargs):
    """An OFT network shaped like a saved file (block counts and alphas per layer); weights not loaded yet."""
    if weights_sd is None:
        weights_sd = lora_file.read_lora_file(file)[0]
    path = str(file) if file is not None else "<weights>"
    tensors = kohya_names_to_ours(weights_sd)
    blocks = {k.rsplit(".", 1)[0]: int(v.shape[0]) for k, v in tensors.items() if k.endswith(".oft_blocks")}
    if not blocks:
        kinds = ", ".join(lora_file.file_kinds(tensors)) or "unknown"
        raise lora_file.LoRAFileError(f"{path}: no OFT tensors (<name>.oft_blocks) in this file (it holds: {kinds}); "
                                      "use the network module that wrote it (ss_network_module in its metadata)")
    alphas = {n: float(tensors[f"{n}.alpha"]) if f"{n}.alpha" in tensors else 0.0 for n in blocks}
    te_list = list(text_encoder) if isinstance(text_encoder, (list, tuple)) else [text_encoder]
    network = OFTNetwork(unet, multiplier, dim=blocks, alpha=alphas, only_names=blocks,
                         is_sdxl=_is_sdxl([t for t in te_list if t is not None], unet))
    missing = sorted(set(blocks) - {o.lora_name for o in network.unet_ofts})
    if missing:
        raise lora_file.LoRAFileError(f"{path}: {len(missing)} OFT modules do not exist in this model (e.g. {missing[0]}); "
                                      "use it with the base model family it was trained on")
    return network, weights_sd
