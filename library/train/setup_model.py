"""Load the base model for training and wire the LoRA network into it.

Why a module of its own: which weights are frozen, in which dtype, on which device, with which
attention kernel and checkpointing, is where memory is won or lost; keeping it in one place (and out
of the loop) lets the loop stay about steps, and lets tests build a trainable model in one call.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch

from library.devices import dtype_of
from library.errors import UserError
from library.models import load_base_model
from library.models.base_model import BaseModel
from library.options import network_kwargs
from library.options.typed import NetworkOptions, SavingOptions, from_args
from library.train import network_module
from library.train.memory import device_notices, load_device
from library.train.network_ranks import check_ranks
from library.train.noise import apply_zero_terminal_snr
from library.train.speed import apply_levers, check_levers

logger = logging.getLogger("lorasmith.train")


@dataclass
class TrainModel:
    """The base model, its LoRA network, and the facts the step needs about both."""

    base: BaseModel
    network: torch.nn.Module
    device: torch.device
    weight_dtype: torch.dtype  # frozen UNet / text encoders
    vae_dtype: torch.dtype
    train_unet: bool
    train_text_encoder: bool
    network_args: dict = field(default_factory=dict)
    contract: object = None  # library.train.network_module.NetworkContract: how the trainer calls the network
    sample_conditioning: dict | None = None  # sample prompts encoded before the text encoders were freed
    options: NetworkOptions = field(default_factory=NetworkOptions)  # the network options it was made with

    @property
    def text_encoders(self) -> list:
        return self.base.text_encoders

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.network.parameters() if p.requires_grad]


def load_base(args, script: str, device: torch.device | str = "cpu", vae_ready=None) -> BaseModel:
    """The base model (``--vae`` and zero-terminal SNR applied); ``vae_ready(vae, family)`` is called as soon as
    the VAE is complete (with ``--vae`` in it), before the UNet and text encoders load."""
    from library.models.vae_file import load_vae_into

    family = "sd2" if args.v2 else None
    early = []

    def on_part(name, module, family):
        if name == "VAE" and (family == "sdxl") == (script == "sdxl_train_network"):  # else: the error below
            if args.vae:
                load_vae_into(module, args.vae)
            early.append(module)
            vae_ready(module, family)

    base = load_base_model(
        args.pretrained_model_name_or_path, family=family,
        v_parameterization=True if args.v_parameterization else None, dtype=torch.float32, device=device,
        on_part=on_part if vae_ready is not None else None,
    )
    path = args.pretrained_model_name_or_path
    if script == "train_network" and base.is_sdxl:
        raise UserError(f"{path} is an SDXL model; train it with sdxl_train_network.py (same options)")
    if script == "sdxl_train_network" and not base.is_sdxl:
        raise UserError(f"{path} is an {base.family.upper()} model, not SDXL; train it with train_network.py")
    if args.vae and not early:
        load_vae_into(base.vae, args.vae)
    if args.zero_terminal_snr:
        apply_zero_terminal_snr(base.noise_scheduler)
    return base


def _set_attention(args, base: BaseModel, device: torch.device) -> None:
    if args.xformers:
        if device.type != "cuda":
            raise UserError("--xformers needs a CUDA GPU; leave it out (PyTorch SDPA attention is used by default)")
        try:
            base.unet.enable_xformers_memory_efficient_attention()
        except Exception as e:  # noqa: BLE001 - any failure here is an install problem the user fixes
            raise UserError(f"--xformers: xformers cannot be used ({str(e).splitlines()[0]}); "
                            "leave --xformers out to use PyTorch SDPA") from None
    # Otherwise diffusers' default processor is PyTorch SDPA (flash / memory-efficient kernels).


def _make_network(args, options: NetworkOptions, base: BaseModel, module, train_unet: bool, train_te: bool):
    """The network made, prepared (kohya's ``prepare_network(args)`` gets the namespace), hooked in and loaded."""
    kwargs = network_kwargs(options)
    contract = network_module.create(options, module, base.text_encoders, base.unet, base.vae, kwargs)
    contract.prepare(args, options)
    tes = network_module.text_encoders_for_module(base.text_encoders)
    contract.apply_to(tes, base.unet, train_te, train_unet)
    if not options.dim_from_weights:  # a file's own ranks are what they are
        check_ranks(contract.network)
    if options.network_weights:
        info = contract.load_weights(options.network_weights)
        if contract.own and isinstance(info, dict) and not info.get("loaded"):  # strict=False (kohya) must still fit somewhere
            from networks.lora_names import guess_lora_family
            from networks.lora_file import read_lora_file

            family = guess_lora_family(read_lora_file(options.network_weights)[0])
            raise UserError(f"--network_weights {options.network_weights}: none of its modules exist in this "
                            f"{'SDXL' if base.is_sdxl else base.family.upper()} model (it looks like a LoRA for {family}); "
                            "continue from a LoRA trained on the same model family, or leave --network_weights out")
        logger.info("continuing from %s: %s tensors loaded", options.network_weights, info.get("loaded") if isinstance(info, dict) else "all")
    return contract, kwargs


def enable_te_checkpointing(te) -> None:
    """transformers v5 renamed gradient_checkpointing_enable to activation_checkpointing_enable."""
    fn = getattr(te, "activation_checkpointing_enable", None) or te.gradient_checkpointing_enable
    fn()


def _to_fp8(unet: torch.nn.Module) -> None:
    """``--fp8_base``: Linear/Conv weights in float8 (autocast upcasts them per op); norms keep the
    compute dtype, as CPU autocast cannot upcast a norm's parameters."""
    for m in unet.modules():
        if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)):
            m.to(torch.float8_e4m3fn)


