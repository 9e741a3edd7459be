"""Which rank and alpha each LoRA module gets: the one rule ``LoRANetwork`` builds its modules by.

Why a module of its own: the rule (a saved file's own ranks per module, else block-wise ranks by kohya's
UNet block number, else ``--network_dim``/``--network_alpha`` for Linear and 1x1 convolutions and
``conv_dim``/``conv_alpha`` for 3x3 convolutions) depends only on a module's name and kind, so it is
tested on names alone, without building a UNet. A rank of 0 or None means "no module here".
"""

from __future__ import annotations

from dataclasses import dataclass

from networks import lora_blocks


@dataclass(frozen=True)
class RankResolver:
    """Ranks and alphas for a network: uniform, per UNet block, or per module (from a saved file)."""

    dim: int = 4
    alpha: float = 1.0
    conv_dim: int | None = None  # 3x3 convolutions; None: not adapted
    conv_alpha: float | None = None
    block_dims: tuple | None = None  # per kohya block number (networks/lora_blocks.py), Linear / 1x1 conv
    block_alphas: tuple | None = None
    conv_block_dims: tuple | None = None  # per block, 3x3 convolutions
    conv_block_alphas: tuple | None = None
    modules: dict | None = None  # lora_name -> (rank, alpha): exactly the modules of a saved file

    @classmethod
    def from_file(cls, dims: dict, alphas: dict) -> "RankResolver":
        """Exactly the modules a saved LoRA has, at their own ranks and alphas."""
        return cls(modules={name: (dim, alphas[name]) for name, dim in dims.items()})

    @classmethod
    def from_network_args(cls, is_sdxl: bool, network_dim: int, network_alpha: float, kwargs: dict,
                          block_lr_weight: list | None = None) -> "RankResolver":
        """``--network_dim/--network_alpha`` with ``conv_dim``, ``conv_alpha``, ``block_dims``, ``block_alphas``,
        ``conv_block_dims``, ``conv_block_alphas`` of ``--network_args``; a block whose learning-rate weight is 0
        gets no module at all (kohya)."""
        conv_dim = kwargs.get("conv_dim")
        conv_dim = int(conv_dim) if conv_dim not in (None, "None") else None
        conv_alpha = kwargs.get("conv_alpha")
        conv_alpha = None if conv_alpha in (None, "None") else float(conv_alpha)
        if conv_dim is not None and conv_alpha is None:
            conv_alpha = 1.0
        if kwargs.get("block_dims") is None and block_lr_weight is None:
            return cls(network_dim, network_alpha, conv_dim, conv_alpha)
        dims, alphas, cdims, calphas = lora_blocks.block_dims_and_alphas(
            is_sdxl, kwargs, network_dim, network_alpha, conv_dim, conv_alpha)
        for i, w in enumerate(block_lr_weight or []):
            if w == 0:
                dims[i] = 0
                if cdims is not None:
                    cdims[i] = 0
        return cls(network_dim, network_alpha, conv_dim, conv_alpha, tuple(dims), tuple(alphas),
                   tuple(cdims) if cdims is not None else None, tuple(calphas) if calphas is not None else None)

    @property
    def adapts_conv(self) -> bool:
        """Whether 3x3 convolutions (ResNet blocks) are looked at for modules."""
        return self.modules is not None or self.conv_dim is not None or self.conv_block_dims is not None

    def for_module(self, lora_name: str, small: bool, is_sdxl: bool) -> tuple:
        """(rank, alpha) of the module ``lora_name`` (``small``: a Linear or 1x1 convolution), or (None, None)."""
        if self.modules is not None:
            return self.modules.get(lora_name, (None, None))
        block = lora_blocks.block_index(lora_name, is_sdxl)
        if block >= 0 and self.block_dims is not None:
            if small:
                return self.block_dims[block], self.block_alphas[block]
            if self.conv_block_dims is not None:
                return self.conv_block_dims[block], self.conv_block_alphas[block]
            return None, None
        if small:
            return self.dim, self.alpha
        if self.conv_dim is not None:
            return self.conv_dim, self.conv_alpha
        return None, None
