"""The node pack follows ComfyUI's custom-node contract, finds the repository, and refuses bad input early."""

import importlib.metadata
import importlib.util
import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from library.errors import UserError
from library.options import read_config_file
from tests.comfyui.conftest import DEMO_IMG, PACK, REPO, load_pack

WIDGET_TYPES = ("STRING", "INT", "FLOAT", "BOOLEAN")
SIMPLE_LORA_INPUTS = ("ckpt_name", "use_custom_dataset", "dataset_path", "lora_checkpoint_folder", "lora_name",
                      "caption_column", "learning_rate", "batch_size", "training_steps", "checkpointing_steps",
                      "rank", "random_seed")


def _check_spec(name, spec):
    assert isinstance(spec, tuple) and len(spec) in (1, 2), name
    kind, options = spec[0], (spec[1] if len(spec) == 2 else {})
    assert isinstance(options, dict), name
    if isinstance(kind, list):  # a list of choices (a combo)
        assert all(isinstance(c, str) for c in kind), name
        assert "default" not in options or options["default"] in kind, name
        return
    assert kind in WIDGET_TYPES, (name, kind)
    default = options["default"]
    if kind == "STRING":
        assert isinstance(default, str), name
    elif kind == "BOOLEAN":
        assert isinstance(default, bool), name
    else:
        number = int if kind == "INT" else (int, float)
        assert all(isinstance(options[k], number) and not isinstance(options[k], bool) for k in ("default", "min", "max")), name
        assert options["min"] <= default <= options["max"], name


def test_declarations_follow_the_custom_node_contract(pack, comfy):
    assert set(pack.NODE_CLASS_MAPPINGS) == {"LoRATrainer"}
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) <= set(pack.NODE_CLASS_MAPPINGS)
    cls = pack.NODE_CLASS_MAPPINGS["LoRATrainer"]
    assert isinstance(inspect.getattr_static(cls, "INPUT_TYPES"), classmethod)
    types = cls.INPUT_TYPES()
    assert set(types) == {"required"}
    required = types["required"]
    assert set(SIMPLE_LORA_INPUTS) | {"preset", "alpha", "resolution", "optimizer"} == set(required)
    for name, spec in required.items():
        _check_spec(name, spec)
    json.dumps(types)  # ComfyUI serves the declarations to the browser as JSON
    assert required["ckpt_name"][0] == ["tiny_sd1.safetensors", "tiny_sdxl.safetensors"]
    presets = required["preset"][0]
    assert presets[0] == "none" and {"demo", "sd15_lora", "sdxl_lora_prodigy"} <= set(presets)

    assert isinstance(cls.RETURN_TYPES, tuple) and cls.RETURN_TYPES == ("STRING",)
    assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
    assert cls.OUTPUT_NODE is True and isinstance(cls.CATEGORY, str) and cls.CATEGORY
    method = getattr(cls(), cls.FUNCTION)
    assert callable(method)
    params = inspect.signature(method).parameters
    assert set(required) <= set(params)  # ComfyUI calls FUNCTION with every input as a keyword


def test_symlinked_folder_finds_the_repository_and_a_copy_asks_for_it(tmp_path):
    custom_nodes = tmp_path / "ComfyUI" / "custom_nodes"
    custom_nodes.mkdir(parents=True)
    link = custom_nodes / "lorasmith_trainer"
    os.symlink(PACK, link, target_is_directory=True)
    linked = load_pack(link, "lorasmith_trainer_linked")
    assert "LoRATrainer" in linked.NODE_CLASS_MAPPINGS
    assert linked.locate.find_repo_root(link / "locate.py", environ={}) == REPO

    copy = custom_nodes / "copied"
    shutil.copytree(PACK, copy, ignore=shutil.ignore_patterns("__pycache__"))
    with pytest.raises(ImportError, match="LORASMITH_ROOT"):
        linked.locate.find_repo_root(copy / "locate.py", environ={})
    assert linked.locate.find_repo_root(copy / "locate.py", environ={"LORASMITH_ROOT": str(REPO)}) == REPO


def _refuses(pack, monkeypatch, **inputs):
    import library.train.entry as entry

    monkeypatch.setattr(entry, "train", lambda *a, **k: pytest.fail("training started"))
    values = dict(ckpt_name="tiny_sd1.safetensors", use_custom_dataset=False, dataset_path="", lora_checkpoint_folder="run",
                  lora_name="ok", caption_column="text", learning_rate=1e-3, batch_size=1, training_steps=2,
                  checkpointing_steps=0, rank=4, random_seed=0)
    values.update(inputs)
    with pytest.raises(UserError) as info:
        pack.LoRATrainer().train(**values)
    return str(info.value)


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "a\\b", "", "  ", "..", ".safetensors", "C:x", ".hidden",
                                  "a\x07b", "line\nbreak", "zero\u200bwidth", "tab\tname", "x" * 300,
                                  "é" * 120 + ".safetensors", "CON", "nul.safetensors", "com1.x", "trailing."])