def vae_placement(args, device: torch.device) -> tuple[torch.device, torch.dtype]:
    """Where the frozen VAE computes: the training device, fp32 unless mixed precision without --no_half_vae."""
    return device, torch.float32 if (args.no_half_vae or args.mixed_precision == "no") else dtype_of(args.mixed_precision)


def place_vae(args, vae: torch.nn.Module, device: torch.device) -> None:
    """The frozen VAE where it computes (:func:`vae_placement`), in eval mode: for latent caching that starts
    before the rest of the model has loaded (library/train/startup.py); load_for_training then leaves it."""
    vae.requires_grad_(False)
    _move(vae, *vae_placement(args, device))
    vae.eval()


def _move(module: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """``to(device[, dtype])``, casting only when needed (diffusers warns on every dtype cast); a module already
    in place is left alone (the VAE may be caching latents on another thread, library/train/startup.py)."""
    first = next(module.parameters())
    same_device = first.device.type == device.type and device.index in (None, first.device.index)
    if first.dtype == dtype and same_device:
        return
    module.to(device) if first.dtype == dtype else module.to(device, dtype=dtype)


def load_for_training(args, script: str, device: torch.device | str = "cpu", vae_ready=None) -> TrainModel:
    """Base model frozen in the compute dtype, LoRA network hooked in and trainable (fp32 unless full_bf16/fp16).

    ``vae_ready(vae, family)``: called once the VAE is loaded, before the rest (library/train/startup.py starts latent
    caching there); it may put the VAE to work at once (:func:`place_vae`); this function leaves it where that put it."""
    device = torch.device(device)
    options = from_args(NetworkOptions, args)
    check_levers(args, device)
    module = network_module.import_network_module(options.network_module)  # before the model loads: errors are fast
    for note in device_notices(args, device):
        logger.warning(note)
    base = load_base(args, script, load_device(args, device), vae_ready)
    base.check_clip_skip(args.clip_skip)
    if options.base_weights:
        network_module.merge_base_weights(module, options.base_weights, list(options.base_weights_multiplier or []),
                                          base.text_encoders, base.unet, base.vae, torch.float32, load_device(args, device))
    train_unet = not options.network_train_text_encoder_only
    train_te = not options.network_train_unet_only
    if not train_unet and not train_te:
        raise UserError("--network_train_unet_only and --network_train_text_encoder_only together train nothing; keep one")
    contract, kwargs = _make_network(args, options, base, module, train_unet, train_te)
    network = contract.network
    if not list(network.parameters()):
        raise UserError("the network has no modules to train (check --network_args block_dims / block_lr_zero_threshold)")

    weight_dtype = dtype_of(args.mixed_precision)
    vae_dtype = vae_placement(args, device)[1]
    for m in (base.unet, base.vae, *base.text_encoders):
        m.requires_grad_(False)
    if args.fp8_base and args.mixed_precision == "no":
        raise UserError("--fp8_base stores the UNet in fp8 and computes in fp16/bf16: add --mixed_precision bf16 (or fp16)")
    _move(base.unet, device, weight_dtype)
    if args.fp8_base or args.fp8_base_unet:  # text encoders stay in the compute dtype either way
        _to_fp8(base.unet)
    for te in base.text_encoders:
        _move(te, device, weight_dtype)
    _move(base.vae, device, vae_dtype)
    _set_attention(args, base, device)
    if args.gradient_checkpointing:
        base.unet.enable_gradient_checkpointing()
        if train_te:
            for te in base.text_encoders:
                enable_te_checkpointing(te)
        contract.enable_gradient_checkpointing()
    base.unet.train()
    for te in base.text_encoders:
        te.train(train_te)
    base.vae.eval()

    net_dtype = dtype_of("bf16" if args.full_bf16 else "fp16" if args.full_fp16 else "float")
    network.to(device, dtype=net_dtype)
    contract.prepare_grad_etc(network_module.text_encoders_for_module(base.text_encoders), base.unet)
    network.train()
    model = TrainModel(base, network, device, weight_dtype, vae_dtype, train_unet, train_te, kwargs, contract, options=options)
    apply_levers(args, model)  # channels_last, torch.compile: library/train/speed.py
    return model


def save_dtype_for(saving: SavingOptions) -> torch.dtype | None:
    """dtype of saved LoRA files: ``--save_precision``, else what the network trains in (None keeps it)."""
    if saving.save_precision:
        return dtype_of(saving.save_precision)
    return None
