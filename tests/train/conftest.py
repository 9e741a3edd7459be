"""Helpers for end-to-end training tests (the tiny_ckpt and demo_data fixtures are suite-wide, tests/conftest.py)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def base_values(ckpt, data, out, **extra):
    """Options for a short, deterministic CPU run."""
    values = dict(
        pretrained_model_name_or_path=ckpt, train_data_dir=str(data / "img"), resolution=64, caption_extension=".txt",
        network_dim=8, network_alpha=8, learning_rate=5e-3, max_train_steps=8, train_batch_size=2, seed=7,
        output_dir=str(out), output_name="t", max_data_loader_n_workers=0, optimizer_type="AdamW",
    )
    values.update(extra)
    return values
