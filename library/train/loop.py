"""The training loop: epochs of (micro-batch -> loss -> backward), optimizer steps, saves, samples.

Built on accelerate (mixed precision, gradient scaling, trackers, processes). Gradients of the few
LoRA parameters are averaged across processes with one ``accelerator.reduce`` per optimizer step,
so the frozen multi-GB base never needs a DDP wrapper.

Determinism: before each micro-batch the RNGs are seeded from (seed, epoch, position, rank), the
data order comes from (seed, epoch), and a state is written only at optimizer-step boundaries with
the data position. A resumed run therefore repeats exactly what the uninterrupted one would do.

Exit codes (entry.py): 0 done, 2 user error, 3 non-finite loss stop, 130 interrupted (Ctrl-C),
143 terminated (SIGTERM) — both after saving a resumable state and a LoRA (library/train/stopping.py).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time

import torch
from tqdm import tqdm

from library.errors import UserError
from library.train import checkpoints as ck
from library.train.intervals import (epochs_between_saves, samples_due_after_epoch, samples_due_after_step,
                                     samples_due_at_end)
from library.train.tracking import init_trackers
from library.train import stopping
from library.train.ownership import new_run_id
from library.train.run_settings import check_resume_settings, run_settings
from library.train import kohya_state
from library.train.run_folder import poll_controls
from library.train.optimizer_logs import current_lrs
from library.data.dataset import make_dataloader
from library.train.step import batch_loss

logger = logging.getLogger("lorasmith.train")


class NonFiniteLoss(UserError):
    """The loss became NaN/inf and --nonfinite_loss stop is in force."""


class Interrupted(Exception):
    """Ctrl-C, SIGTERM or a stop request: a state and a LoRA were saved; ``state_dir`` resumes the run."""

    def __init__(self, state_dir: str, lora: str, reason: str = "Ctrl-C"):
        super().__init__(state_dir)
        self.state_dir, self.lora, self.reason = state_dir, lora, reason


def step_seed(seed: int, epoch: int, position: int, rank: int) -> int:
    """A 63-bit seed for one micro-batch, independent of how the run got there."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{position}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Trainer:
    """One run. ``run()`` trains to the end (or raises Interrupted / NonFiniteLoss)."""

    def __init__(self, args, accelerator, model, dataset, step_cfg, optimization, outputs, run_folder, stop_flag):
        """Assemble the built parts (library/train/run_parts.py); reads and writes no file."""
        self.args, self.acc, self.model, self.dataset, self.cfg = args, accelerator, model, dataset, step_cfg
        self.stop_flag = stop_flag  # callable -> bool: Ctrl-C seen
        self.rank, self.world = accelerator.process_index, accelerator.num_processes
        self.accum = max(1, args.gradient_accumulation_steps)
        self.plan, self.opt_info, self.scheduler = optimization.plan, optimization.opt_info, optimization.scheduler
        self.optimizer = accelerator.prepare(self.opt_info.optimizer)  # gradient scaling for fp16
        self.params = [p for g in self.opt_info.optimizer.param_groups for p in g["params"]]
        self.outputs = outputs
        self.saving, self.sampling = outputs.saving, outputs.sampling  # typed options (library/options/typed.py)
        self.name = self.outputs.name
        self.global_step, self.epoch, self.position = 0, 1, 0
        self.losses: list[float] = []
        self.fp = run_settings(args, model, self.plan, self.world, dataset)  # what a resume must match
        self.script = "train_network"  # entry.train sets the real one; states remember it
        self.run_id = self.outputs.run_id = new_run_id()  # a resume adopts the state's
        self.seed = int(args.seed or 0)
        self.skipped_in_row = 0
        self._last_sampled = -1
        self.loader = None
        self.progress_callback = None  # (step, total, loss) -> None, e.g. ComfyUI's progress bar
        self.stop_cause = None  # what the progress callback raised: a host's Cancel, handled like Ctrl-C
        self.validation = None  # a validation.Validation when images are held out (--validation_split)
        self.run_folder = run_folder  # status/metrics/controls

    # --- state ------------------------------------------------------------------------------
    def resume(self, path: str) -> None:
        path = ck.resolve_resume(path, self.saving.output_name, self.script)  # a state, or the folder's newest of ours
        if kohya_state.is_kohya_state(path):  # written by kohya's sd-scripts: what carries over, library/train/kohya_state.py
            self.global_step, self.epoch, self.position = kohya_state.load_kohya_state(
                path, self.model.network, self.opt_info.optimizer, self.scheduler, self.plan, self.accum)
            return
        state = ck.read_train_state(path)
        changed = check_resume_settings(path, state.get("fingerprint", {}), self.fp, self.saving.resume_with_changes)
        if changed:
            logger.warning("resuming with changed settings (--resume_with_changes): %s", ", ".join(changed))
        ck.load_state(path, self.model.contract, self.opt_info.optimizer, self.scheduler)
        self.run_id = self.outputs.run_id = state.get("run_id") or self.run_id  # the resumed run's files stay its own
        self.global_step, self.epoch, self.position = state["global_step"], state["epoch"], state["position"]
        self.losses = list(state.get("losses", []))
        if self.validation is not None:
            self.validation.history = list(state.get("validation", []))
        self.outputs.checkpoints = list(state.get("checkpoints", []))
        if state.get("scaler") and self.acc.scaler is not None:
            self.acc.scaler.load_state_dict(state["scaler"])
        if ck.epoch_finished(state, self.plan.micro_per_rank):
            self.epoch, self.position = self.epoch + 1, 0
        logger.info("resumed from %s at step %d (epoch %d, batch %d)", path, self.global_step, self.epoch, self.position)

    def _train_state(self) -> dict:
        return {
            "global_step": self.global_step, "epoch": self.epoch, "position": self.position, "losses": self.losses,
            "epoch_finished": self.position >= self.plan.micro_per_rank,  # resume starts the next epoch
            "fingerprint": self.fp, "scaler": self.acc.scaler.state_dict() if self.acc.scaler is not None else None,
            "max_train_steps": self.plan.max_train_steps, "run_id": self.run_id, "script": self.script,
            "validation": self.validation.history if self.validation is not None else [],
        }

    def _save(self, stem: str, kind: str | None, with_state: bool, final: bool = False) -> str:
        """LoRA (+ state) under ``stem``, on the main process; then prune this run's older ones of ``kind``."""
        path = ""
        if self.acc.is_main_process:
            path = self.outputs.save_lora(stem, self.epoch, self.global_step, final=final)
            if with_state:
                self.outputs.save_state(stem, self.optimizer, self.scheduler, self._train_state())
            if kind:
                number = self.epoch if kind == "epoch" else self.global_step
                self.outputs.prune_loras(kind, number)
                if with_state:
                    self.outputs.prune_states(kind, number)
            self.outputs.report(self.losses, self.validation.history if self.validation is not None else None)
        self.acc.wait_for_everyone()
        return path

    # --- the run ------------------------------------------------------------------------------
    def run(self) -> str:
        args, plan = self.args, self.plan
        init_trackers(self.acc, args)
        bar = tqdm(total=plan.max_train_steps, initial=self.global_step, desc="steps", smoothing=0.1,
                   disable=not self.acc.is_local_main_process, dynamic_ncols=True)
        if self.sampling.sample_at_first and self.global_step == 0:
            self._samples(f"{self.name}_000000")
        self.opt_info.train()
        self.run_folder.training(self.global_step, plan.max_train_steps, self.epoch, plan.num_epochs)
        try:
            while self.global_step < plan.max_train_steps and self.epoch <= plan.num_epochs:
                self._run_epoch(bar)
                if self.global_step >= plan.max_train_steps:
                    break
                self.epoch, self.position = self.epoch + 1, 0
        finally:
            bar.close()
            self.run_folder.record_validation(self.validation.history if self.validation is not None else [])
            self.run_folder.update(force=True)  # the throttled status gets the last step
        if samples_due_at_end(self.sampling, self.epoch, self.global_step) and self._last_sampled != self.global_step:
            self._samples(f"{self.name}_{self.global_step:06d}")  # kohya's rule (library/train/intervals.py)
        final = self._save(self.name, None, bool(self.saving.save_state_on_train_end or self.saving.save_state), final=True)
        self.acc.end_training()
        return final

    def _run_epoch(self, bar) -> None:
        args, plan = self.args, self.plan
        ds = self.dataset
        ds.set_epoch(self.epoch)
        self.model.contract.on_epoch_start(self.model.text_encoders, self.model.base.unet)
        if self.loader is None:
            workers = min(args.max_data_loader_n_workers or 0, os.cpu_count() or 1)
            self.loader = make_dataloader(ds, workers, bool(args.persistent_data_loader_workers), rank=self.rank, world=self.world)
        loader = self.loader
        loader.sampler.skip = self.position
        epoch_losses: list[float] = []
        window_loss, window_n, window_bad = 0.0, 0, False
        finished_epoch = True
        for batch in loader:
            pos = self.position
            torch.manual_seed(step_seed(self.seed, self.epoch, pos, self.rank))
            gen = torch.Generator("cpu").manual_seed(step_seed(self.seed, self.epoch, pos, self.rank) ^ 1)
            self.model.contract.on_step_start(self.model.text_encoders, self.model.base.unet)
            items: list = []  # per-image losses, for the run folder's item_losses.jsonl (the GUI's outliers)
            loss = batch_loss(self.model, batch, self.cfg, gen, items=items)
            self.run_folder.record_items(self.global_step + 1, batch.get("image_keys"), items)
            bad = not bool(torch.isfinite(loss))
            if self.world > 1:
                bad = bool(self.acc.reduce(torch.tensor(float(bad), device=self.acc.device), "max") > 0)
            if bad:
                window_bad = True
                self.optimizer.zero_grad(set_to_none=True)
            elif not window_bad:
                self.acc.backward(loss / self.accum)
                window_loss += float(loss.detach())
                window_n += 1
            self.position += 1
            if self.position % self.accum and self.position < plan.micro_per_rank:
                continue
            self.run_folder.flush_items(self.acc)  # the step's per-image losses, from every process
            self._optimizer_step(window_bad, window_loss / max(window_n, 1), epoch_losses, bar)
            if self.validation is not None:  # before any save: a state written now resumes after it
                self.validation.after_step(self.global_step, self.epoch, sum(self.losses[-100:]) / max(len(self.losses[-100:]), 1))
            window_loss, window_n, window_bad = 0.0, 0, False
            if self.global_step >= plan.max_train_steps:
                finished_epoch = False  # the final save follows
                self._save_on_step_interval()  # kohya: the final step gets its step file too
                break
            self._after_step()
        if epoch_losses and args.log_with:
            self.acc.log({"loss/epoch": sum(epoch_losses) / len(epoch_losses)}, step=self.epoch)
        if self.validation is not None:
            self.validation.after_epoch(self.global_step, self.epoch, epoch_losses)
        if finished_epoch:
            self._after_epoch()

    def _optimizer_step(self, bad: bool, loss_value: float, epoch_losses: list, bar) -> None:
        args = self.args
        self.global_step += 1
        if bad:
            self._non_finite()
            return
        self.skipped_in_row = 0
        if self.world > 1:
            self._average_gradients()
        if args.max_grad_norm and args.max_grad_norm > 0:
            self.acc.clip_grad_norm_(self.params, args.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        logs = {}
        if self.model.options.scale_weight_norms:
            scaled, mean_norm, max_norm = self.model.contract.max_norm(self.model.options.scale_weight_norms, self.acc.device)
            logs.update({"max_norm/keys_scaled": scaled, "max_norm/average_key_norm": mean_norm, "max_norm/max_key_norm": max_norm})
        if self.world > 1:
            loss_value = float(self.acc.reduce(torch.tensor(loss_value, device=self.acc.device), "mean"))
        self.losses.append(loss_value)
        epoch_losses.append(loss_value)
        average = sum(self.losses[-100:]) / len(self.losses[-100:])
        lrs = current_lrs(self.opt_info, self.scheduler)
        bar.update(1)
        bar.set_postfix({"loss": f"{average:.4f}", "lr": f"{next(iter(lrs.values()), 0):.2e}"}, refresh=False)
        self.run_folder.record_step(self.global_step, self.plan.max_train_steps, self.epoch, loss_value, lrs, logs)
        if self.progress_callback is not None:
            try:
                self.progress_callback(self.global_step, self.plan.max_train_steps, loss_value)
            except Exception as e:  # ComfyUI's Cancel raises from its progress hook: save, then stop
                self.stop_cause = e
        if args.log_with:
            self.acc.log({"loss/current": loss_value, "loss/average": average, **lrs, **logs}, step=self.global_step)

    def _average_gradients(self) -> None:
        """One all-reduce of every LoRA gradient (flattened), averaged over processes."""
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        flat = torch.cat([g.reshape(-1).float() for g in grads])
        flat = self.acc.reduce(flat, "mean")
        offset = 0
        for p, g in zip(self.params, grads):
            n = g.numel()
            p.grad = flat[offset:offset + n].view_as(p).to(p.dtype)
            offset += n

    def _non_finite(self) -> None:
        msg = f"step {self.global_step} (epoch {self.epoch}): the loss is not finite (NaN or inf)"
        last = self.outputs.checkpoints[-1]["file"] if self.outputs.checkpoints else None
        if last and stopping.lora_intact(last):  # checked, never assumed
            kept = f"; the last saved LoRA {last} is intact"
        else:
            kept = f"; the last saved LoRA {last} could not be read back" if last else "; nothing was saved yet"
        if self.args.nonfinite_loss == "skip":
            self.skipped_in_row += 1
            logger.warning("%s; step skipped (--nonfinite_loss skip)", msg)
            if self.skipped_in_row >= 10:
                raise NonFiniteLoss(f"{msg}, 10 steps in a row{kept}. Lower --learning_rate, try --mixed_precision bf16 "
                                    "or --no_half_vae, and check the dataset/caches")
            return
        raise NonFiniteLoss(f"{msg}{kept}. Lower --learning_rate, try --mixed_precision bf16 or --no_half_vae, "
                            "or pass --nonfinite_loss skip to skip such steps")

    def _after_step(self) -> None:
        """Saves, samples and Ctrl-C handling at an optimizer-step boundary."""
        step = self.global_step
        stem = ck.step_name(self.saving.output_name, step)
        if samples_due_after_step(self.sampling, step):
            self._samples(f"{self.name}_{step:06d}")
        self._save_on_step_interval()
        self.run_folder.record_validation(self.validation.history if self.validation is not None else [])
        # save-now / sample-now / stop files (docs/gui.md) and any process's Ctrl-C/SIGTERM/Cancel, agreed by all
        wanted = poll_controls(self.run_folder, self.acc, self._interrupt_requested())
        if "sample-now" in wanted and self._last_sampled != step:
            self._samples(f"{self.name}_{step:06d}")
        if "save-now" in wanted:
            self._save(stem, None, True)
        stop_file = "stop" in wanted
        if "interrupt" in wanted or stop_file:
            with stopping.saving(self.stop_flag):  # a second signal now would only cut the save short
                lora = self._save(stem, None, True)
            reason = ("cancelled" if self.stop_cause is not None else
                      "stop file" if stop_file and not self.stop_flag() else stopping.reason_of(self.stop_flag))
            raise Interrupted(os.path.join(self.saving.output_dir, ck.state_dir_name(stem)), lora, reason) from self.stop_cause

    def _save_on_step_interval(self) -> None:
        saving, step = self.saving, self.global_step
        if saving.save_every_n_steps and step % saving.save_every_n_steps == 0:
            self._save(ck.step_name(saving.output_name, step), "step", bool(saving.save_state))

    def _after_epoch(self) -> None:
        saving, epoch = self.saving, self.epoch
        if epoch >= self.plan.num_epochs:
            return  # the final save follows
        if samples_due_after_epoch(self.sampling, epoch):
            self._samples(f"{self.name}_e{epoch:06d}")
        every = epochs_between_saves(saving, self.plan.num_epochs)
        if every and epoch % every == 0:  # all batches are done: the state says epoch_finished
            self._save(ck.epoch_name(saving.output_name, epoch), "epoch", bool(saving.save_state))

    def _interrupt_requested(self) -> bool:
        """This process's own stop request; poll_controls makes it every process's."""
        return self.stop_cause is not None or bool(self.stop_flag())

    def _samples(self, stem: str) -> None:
        self._last_sampled = self.global_step
        if self.acc.is_main_process:
            t = time.perf_counter()
            paths = self.outputs.samples(stem, self.acc.autocast)
            self.run_folder.record_samples(self.global_step, [p.prompt for p in self.outputs.prompts], paths)
            if paths:
                logger.info("%d sample images in %.1f s", len(paths), time.perf_counter() - t)
        self.acc.wait_for_everyone()


def total_steps_text(plan) -> str:
    return (f"{plan.batches_per_epoch} batches per epoch, {plan.steps_per_epoch} steps per epoch, "
            f"{plan.num_epochs} epochs, {plan.max_train_steps} steps")

