"""Everything a run writes: LoRA files, states, sample images, the report — main process only.

Why: what is on disk is the user's work. Each write goes through the atomic helpers (temporary
name, then rename), old files are pruned only after the new one is complete, and the list of
checkpoints with their samples lives in the state so the report survives a resume.
"""

from __future__ import annotations

import logging
import os

import torch

from library.options.typed import SamplingOptions, SavingOptions
from library.train import checkpoints as ck
from library.train.metadata import checkpoint_metadata
from library.train.ownership import RUN_ID_KEY, prune_own
from library.train.report import write_report
from library.inference.prompts import read_prompt_file
from library.train.sampling import generate_samples

logger = logging.getLogger("lorasmith.train")


class RunOutputs:
    """Writes the run's files into ``saving.output_dir``; ``checkpoints`` is saved with each state."""

    def __init__(self, saving: SavingOptions, sampling: SamplingOptions, model, base_metadata: dict, save_dtype,
                 optimizer_info):
        self.saving, self.sampling = saving, sampling
        self.model = model
        self.base_metadata = base_metadata
        self.save_dtype = save_dtype
        self.optimizer_info = optimizer_info
        self.output_dir = saving.output_dir
        self.name = ck.last_name(saving.output_name)
        self.run_id = ""  # set by the Trainer: a new id, or the resumed state's
        self.checkpoints: list[dict] = []  # {"file", "epoch", "step", "samples"}
        self.last_samples: list[str] = []
        self.prompts = read_prompt_file(sampling.sample_prompts) if sampling.sample_prompts else []

    # --- LoRA files -----------------------------------------------------------------------
    def save_lora(self, stem: str, epoch: int, step: int, final: bool = False) -> str:
        os.makedirs(self.output_dir, exist_ok=True)
        path = os.path.join(self.output_dir, f"{stem}.safetensors")
        md = checkpoint_metadata(self.base_metadata, epoch, step, self.saving.metadata_title or stem,
                                 no_metadata=self.saving.no_metadata)
        md[RUN_ID_KEY] = self.run_id  # pruning deletes only files that carry this run's id
        self.optimizer_info.eval()
        try:
            self.model.contract.save_weights(path, self.save_dtype, md)
        finally:
            self.optimizer_info.train()
        self.checkpoints = [c for c in self.checkpoints if c["file"] != path]
        self.checkpoints.append({"file": path, "epoch": epoch, "step": step, "samples": list(self.last_samples)})
        logger.info("saved %s", path)
        return path

    def _below(self, kind: str, number: int, keep) -> int:
        """kohya's rule: steps keep files of the last ``keep`` steps; epochs the last ``keep`` saved epochs."""
        if kind == "step":
            return number - keep
        return number - (self.saving.save_every_n_epochs or 1) * keep + 1

    def prune_loras(self, kind: str, number: int) -> None:
        keep = self.saving.save_last_n_epochs if kind == "epoch" else self.saving.save_last_n_steps
        if not keep:
            return
        removed = prune_own(self.output_dir, self.saving.output_name, kind, self._below(kind, number, keep), self.run_id)
        if removed:
            self.checkpoints = [c for c in self.checkpoints if c["file"] not in removed]

    # --- states -----------------------------------------------------------------------------
    def save_state(self, stem: str, optimizer, scheduler, train_state: dict) -> str:
        path = os.path.join(self.output_dir, ck.state_dir_name(stem))
        self.optimizer_info.eval()
        try:
            sd = {k: v for k, v in self.model.network.state_dict().items()}
            ck.save_state(path, sd, optimizer, scheduler, {**train_state, "checkpoints": self.checkpoints})
        finally:
            self.optimizer_info.train()
        logger.info("saved state %s", path)
        return path

    def prune_states(self, kind: str, number: int) -> None:
        keep = self.saving.save_last_n_epochs_state if kind == "epoch" else self.saving.save_last_n_steps_state
        if keep is None:  # kohya: the LoRA's keep count also applies to states unless set apart
            keep = self.saving.save_last_n_epochs if kind == "epoch" else self.saving.save_last_n_steps
        if keep:
            prune_own(self.output_dir, self.saving.output_name, kind, self._below(kind, number, keep), self.run_id, state=True)

    # --- samples and report -----------------------------------------------------------------
    def samples(self, stem: str, autocast) -> list[str]:
        if not self.prompts:
            return []
        net = self.model.network
        was = net.training
        net.eval()
        self.optimizer_info.eval()
        base = self.model.base
        conditioning = self.model.sample_conditioning  # set when the text encoders were freed (memory.py)
        kept = (base.vae,) if conditioning is not None else (base.vae, *base.text_encoders)
        parked = [m for m in kept if next(m.parameters()).device != self.model.device]
        for m in parked:  # the caches moved them to the CPU; the pipeline needs them on the device
            m.to(self.model.device)
        try:
            with torch.no_grad(), autocast():
                paths = generate_samples(
                    self.model.base, self.prompts, os.path.join(self.output_dir, "sample"), stem, self.sampling,
                    conditioning=conditioning,
                )
        finally:
            for m in parked:
                m.to("cpu")
            net.train(was)
            self.optimizer_info.train()
        self.last_samples = paths
        if self.checkpoints and not self.checkpoints[-1]["samples"]:
            self.checkpoints[-1]["samples"] = list(paths)
        return paths

    def report(self, losses: list[float], validation: list[dict] | None = None) -> str:
        try:
            return write_report(self.output_dir, self.name, losses, self.checkpoints, validation)
        except OSError as e:  # a report is a convenience; never let it stop training
            logger.warning("could not write the report: %s", e)
            return ""
