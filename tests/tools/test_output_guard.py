"""Every tool that writes refuses an output that is one of its inputs (however spelled: the same path,
a symlink, a hard link, a path with ``..``) and an existing file of another kind without --overwrite
(library/output_paths.py); the inputs are never touched."""

import os

import pytest

from library.models import load_base_model
from tools import convert_lora, extract_lora, gen_img, merge_lora, merge_models, resize_lora

from .lora_utils import make_lora


@pytest.fixture(scope="module")
def files(tiny_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("guard")
    ckpt = tiny_path("sd1")
    model = load_base_model(ckpt)
    lora = make_lora(model, root / "a.safetensors", seed=1, conv_dim=0)
    return root, str(ckpt), lora


def _spellings(path, tmp_path):
    """The same file four ways: itself, through '..', a symlink, a hard link."""
    sym, hard = tmp_path / "sym.safetensors", tmp_path / "hard.safetensors"
    os.symlink(path, sym)
    os.link(path, hard)
    folder = os.path.dirname(path)
    dotted = os.path.join(folder, "..", os.path.basename(folder), os.path.basename(path))
    return [path, dotted, str(sym), str(hard)]


def _tool_argv(tool, lora, ckpt, out):
    return {
        "resize": (resize_lora, ["--model", lora, "--save_to", out, "--new_rank", "2"]),
        "convert": (convert_lora, ["--input", lora, "--to", "diffusers", "--save_to", out]),
        "merge_lora": (merge_lora, ["--models", lora, lora, "--save_to", out]),
        "merge_into": (merge_lora, ["--models", lora, "--sd_model", ckpt, "--save_to", out]),
        "extract": (extract_lora, ["--model_org", ckpt, "--model_tuned", ckpt, "--save_to", out]),
        "merge_models": (merge_models, ["--models", ckpt, ckpt, "--save_to", out]),
    }[tool]


@pytest.mark.parametrize("tool, victim", [("resize", "lora"), ("convert", "lora"), ("merge_lora", "lora"),
                                          ("merge_into", "ckpt"), ("merge_into", "lora"), ("extract", "ckpt"),
                                          ("merge_models", "ckpt")])
def test_output_equal_to_an_input_is_refused_however_spelled(files, tmp_path, capsys, tool, victim):
    _, ckpt, lora = files
    target = lora if victim == "lora" else ckpt
    before = open(target, "rb").read()
    for out in _spellings(target, tmp_path):
        module, argv = _tool_argv(tool, lora, ckpt, out)
        assert module.main(argv) == 2, out
        err = capsys.readouterr().err
        assert "is one of the inputs" in err and "Traceback" not in err, err
    assert open(target, "rb").read() == before


@pytest.mark.parametrize("tool", ["resize", "merge_lora", "merge_models"])
def test_existing_file_of_another_kind_needs_overwrite(files, tmp_path, capsys, tool):
    _, ckpt, lora = files
    out = tmp_path / "notes.safetensors"
    out.write_text("my notes, not a model")
    module, argv = _tool_argv(tool, lora, ckpt, str(out))
    assert module.main(argv) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err, err
    assert out.read_text() == "my notes, not a model"
    assert module.main(argv + ["--overwrite"]) == 0
    assert out.read_bytes() != b"my notes, not a model"


def test_a_lora_is_not_written_over_a_checkpoint_but_over_a_lora(files, tmp_path, capsys):
    _, ckpt, lora = files
    model_copy = tmp_path / "model.safetensors"
    model_copy.write_bytes(open(ckpt, "rb").read())
    assert resize_lora.main(["--model", lora, "--save_to", str(model_copy), "--new_rank", "2"]) == 2
    assert "is a model checkpoint, not a LoRA" in capsys.readouterr().err
    assert model_copy.read_bytes() == open(ckpt, "rb").read()
    older = tmp_path / "older.safetensors"
    assert resize_lora.main(["--model", lora, "--save_to", str(older), "--new_rank", "3"]) == 0
    assert resize_lora.main(["--model", lora, "--save_to", str(older), "--new_rank", "2"]) == 0  # same kind: replaced


def test_written_files_follow_the_umask(files, tmp_path):
    _, _, lora = files
    old = os.umask(0o022)
    try:
        out = tmp_path / "r.safetensors"
        assert resize_lora.main(["--model", lora, "--save_to", str(out), "--new_rank", "2"]) == 0
    finally:
        os.umask(old)
    assert oct(os.stat(out).st_mode & 0o777) == oct(0o644)


def test_gen_img_outdir_that_is_an_input_is_refused(files, capsys):
    _, ckpt, lora = files
    for outdir in (ckpt, lora):
        assert gen_img.main(["--ckpt", ckpt, "--outdir", outdir, "--prompt", "a cat", "--network_weights", lora]) == 2
        assert "--outdir" in capsys.readouterr().err


def test_non_finite_weights_are_never_written(files, tmp_path, capsys):
    """A LoRA holding NaN (made by another program) merged: refused, nothing under the output name."""
    from safetensors.torch import load_file, save_file

    _, _, lora = files
    tensors = load_file(lora)
    first = next(k for k in tensors if k.endswith("lora_up.weight"))
    tensors[first][0, 0] = float("nan")
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad))
    out = tmp_path / "merged.safetensors"
    assert merge_lora.main(["--models", lora, str(bad), "--save_to", str(out)]) == 2
    err = capsys.readouterr().err
    assert "NaN or inf" in err and str(out) in err
    assert not out.exists() and not list(tmp_path.glob("*.tmp"))