def test_escaping_lora_names_are_refused_before_anything_happens(pack, comfy, monkeypatch, name):
    message = _refuses(pack, monkeypatch, lora_name=name)
    assert "lora_name" in message and "\n" not in message
    assert not (comfy.models / "lora_logs").exists() and os.listdir(comfy.models / "loras") == []


@pytest.mark.parametrize("folder", ["../x", "/abs", "a/b", "", ".hidden", "..", "a\x00b", "y" * 300])
def test_escaping_log_folders_are_refused(pack, comfy, monkeypatch, folder):
    message = _refuses(pack, monkeypatch, lora_checkpoint_folder=folder)
    assert "lora_checkpoint_folder" in message
    assert not (comfy.models / "lora_logs").exists()


def test_library_errors_come_through_unchanged(pack, comfy, monkeypatch):
    with pytest.raises(UserError) as expected:
        read_config_file(str(REPO / "presets" / "sdxl_lowvram_adafactor.toml"), "train_network")
    assert _refuses(pack, monkeypatch, preset="sdxl_lowvram_adafactor") == str(expected.value)
    assert os.listdir(comfy.models / "lora_logs") == []  # refused before the run's folder was made
    assert "not in ComfyUI's checkpoints" in _refuses(pack, monkeypatch, ckpt_name="missing.safetensors")


def test_dataset_choices(pack, tmp_path):
    nodes = pack.nodes
    logs = tmp_path / "logs"
    demo = nodes.resolve_dataset(False, "", str(logs))
    assert demo == {"train_data_dir": str(logs / "demo_dataset")}
    assert sorted(os.listdir(logs / "demo_dataset")) == sorted(os.listdir(DEMO_IMG))
    with pytest.raises(UserError, match="use_custom_dataset is on"):
        nodes.resolve_dataset(True, "  ", str(logs))
    with pytest.raises(UserError, match="save_to_disk"):
        nodes.resolve_dataset(False, "someone/pokemon-captions", str(logs))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="is a file"):
        nodes.resolve_dataset(True, str(tmp_path / "notes.txt"), str(logs))
    assert nodes.resolve_dataset(True, f'"{DEMO_IMG}"', str(logs)) == {"train_data_dir": str(DEMO_IMG)}


