"""kohya's network-module contract: how the trainer talks to ``--network_module X``, whoever wrote X.

Why a module of its own: any module that follows sd-scripts' contract (``create_network``,
``create_network_from_weights``, and on the network ``apply_to``, ``prepare_optimizer_params``,
``save_weights`` ...; docs/networks.md) must train here — ours (networks.lora, .dylora, .lora_fa,
.oft) and others' (LyCORIS' ``lycoris.kohya``). The trainer calls only these methods, through the
``NetworkContract`` below, which is where the optional ones are looked up once, foreign quirks are
absorbed (a tuple or a list from ``prepare_optimizer_params``, ``load_weights`` taking only a path,
a non-atomic ``save_weights``), and a missing method becomes a clear message instead of a traceback.

What stays ours for every module: atomic LoRA files (the module writes a temporary ``.safetensors``
that is renamed into place), exact resume (the state holds the network's ``state_dict``, as
accelerate's state does in kohya), and HF-checkpoint module names for text encoders (``text_model.``
is put back for transformers v5's CLIPTextModel, so files keep the names ComfyUI maps).
"""

from __future__ import annotations

import importlib
import logging

import torch

from library import atomic
from library.errors import UserError
from library.options.definitions import OWN_NETWORK_ARG_KEYS
from library.options.kwargs import check_network_module

logger = logging.getLogger("lorasmith.train")

OWN_MODULES = tuple(OWN_NETWORK_ARG_KEYS)


def import_network_module(name: str):
    """Import ``--network_module``; it must at least have ``create_network``."""
    check_network_module(name)
    try:
        module = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - a third-party module may fail on import in any way
        raise UserError(f"--network_module {name}: cannot import it ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                        "check that its package is installed completely (the built-in one is networks.lora)") from None
    if not callable(getattr(module, "create_network", None)):
        raise UserError(f"--network_module {name}: the module has no create_network(); it does not follow kohya's "
                        "network-module contract (use networks.lora)")
    return module


class _HFTextModelNames(torch.nn.Module):
    """A CLIPTextModel seen with the ``text_model.`` level HF checkpoints have (transformers v5 drops it).

    kohya names text-encoder modules by their path (``lora_te_text_model_encoder_layers_0_...``);
    a module that names them itself (LyCORIS) would otherwise write names no loader maps.
    Attributes the view does not have come from the wrapped model.
    """

    def __init__(self, text_encoder: torch.nn.Module):
        super().__init__()
        self.text_model = text_encoder

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["text_model"], name)

    def forward(self, *args, **kwargs):
        return self.text_model(*args, **kwargs)


def text_encoders_for_module(text_encoders: list) -> object:
    """kohya passes one text encoder for SD1/SD2 and a list for SDXL; each named as in HF checkpoints."""
    named = [te if te is None or hasattr(te, "text_model") else _HFTextModelNames(te) for te in text_encoders]
    return named if len(named) > 1 else named[0]


def _as_groups(result) -> tuple[list, list | None]:
    """``prepare_optimizer_params`` may return groups, (groups, descriptions) or plain parameters."""
    groups, descriptions = (result[0], result[1]) if isinstance(result, tuple) else (result, None)
    groups = list(groups)
    if groups and isinstance(groups[0], torch.Tensor):
        groups = [{"params": groups}]
    groups = [{**g, "params": list(g["params"])} for g in groups]
    return groups, (list(descriptions) if descriptions is not None else None)


