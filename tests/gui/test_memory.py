"""The memory estimate (library/train/memory_estimate.py) and the Configure page's /api/memory.

The parameter counts read from the safetensors header must equal the loaded model's, and the LoRA count
the parameters of the network the trainer builds; the parts follow the options (precision, optimizer,
checkpointing, cached latents, resolution, batch) the way a run uses memory.
"""

import pytest

from library.errors import UserError
from library.train.memory_estimate import count_parameters, estimate
from tests.gui.conftest import make_client, run_values


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_counts_match_the_loaded_model_and_the_trained_network(tiny_ckpt, family):
    from library.models import load_base_model
    from networks.lora import create_network

    path = tiny_ckpt(family)
    counts = count_parameters(path)
    model = load_base_model(path)
    numel = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert counts["family"] == family
    assert counts["unet"] == numel(model.unet) and counts["vae"] == numel(model.vae)
    assert counts["text_encoders"] == sum(numel(te) for te in model.text_encoders)
    te = model.text_encoders if family == "sdxl" else model.text_encoders[0]
    network = create_network(1.0, 4, 4, model.vae, te, model.unet)
    assert 4 * (counts["lora_unet_per_rank"] + counts["lora_te_per_rank"]) == numel(network)
    unet_only = estimate({"pretrained_model_name_or_path": path, "network_dim": 4, "network_train_unet_only": True})
    assert unet_only["lora_parameters"] == sum(p.numel() for n, p in network.named_parameters() if "lora_unet" in n)


def test_the_parts_follow_the_options(tiny_ckpt):
    base = {"pretrained_model_name_or_path": tiny_ckpt("sd1"), "network_dim": 8, "resolution": "64",
            "train_batch_size": 1, "optimizer_type": "AdamW"}
    plain = estimate(base)
    parts = plain["parts"]
    assert plain["total_bytes"] == sum(parts.values())
    assert parts["LoRA weights + gradients"] == plain["lora_parameters"] * 8 == parts["optimizer state"]  # AdamW: 2 fp32 states
    assert estimate({**base, "optimizer_type": "AdamW8bit"})["parts"]["optimizer state"] == plain["lora_parameters"] * 2
    half = estimate({**base, "mixed_precision": "bf16"})["parts"]
    assert half["model weights"] * 2 == parts["model weights"] and half["activations"] * 2 == pytest.approx(parts["activations"], rel=1e-6)
    big = estimate({**base, "resolution": "128", "train_batch_size": 2})["parts"]["activations"]
    assert big == pytest.approx(parts["activations"] * 4 * 2, rel=1e-6)
    ckpt = estimate({**base, "gradient_checkpointing": True})["parts"]["activations"]
    assert ckpt < parts["activations"] / 4
    cached = estimate({**base, "cache_latents": True})["parts"]["model weights"]
    assert cached == parts["model weights"] - count_parameters(base["pretrained_model_name_or_path"])["vae"] * 4
    assert estimate({**base, "network_dim": 16})["lora_parameters"] == 2 * plain["lora_parameters"]


def test_api_memory_on_the_configure_page(gui_root):
    client, _ = make_client(gui_root)
    r = client.post("/api/memory", json={"values": run_values(gradient_checkpointing=True)})
    assert r.status_code == 200, r.text
    est = r.json()
    assert est["family"] == "sd1" and est["resolution"] == [64, 64] and est["batch"] == 2
    assert est["total_bytes"] == sum(est["parts"].values()) and est["lora_parameters"] > 0
    (gui_root / "not_a_model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    bad = client.post("/api/memory", json={"values": run_values(pretrained_model_name_or_path="not_a_model.safetensors")})
    assert bad.status_code == 400 and "not_a_model.safetensors" in bad.json()["error"]
    outside = client.post("/api/memory", json={"values": run_values(pretrained_model_name_or_path="/etc/passwd")})
    assert outside.status_code == 400 and outside.json()["error"].startswith("pretrained_model_name_or_path: ")


def test_a_folder_model_is_refused_with_a_reason(tmp_path):
    with pytest.raises(UserError, match="single-file .safetensors"):
        count_parameters(tmp_path)