def test_a_parquet_file_becomes_a_dataset_config_the_library_reads(pack, tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from library.data.prepare import prepare_datasets
    from library.options import namespace_from
    from library.train.setup_data import data_options

    pngs = sorted(DEMO_IMG.glob("*/*.png"))[:3]
    table = pa.table({"image": [p.read_bytes() for p in pngs], "caption": [f"shape {i}" for i in range(3)]})
    pq.write_table(table, tmp_path / "train.parquet")
    values = pack.nodes.resolve_dataset(True, str(tmp_path / "train.parquet"), str(tmp_path / "logs"))
    args = namespace_from({**values, "caption_column": "caption", "resolution": 64}, check=False)
    (dataset,) = prepare_datasets(data_options(args))
    assert sorted(r.caption for r in dataset.records) == ["shape 0", "shape 1", "shape 2"]


def test_sdxl_checkpoints_train_with_the_sdxl_script(pack, comfy):
    assert pack.nodes.script_for(str(comfy.checkpoints / "tiny_sdxl.safetensors")) == "sdxl_train_network"
    assert pack.nodes.script_for(str(comfy.checkpoints / "tiny_sd1.safetensors")) == "train_network"


def test_presets_fill_in_and_node_inputs_win(pack):
    nodes = pack.nodes
    prodigy = nodes.preset_options("sdxl_lora_prodigy", "sdxl_train_network")
    assert "max_train_epochs" not in prodigy and "save_every_n_epochs" not in prodigy and "output_dir" not in prodigy
    values = nodes.merged_options(prodigy, {"learning_rate": 0.5, "max_train_steps": 7, "optimizer_type": "AdamW"})
    assert values["learning_rate"] == 0.5 and values["max_train_steps"] == 7 and values["optimizer_type"] == "AdamW"
    assert "optimizer_args" not in values  # Prodigy's arguments do not go to AdamW
    assert values["mixed_precision"] == "bf16" and values["caption_extension"] == ".txt"
    kept = nodes.merged_options(prodigy, {})
    assert kept["optimizer_type"] == "Prodigy" and kept["optimizer_args"]
    assert nodes.merged_options(nodes.preset_options("none", "train_network"), {"max_train_steps": 3}) == {
        "caption_extension": ".txt", "max_data_loader_n_workers": 0, "max_train_steps": 3}
    with pytest.raises(UserError, match="not in"):
        nodes.preset_options("../secret", "train_network")


_COPY_UNDER_A_FILE_SIZE_LIMIT = """
import importlib.util, resource, signal, sys
spec = importlib.util.spec_from_file_location("pack", sys.argv[4] + "/__init__.py")
pack = importlib.util.module_from_spec(spec)
sys.modules["pack"] = pack
spec.loader.exec_module(pack)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG, as on a full disk
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), int(sys.argv[3])))
try:
    pack.nodes.place_final(sys.argv[1], sys.argv[2])
except pack.nodes.UserError as e:
    print(e)
    sys.exit(2)
"""


def test_a_full_disk_at_the_final_copy_leaves_no_half_file(pack, tmp_path):
    """A real write error from the kernel (RLIMIT_FSIZE) while copying into models/loras."""
    src, loras = tmp_path / "lora_logs" / "new.safetensors", tmp_path / "loras"
    src.parent.mkdir()
    loras.mkdir()
    save_file({"lora_unet_a.lora_up.weight": torch.ones(64, 64)}, str(src))
    old = loras / "mine.safetensors"
    save_file({"lora_unet_a.lora_up.weight": torch.zeros(2, 2)}, str(old))
    before = old.read_bytes()
    out = subprocess.run([sys.executable, "-c", _COPY_UNDER_A_FILE_SIZE_LIMIT, str(src), str(old), "4096", str(PACK)],
                         capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 2, out.stderr
    assert "disk full" in out.stdout and str(src) in out.stdout and "\n" not in out.stdout.strip()
    assert old.read_bytes() == before and os.listdir(loras) == ["mine.safetensors"]  # no half or temporary file
    assert src.stat().st_size > 4096 and load_file(str(src))  # the trained LoRA is untouched

    pack.nodes.place_final(str(src), str(old))  # with room, the earlier LoRA is replaced
    assert old.read_bytes() == src.read_bytes() and os.listdir(loras) == ["mine.safetensors"]
    assert oct(old.stat().st_mode & 0o777) == oct(0o666 & ~_umask())  # readable as the umask says


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_folder_appearing_at_the_target_during_training_is_a_clear_error(pack, tmp_path):
    src, dst = tmp_path / "new.safetensors", tmp_path / "loras" / "mine.safetensors"
    save_file({"lora_unet_a.lora_up.weight": torch.ones(2, 2)}, str(src))
    dst.mkdir(parents=True)
    with pytest.raises(UserError, match="is a folder") as info:
        pack.nodes.place_final(str(src), str(dst))
    assert "\n" not in str(info.value) and f"the trained LoRA is intact at {src}" in str(info.value)
    assert os.listdir(dst.parent) == ["mine.safetensors"] and src.is_file()


def _requirements(path):
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def test_node_requirements_are_lorasmiths_without_torch_and_opencv():
    root = _requirements(REPO / "requirements.txt")
    assert any(r.startswith("opencv-python-headless") for r in root)  # the repository's own venv has it
    pack = {r for r in root if not r.startswith(("torch", "opencv"))}
    assert _requirements(PACK / "requirements.txt") == pack


def _install_module():
    spec = importlib.util.spec_from_file_location("lorasmith_pack_install", PACK / "install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_py_keeps_any_opencv_flavour_already_there(capsys):
    """Another pack's opencv-python stays alone: a second flavour would overwrite part of its cv2 folder."""
    install = _install_module()
    ran = []
    versions = {"opencv-python": "4.10.0.84"}

    def version_of(name):
        if name not in versions:
            raise importlib.metadata.PackageNotFoundError(name)
        return versions[name]

    assert install.main([], version_of=version_of, run=ran.append) == 0
    assert ran == [] and "opencv-python==4.10.0.84" in capsys.readouterr().out


def test_install_py_installs_the_headless_flavour_at_the_tested_version_when_none_is_there():
    install = _install_module()
    ran = []

    def none_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    class Done:
        returncode = 0

    assert install.main([], version_of=none_installed, run=lambda cmd: ran.append(cmd) or Done()) == 0
    (cmd,) = ran
    assert cmd[:5] == [sys.executable, "-m", "pip", "install", "opencv-python-headless"]
    constraints = cmd[cmd.index("-c") + 1]
    assert Path(constraints) == PACK / "constraints.txt"
    pins = _requirements(Path(constraints))
    assert any(line.startswith("opencv-python-headless==") for line in pins)  # the tested version


def test_install_py_runs_in_this_python_and_installs_nothing_here():
    out = subprocess.run([sys.executable, str(PACK / "install.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0 and "opencv-python-headless==" in out.stdout and "nothing to install" in out.stdout


@pytest.mark.skipif(os.environ.get("LORASMITH_LOCK_CHECK") == "0",
                    reason="scripts/upgrade_deps.sh tests newer versions than the lock on purpose (and then regenerates the file)")
def test_node_constraints_are_the_tested_versions_without_torch():
    """constraints.txt pins what the pack installs at the lock's versions, and leaves ComfyUI's torch alone."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    from tools import gen_node_constraints as gen

    committed = (PACK / "constraints.txt").read_text()
    assert committed == gen.render(), "constraints.txt is stale: run python tools/gen_node_constraints.py"
    lock = set(gen.read_lock().values())
    pins = {canonicalize_name(line.split("==")[0]): line for line in _requirements(PACK / "constraints.txt")}
    assert set(pins.values()) <= lock  # exactly the tested versions
    assert not {"torch", "sympy", "mpmath", "networkx", "pytest"} & set(pins)  # torch's own, and test-only ones
    for req in _requirements(PACK / "requirements.txt"):
        assert canonicalize_name(Requirement(req).name) in pins, f"{req} is not pinned in constraints.txt"
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--disable-pip-version-check",
                          "-r", "requirements.txt", "-c", "constraints.txt"], cwd=PACK, capture_output=True, text=True)
    assert out.returncode == 0 and "Would install" not in out.stdout, out.stdout + out.stderr  # the documented command


_COMFYUI_STARTUP = """
import importlib.util, json, os, sys
comfy_root, custom_nodes = sys.argv[1], os.path.join(sys.argv[1], "custom_nodes")
sys.path.insert(0, comfy_root)  # python main.py: ComfyUI's own folder comes first


def load_custom_node(module_path):  # what ComfyUI's nodes.load_custom_node does with a folder
    name = module_path.replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, os.path.join(module_path, "__init__.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


pack = load_custom_node(os.path.join(custom_nodes, "lorasmith_trainer"))
found = {"loose": {n: importlib.util.find_spec(n) is not None for n in ("tools", "tests", "scripts", "train_network", "setup", "bench")}}
load_custom_node(os.path.join(custom_nodes, "other_pack"))
import library.train.entry, networks.lora, scripts, tests, tools
found["modules"] = {m.__name__: m.__file__ for m in (tools, tests, scripts, library.train.entry, networks.lora)}
found["sys_path"] = sys.path
found["node"] = sorted(pack.NODE_CLASS_MAPPINGS)
print(json.dumps(found))
"""


def test_the_pack_exposes_only_library_and_networks(tmp_path):
    """Importing the pack must not make the repository's tools/, tests/, scripts/... importable for everyone."""
    comfy_root = tmp_path / "ComfyUI"
    custom_nodes = comfy_root / "custom_nodes"
    other = custom_nodes / "other_pack"
    (other / "tests").mkdir(parents=True)
    (other / "__init__.py").write_text("import os, sys\nsys.path.append(os.path.dirname(__file__))\nNODE_CLASS_MAPPINGS = {}\n")
    for module in ("tools.py", "scripts.py", "tests/__init__.py"):
        (other / module).write_text("OWNER = 'other_pack'\n")
    os.symlink(PACK, custom_nodes / "lorasmith_trainer", target_is_directory=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", _COMFYUI_STARTUP, str(comfy_root)], capture_output=True, text=True,
                         cwd=comfy_root, env=env)
    assert out.returncode == 0, out.stderr
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert not any(found["loose"].values()), found["loose"]  # nothing of the repository's top level resolves
    modules = {name: Path(path).resolve() for name, path in found["modules"].items()}
    for name in ("tools", "tests", "scripts"):
        assert modules[name].is_relative_to(other), (name, modules[name])  # the other pack's module wins
    assert modules["library.train.entry"] == REPO / "library" / "train" / "entry.py"
    assert modules["networks.lora"] == REPO / "networks" / "lora.py"
    assert not any((comfy_root / p).resolve() in (REPO, PACK) for p in found["sys_path"])
    assert found["node"] == ["LoRATrainer"]


def test_loader_workers_are_dropped_where_they_would_re_import_comfyui(pack, monkeypatch, capsys):
    """spawn/forkserver workers re-run ComfyUI's main.py and cannot import lorasmith (not on sys.path)."""
    nodes = pack.nodes
    lowvram = nodes.preset_options("sdxl_lowvram_adafactor", "sdxl_train_network")
    assert lowvram["max_data_loader_n_workers"] == 2
    monkeypatch.setattr(nodes.multiprocessing, "get_start_method", lambda allow_none=False: "fork")
    assert nodes.merged_options(lowvram, {})["max_data_loader_n_workers"] == 2
    monkeypatch.setattr(nodes.multiprocessing, "get_start_method", lambda allow_none=False: "spawn")
    assert nodes.merged_options(lowvram, {})["max_data_loader_n_workers"] == 0
    assert "max_data_loader_n_workers 2 -> 0 (spawn" in capsys.readouterr().out
