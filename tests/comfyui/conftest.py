"""A ComfyUI-shaped folder tree with fake ``folder_paths`` and ``comfy`` modules (tests/comfyui/fake_comfy.py
says which ComfyUI behaviour they reproduce), and the node pack imported the way ComfyUI's
``nodes.load_custom_node`` imports a custom node folder."""

import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import pytest

from tests.comfyui.fake_comfy import make_comfy

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "custom_nodes" / "lorasmith_trainer"
DEMO_IMG = REPO / "examples" / "demo" / "img"
MODEL_EXTENSIONS = {".safetensors", ".ckpt", ".pt", ".bin", ".pth", ".sft"}


def load_pack(folder: Path = PACK, name: str | None = None):
    """Import ``folder/__init__.py`` as ComfyUI's loader does: a package named after its path (dots -> ``_x_``)."""
    name = name or str(folder).replace(".", "_x_")
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def pack():
    return load_pack()


@pytest.fixture(scope="session")
def checkpoints_dir(tmp_path_factory, tiny_ckpt):
    """ComfyUI's models/checkpoints for every test: copies of the suite's tiny SD1 and SDXL models."""
    folder = tmp_path_factory.mktemp("checkpoints")
    for family in ("sd1", "sdxl"):
        shutil.copyfile(tiny_ckpt(family), folder / f"tiny_{family}.safetensors")
    return folder


def fake_folder_paths(models: Path, checkpoints: Path) -> types.ModuleType:
    """The parts of ComfyUI's ``folder_paths`` the node uses, over ``models``."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models)
    fp.folder_names_and_paths = {
        "checkpoints": ([str(checkpoints)], MODEL_EXTENSIONS),
        "loras": ([str(models / "loras")], MODEL_EXTENSIONS),
    }

    def get_folder_paths(name):
        return list(fp.folder_names_and_paths[name][0])

    def get_filename_list(name):
        folders, extensions = fp.folder_names_and_paths[name]
        found = set()
        for base in folders:
            for root, _, files in os.walk(base):
                found.update(os.path.relpath(os.path.join(root, f), base) for f in files
                             if os.path.splitext(f)[1].lower() in extensions)
        return sorted(found)

    def get_full_path(name, filename):
        for base in get_folder_paths(name):
            path = os.path.join(base, filename)
            if os.path.isfile(path):
                return path
        return None

    fp.get_folder_paths, fp.get_filename_list, fp.get_full_path = get_folder_paths, get_filename_list, get_full_path
    return fp


@pytest.fixture
def comfy(tmp_path, monkeypatch, checkpoints_dir):
    """A ComfyUI tree (models/loras exists, models/lora_logs not yet) with fake ComfyUI modules in sys.modules.

    ``comfy.updates`` records ``(value, total)`` for every progress update the page would get;
    ``comfy.mm`` is ``comfy.model_management`` (Cancel: ``comfy.mm.interrupt_current_processing()``).
    """
    models = tmp_path / "ComfyUI" / "models"
    (models / "loras").mkdir(parents=True)
    fake = make_comfy()
    monkeypatch.setitem(sys.modules, "folder_paths", fake_folder_paths(models, checkpoints_dir))
    monkeypatch.setitem(sys.modules, "comfy", fake.package)
    monkeypatch.setitem(sys.modules, "comfy.utils", fake.utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", fake.mm)
    fake.models, fake.checkpoints = models, checkpoints_dir
    return fake