class NetworkContract:
    """The trainer's view of one network: kohya's calls, looked up once, with clear errors for missing ones."""

    def __init__(self, name: str, module, network: torch.nn.Module):
        if not isinstance(network, torch.nn.Module):
            raise UserError(f"--network_module {name}: create_network returned {type(network).__name__}, not a torch "
                            "module; the module does not follow kohya's network-module contract")
        self.name, self.module, self.network = name, module, network
        self.kohya_text_encoders = None  # what create_network got (one, or a list for SDXL): passed to the hooks
        self.own = name in OWN_MODULES
        for required in ("apply_to", "prepare_optimizer_params", "save_weights"):
            if not callable(getattr(network, required, None)):
                raise UserError(f"--network_module {name}: its network has no {required}(), which kohya's trainer "
                                "calls; the module does not follow the network-module contract")
        self._optional = {n: getattr(network, n, None) for n in (
            "prepare_network", "prepare_grad_etc", "on_epoch_start", "on_step_start", "enable_gradient_checkpointing",
            "apply_max_norm_regularization", "prepare_optimizer_params_with_multiple_te_lrs", "load_weights")}

    def _call(self, method: str, *args):
        fn = self._optional.get(method)
        return fn(*args) if fn is not None else None

    # --- setup -----------------------------------------------------------------------------
    def prepare(self, args, options) -> None:
        """kohya: ``prepare_network(args)`` (the whole namespace, as kohya passes it) when present;
        ``options.scale_weight_norms`` (a NetworkOptions) needs max-norm support."""
        self._call("prepare_network", args)
        if options.scale_weight_norms and self._optional["apply_max_norm_regularization"] is None:
            raise UserError(f"--scale_weight_norms: the network of {self.name} has no apply_max_norm_regularization(), "
                            "so max-norm regularisation cannot be applied; leave --scale_weight_norms out")

    def apply_to(self, text_encoders, unet, train_te: bool, train_unet: bool) -> None:
        self.network.apply_to(text_encoders, unet, train_te, train_unet)

    def load_weights(self, file_or_sd):
        """``--network_weights`` (a path) or a resume state (a dict of the network's ``state_dict``)."""
        if isinstance(file_or_sd, dict):
            return self.load_state(file_or_sd)
        if self._optional["load_weights"] is None:
            raise UserError(f"--network_weights: the network of {self.name} has no load_weights(); leave it out")
        if self.own:  # ours check the file against the model; kohya's lora loads leniently (strict=False)
            return self.network.load_weights(file_or_sd, strict=False)
        return self.network.load_weights(file_or_sd)

    def load_state(self, weights: dict) -> dict:
        """Resume: every tensor of the saved ``state_dict`` back in place (strict: a resume must be exact)."""
        if self.own:
            return self.network.load_weights(weights)
        own = self.network.state_dict()
        bad = sorted(set(own) ^ set(weights))[:3]
        if bad:
            raise UserError(f"--resume: the saved network state does not fit {self.name}'s network (e.g. {bad[0]}); "
                            "resume with the same --network_module, --network_dim and --network_args")
        self.network.load_state_dict(weights, strict=True)
        return {"loaded": len(weights), "missing": []}

    def enable_gradient_checkpointing(self) -> None:
        self._call("enable_gradient_checkpointing")

    def prepare_grad_etc(self, text_encoders, unet) -> None:
        self._call("prepare_grad_etc", text_encoders, unet)

    # --- training ----------------------------------------------------------------------------
    def optimizer_params(self, text_encoder_lr, unet_lr, default_lr) -> tuple[list, list]:
        """(param groups, descriptions) as kohya gets them; descriptions default to ``group<i>``."""
        multiple = self._optional["prepare_optimizer_params_with_multiple_te_lrs"]
        if multiple is not None:
            result = multiple(text_encoder_lr, unet_lr, default_lr)
        else:
            te_lr = text_encoder_lr
            if isinstance(te_lr, (list, tuple)) and not self.own:  # kohya passes one lr to such modules
                te_lr = te_lr[0] if te_lr else None
            try:
                result = self.network.prepare_optimizer_params(te_lr, unet_lr, default_lr)
            except TypeError:  # old modules take (text_encoder_lr, unet_lr), as kohya allows
                result = self.network.prepare_optimizer_params(te_lr, unet_lr)
        groups, descriptions = _as_groups(result)
        groups = [g for g in groups if g["params"]]
        if descriptions is None or len(descriptions) != len(groups):
            descriptions = [f"group{i}" for i in range(len(groups))]
        return groups, [d if d else f"group{i}" for i, d in enumerate(descriptions)]

    def on_epoch_start(self, text_encoders, unet) -> None:
        """kohya's networks call ``train()`` here; a module without the hook gets that."""
        if self._optional["on_epoch_start"] is None:
            self.network.train()
        else:
            self._optional["on_epoch_start"](self._tes(text_encoders), unet)

    def on_step_start(self, text_encoders, unet) -> None:
        self._call("on_step_start", self._tes(text_encoders), unet)

    def _tes(self, text_encoders):
        return self.kohya_text_encoders if self.kohya_text_encoders is not None else text_encoders_for_module(text_encoders)

    def max_norm(self, value: float, device):
        return self.network.apply_max_norm_regularization(value, device)

    # --- files -------------------------------------------------------------------------------
    def save_weights(self, path: str, dtype, metadata: dict) -> None:
        """Our modules write atomically themselves; others write a temporary ``.safetensors`` renamed into place."""
        if self.own:
            self.network.save_weights(path, dtype, metadata)
            return
        with atomic.atomic_path(path, make_folder=False, suffix=".safetensors") as tmp:  # format by extension
            self.network.save_weights(tmp, dtype, dict(metadata))


