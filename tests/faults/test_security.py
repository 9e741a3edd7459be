"""No code path unpickles without weights_only=True, nothing trusts remote code, and names from options,
config files and prompt files cannot write outside the output folder (docs/reliability.md)."""

import ast
import os
from pathlib import Path

import pytest

from library.errors import UserError
from library.options import namespace_from, parse_args
from library.train.entry import EXIT_USER, main
from tests.faults.harness import REPO, cli_args

SKIP_DIRS = {".venv", "venv", "tests", ".git", "node_modules", "build", "dist", "__pycache__"}


def product_files():
    for root, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.startswith(".")]
        for name in files:
            if name.endswith(".py"):
                yield Path(root) / name


def _dotted(node) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword_is_true(call: ast.Call, name: str) -> bool:
    return any(k.arg == name and isinstance(k.value, ast.Constant) and k.value.value is True for k in call.keywords)


def unsafe_calls(source: str) -> list[str]:
    """torch.load without weights_only=True, any pickle/dill/joblib load, np.load(allow_pickle=True), trust_remote_code=True."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        line = f"line {node.lineno}: {name or 'call'}"
        if name.endswith("torch.load"):
            if not _keyword_is_true(node, "weights_only"):
                found.append(f"{line} without weights_only=True")
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load",
                      "cPickle.load", "cPickle.loads", "_pickle.load", "_pickle.loads"):
            found.append(line)
        elif name.endswith(("np.load", "numpy.load")) and _keyword_is_true(node, "allow_pickle"):
            found.append(f"{line} with allow_pickle=True")
        if _keyword_is_true(node, "trust_remote_code"):
            found.append(f"{line} with trust_remote_code=True")
    return found


def test_the_scanner_finds_what_it_looks_for():
    bad = ("import torch, pickle\ntorch.load(p)\ntorch.load(p, weights_only=False)\npickle.loads(b)\n"
           "x.from_pretrained(p, trust_remote_code=True)\nimport numpy as np\nnp.load(p, allow_pickle=True)\n")
    assert len(unsafe_calls(bad)) == 5
    assert unsafe_calls("import torch\ntorch.load(p, map_location='cpu', weights_only=True)\n") == []


def test_no_unsafe_unpickling_or_remote_code_in_the_product():
    problems = []
    files = list(product_files())
    assert any(f.name == "checkpoint_file.py" for f in files)  # the scan sees the product
    for path in files:
        source = path.read_text(encoding="utf-8")
        problems += [f"{path.relative_to(REPO)} {p}" for p in unsafe_calls(source)]
        if "trust_remote_code=True" in source.replace(" ", ""):
            problems.append(f"{path.relative_to(REPO)}: trust_remote_code=True")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("name", ["../x", "../../etc/evil", "/tmp/abs", "sub/name", "..\\win", " "])
def test_output_name_cannot_leave_the_output_folder(name, tmp_path):
    with pytest.raises(UserError, match="output_name .* must be a plain file name"):
        namespace_from({"pretrained_model_name_or_path": "m.safetensors", "train_data_dir": str(tmp_path),
                        "resolution": 64, "output_dir": str(tmp_path), "output_name": name})


def test_output_name_from_a_config_file_is_checked_too(tiny_ckpt, session_data, tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text('[saving_arguments]\noutput_name = "../../escaped"\n')
    argv = [a for a in cli_args(tiny_ckpt("sd1"), session_data, tmp_path / "out") if a not in ("--output_name", "t")]
    assert main(argv + ["--config_file", str(config)]) == EXIT_USER
    err = capsys.readouterr().err
    assert "output_name '../../escaped' must be a plain file name" in err
    assert not list(tmp_path.parent.glob("escaped*")) and not (tmp_path / "out").exists()


def test_sample_prompts_cannot_name_files(tmp_path):
    """A prompt line holds generation settings only; an option that could name a path is refused."""
    from library.inference.prompts import parse_prompt_line

    with pytest.raises(UserError, match="unknown option '--o'"):
        parse_prompt_line("a cat --o ../../x.png", "p.txt:1")


def test_every_output_path_is_inside_the_output_folder(tmp_path):
    from library.train import checkpoints as ck

    args = parse_args(["--pretrained_model_name_or_path", "m.safetensors", "--train_data_dir", str(tmp_path),
                       "--resolution", "64", "--output_dir", str(tmp_path / "out"), "--output_name", "n"],
                      check_files=False)
    out = os.path.realpath(args.output_dir)
    names = [f"{ck.step_name(args.output_name, 3)}.safetensors", ck.state_dir_name(ck.epoch_name(args.output_name, 2))]
    for name in names:
        assert os.path.dirname(os.path.realpath(os.path.join(args.output_dir, name))) == out
