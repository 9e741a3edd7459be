"""One command, one table: LoRA training it/s and peak memory for each GPU lever, on the real trainer's set-up.

Every row parses its options with the trainer's own parser (library.options.parse_args), loads the base
with the trainer's loader (library.train.setup_model.load_for_training: precision, fp8, attention,
gradient checkpointing exactly as a run sets them), builds the optimizer by its kohya name and times
``batch_loss + backward + optimizer step`` on cached latents. Rows differ from ``base`` in one lever:

    base          --mixed_precision bf16, SDPA attention, LoRA on UNet + text encoders, AdamW
    fp16          --mixed_precision fp16
    xformers      --xformers
    grad_ckpt     --gradient_checkpointing
    cached_te     --cache_text_encoder_outputs --network_train_unet_only (text encoders never run)
    fp8_base      --fp8_base
    adamw8bit     --optimizer_type AdamW8bit
    all_low_mem   grad_ckpt + cached_te + fp8_base + AdamW8bit
    compiled      --torch_compile (inductor; the compile time falls in the warm-up steps)

    .venv/bin/python bench/gpu_table.py                      # SD1.5 512 px and SDXL 1024 px on CUDA
    .venv/bin/python bench/gpu_table.py --family sdxl --steps 10
    .venv/bin/python bench/gpu_table.py --dry_run            # tiny model on the CPU: checks the harness (CI)

Without ``--file`` a random full-size checkpoint of each family is written once to output/bench/ (its
weights do not change the speed). Peak memory is ``torch.cuda.max_memory_allocated`` (weights included).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = {
    "base": [],
    "fp16": ["--mixed_precision", "fp16"],
    "xformers": ["--xformers"],
    "grad_ckpt": ["--gradient_checkpointing"],
    "cached_te": ["--cache_text_encoder_outputs", "--network_train_unet_only"],
    "fp8_base": ["--fp8_base"],
    "adamw8bit": ["--optimizer_type", "AdamW8bit"],
    "all_low_mem": ["--gradient_checkpointing", "--cache_text_encoder_outputs", "--network_train_unet_only",
                    "--fp8_base", "--optimizer_type", "AdamW8bit"],
    "compiled": ["--torch_compile"],
}
CUDA_ONLY = {"fp16": "fp16 autocast", "xformers": "xformers kernels", "fp8_base": "fp8 weights with bf16 compute",
             "all_low_mem": "fp8 weights with bf16 compute", "compiled": "inductor compiles for minutes on a CPU"}
SDXL_ONLY = {"cached_te", "all_low_mem"}  # --cache_text_encoder_outputs is an sdxl_train_network.py option
RESOLUTION = {"sd1": 512, "sd2": 768, "sdxl": 1024}
SCRIPT = {"sd1": "train_network", "sd2": "train_network", "sdxl": "sdxl_train_network"}


def row_argv(name: str, ckpt: str, data_dir: str, out_dir: str, rank: int, dry_run: bool, resolution: int) -> list[str]:
    argv = ["--pretrained_model_name_or_path", ckpt, "--train_data_dir", data_dir, "--output_dir", out_dir,
            "--resolution", str(resolution),
            "--network_module", "networks.lora", "--network_dim", str(rank), "--network_alpha", str(rank),
            "--mixed_precision", "no" if dry_run else "bf16", "--seed", "0"]
    return argv + ROWS[name]


def measure(name: str, argv: list[str], family: str, device: str, resolution: int, batch: int, steps: int) -> dict:
    import torch

    from library.options import parse_args
    from library.train.optimizers import build_optimizer
    from library.train.setup_model import load_for_training
    from library.train.step import StepConfig, batch_conditioning, batch_loss, loss_options, noise_options

    args = parse_args(argv, SCRIPT[family], check_files=False)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model = load_for_training(args, SCRIPT[family], device)
    dtype = model.weight_dtype
    autocast = (lambda: torch.autocast(device, dtype=dtype)) if dtype != torch.float32 else StepConfig.autocast
    cfg = StepConfig(noise_options(args), loss_options(args, model.base.v_parameterization),
                     clip_skip=None, max_token_length=None, autocast=autocast)
    h = resolution // 8
    size = torch.tensor([[resolution, resolution]] * batch)
    data = {"latents": torch.randn(batch, 4, h, h, generator=torch.Generator().manual_seed(0)),
            "captions": ["a photo of sks dog, detailed, high quality"] * batch, "loss_weights": torch.ones(batch),
            "original_sizes_hw": size, "crop_top_lefts": torch.zeros(batch, 2, dtype=torch.long),
            "target_sizes_hw": size}
    if args.cache_text_encoder_outputs:
        with torch.no_grad():
            cond = batch_conditioning(model, data, cfg)
        data["text_encoder_outputs"] = {"context": cond.context.detach(),
                                        **({"pooled": cond.pooled.detach()} if cond.pooled is not None else {})}
        for te in model.base.text_encoders:
            te.to("cpu")  # what the trainer does with cached outputs: the encoders leave the GPU
    opt = build_optimizer(args.optimizer_type, model.trainable_parameters(), args.learning_rate).optimizer

    def step():
        loss = batch_loss(model, data, cfg, torch.Generator().manual_seed(0))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(2 if steps > 1 else 1):  # warm-up: kernels chosen, allocator settled
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
    del model, opt
    gc.collect()
    return {"it_s": 1 / statistics.median(times), "peak_gib": peak}


def full_size_file(family: str) -> str:
    """A random full-size checkpoint of ``family`` in output/bench/, written once (fp16 to keep it small)."""
    path = os.path.join(ROOT, "output", "bench", f"full_{family}_fp16.safetensors")
    if not os.path.exists(path):
        import torch

        from library.models import assemble, build_models, full_size_configs, save_base_model

        os.makedirs(os.path.dirname(path), exist_ok=True)
        print(f"writing a random full-size {family} checkpoint to {path} (once)...", flush=True)
        configs = full_size_configs(family)
        save_base_model(assemble(configs, build_models(configs, device="cpu", seed=0)), path, dtype=torch.float16)
    return path


def tiny_file(folder: str, family: str) -> str:
    from tools.make_tiny_model import make_tiny_model

    return str(make_tiny_model(family, os.path.join(folder, f"tiny_{family}.safetensors")))


def table(families, device: str, steps: int, batch: int, rank: int, dry_run: bool, file: str | None, rows) -> list:
    import torch

    results = []
    data_dir = os.path.join(ROOT, "examples", "demo", "img")
    with tempfile.TemporaryDirectory() as tmp:
        for family in families:
            ckpt = file or (tiny_file(tmp, family) if dry_run else full_size_file(family))
            resolution = 64 if dry_run else RESOLUTION[family]
            for name in rows:
                line = {"family": family, "row": name, "resolution": resolution}
                if name in SDXL_ONLY and family != "sdxl":
                    line["skipped"] = "SDXL only (--cache_text_encoder_outputs)"
                elif device != "cuda" and name in CUDA_ONLY:
                    line["skipped"] = f"needs CUDA ({CUDA_ONLY[name]})"
                else:
                    argv = row_argv(name, ckpt, data_dir, os.path.join(tmp, "out"), rank, dry_run, resolution)
                    try:
                        line.update(measure(name, argv, family, device, resolution, batch, steps))
                    except torch.cuda.OutOfMemoryError:
                        line["skipped"] = "out of memory"
                        torch.cuda.empty_cache()
                    except Exception as e:  # noqa: BLE001 - one broken lever must not hide the others
                        line["skipped"] = f"failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
                results.append(line)
                print(format_line(line), flush=True)
    return results


def format_line(r: dict) -> str:
    head = f"{r['family']:5} {r['resolution']:5}px  {r['row']:12}"
    if "skipped" in r:
        return f"{head} skipped: {r['skipped']}"
    mem = f"{r['peak_gib']:7.2f} GiB" if r.get("peak_gib") is not None else "      n/a"
    return f"{head} {r['it_s']:7.3f} it/s  peak {mem}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", choices=("sd1", "sd2", "sdxl", "both"), default="both")
    ap.add_argument("--file", help="use this checkpoint instead of a random full-size one (one family)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps per row (after 2 warm-up steps)")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--rows", nargs="*", choices=sorted(ROWS), default=list(ROWS))
    ap.add_argument("--dry_run", action="store_true", help="tiny models on the CPU, fp32, one step: checks the harness")
    args = ap.parse_args(argv)
    import torch

    families = ("sd1", "sdxl") if args.family == "both" else (args.family,)
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or --dry_run to check the harness on the CPU", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name() if device == "cuda" else "CPU (dry run, tiny models)"
    print(f"# {name}; torch {torch.__version__}; batch {args.batch}; LoRA rank {args.rank}; "
          f"median of {1 if args.dry_run else args.steps} steps")
    results = table(families, device, 1 if args.dry_run else args.steps, args.batch, args.rank, args.dry_run,
                    args.file, args.rows)
    failed = [r for r in results if r.get("skipped", "").startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