def create(options, module, text_encoders: list, unet, vae, kwargs: dict) -> NetworkContract:
    """``create_network`` (or ``create_network_from_weights`` with ``--dim_from_weights``), as kohya calls them;
    ``options`` is the run's ``NetworkOptions`` (library/options/typed.py)."""
    tes = text_encoders_for_module(text_encoders)
    try:
        if options.dim_from_weights:
            network, _ = module.create_network_from_weights(1.0, options.network_weights, vae, tes, unet, **kwargs)
        else:
            call_kwargs = dict(kwargs)
            if options.network_module not in OWN_MODULES:  # kohya's workaround for LyCORIS (ours read neuron_dropout)
                call_kwargs.setdefault("dropout", options.network_dropout)
            network = module.create_network(1.0, options.network_dim, options.network_alpha, vae, tes, unet,
                                            neuron_dropout=options.network_dropout, **call_kwargs)
    except (AssertionError, ValueError, KeyError, TypeError) as e:
        if options.network_module in OWN_MODULES:
            raise
        raise UserError(_creation_error(options, kwargs, e)) from None
    contract = NetworkContract(options.network_module, module, network)
    contract.kohya_text_encoders = tes
    if not contract.own:
        logger.info("%s is not one of lorasmith's network modules: its network_args are passed to it unchecked, "
                    "LoRA+/block learning rates work only if it implements them, and the file format is its own",
                    options.network_module)
    return contract


def _creation_error(options, kwargs: dict, error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    hint = "check --network_args against that module's documentation"
    if options.network_module.startswith("lycoris") and "duplicated lora name" in text and "time_embedding" in text:
        hint = ("LyCORIS' default preset (full) targets the time embedding twice on diffusers UNets; "
                "add preset=attn-mlp (or unet-transformer-only) to --network_args")
    given = " ".join(f"{k}={v}" for k, v in kwargs.items()) or "none"
    return (f"--network_module {options.network_module} could not create its network (network_args: {given}): "
            f"{type(error).__name__}: {text}; {hint}")


def merge_base_weights(module, paths, multipliers, text_encoders: list, unet, vae, dtype, device) -> None:
    """``--base_weights``: kohya's ``create_network_from_weights(..., for_inference=True)`` then ``merge_to``."""
    tes = text_encoders_for_module(text_encoders)
    for i, path in enumerate(paths):
        mult = float(multipliers[i]) if i < len(multipliers) else 1.0
        net, sd = module.create_network_from_weights(mult, path, vae, tes, unet, for_inference=True)
        net.merge_to(tes, unet, sd, dtype, device)
        logger.info("merged %s into the base model (multiplier %s)", path, mult)
