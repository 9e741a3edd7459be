"""The import direction of docs/architecture.md holds: no product module imports from a layer above it.

Layers, lowest first (a module may import its own package and anything lower):

    errors      library.errors
    names       library.vocabulary, library.safetensors_header (import nothing of ours)
    leaves      library.atomic, library.output_paths, library.devices, library.cache_dir
    options     library.options
    data/models library.data, library.models        (independent of each other)
    networks    networks                            (LoRA modules wrap model layers)
    inference/merge/captioning                      (independent of each other)
    train       library.train                       (uses inference for sample images)
    tools       tools/*, train_network.py, sdxl_train_network.py (no tool imports another tool)
    gui         webui/ (reads the tools' parsers, runs tools and training in child processes)

Known violations are listed in ALLOWED with a reason; the list only shrinks: an entry whose
import is gone fails the test too, so whoever removes a violation removes its line.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LAYERS = [
    ("errors", ("library.errors",)),
    ("names", ("library.vocabulary", "library.safetensors_header")),
    ("leaves", ("library.atomic", "library.output_paths", "library.devices", "library.cache_dir")),
    ("options", ("library.options",)),
    ("data/models", ("library.data", "library.models")),
    ("networks", ("networks",)),
    ("inference/merge", ("library.inference", "library.merge", "library.captioning")),
    ("train", ("library.train",)),
    ("eval", ("library.eval",)),
    ("tools", ("tools", "train_network", "sdxl_train_network")),
    ("gui", ("webui",)),
]

# (importing module, imported module): why it is still there.
ALLOWED = {
}


def product_files() -> list[Path]:
    files = [*ROOT.glob("library/**/*.py"), *ROOT.glob("networks/*.py"), *ROOT.glob("tools/*.py"), *ROOT.glob("webui/**/*.py")]
    return sorted(files + [ROOT / "train_network.py", ROOT / "sdxl_train_network.py"])


def module_name(path: Path) -> tuple[str, str]:
    """(module, package it resolves relative imports against)."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), ".".join(parts[:-1])
    return ".".join(parts), ".".join(parts[:-1])


def imports(path: Path) -> set[str]:
    """Every project module ``path`` imports, at module level or inside functions, relative ones resolved."""
    module, package = module_name(path)
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                found.add(".".join(base + ([node.module] if node.module else [])))
            elif node.module:
                found.add(node.module)
    return {name for name in found if name.split(".")[0] in ("library", "networks", "tools", "webui")}


def placement(module: str) -> tuple[int, str] | None:
    """(layer index, owning package) of a project module, or None for one outside the layers (``library`` itself)."""
    best = None
    for index, (_, packages) in enumerate(LAYERS):
        for pkg in packages:
            if (module == pkg or module.startswith(pkg + ".")) and (best is None or len(pkg) > len(best[1])):
                best = (index, pkg)
    return best


def violations() -> dict[tuple[str, str], str]:
    found = {}
    for path in product_files():
        importer = module_name(path)[0]
        own = placement(importer)
        for imported in imports(path):
            other = placement(imported)
            if own is None or other is None or own[1] == other[1]:
                if own and own[1] == "tools" and imported.startswith("tools"):
                    found[(importer, imported)] = "a tool imports another tool; move the shared code into library/"
                continue
            if other[0] > own[0]:
                found[(importer, imported)] = f"{LAYERS[own[0]][0]} imports from {LAYERS[other[0]][0]}, a layer above it"
            elif other[0] == own[0]:
                found[(importer, imported)] = f"{own[1]} and {other[1]} are siblings in {LAYERS[own[0]][0]}; neither imports the other"
    return found


def test_scanner_sees_the_imports_it_checks():
    # the scanner finds module-level, function-level and relative imports
    assert "library.models.hashes" in imports(ROOT / "library/train/metadata.py")
    assert "networks.lora_svd" in imports(ROOT / "library/merge/lora_merge.py") or "networks" in imports(ROOT / "library/merge/lora_merge.py")
    assert any(name.startswith("library.data.") for name in imports(ROOT / "library/data/dataset.py"))
    assert placement("library.train.loop")[1] == "library.train" and placement("tools.merge_lora")[1] == "tools"


def test_no_module_imports_from_a_layer_above_it():
    found = violations()
    new = {k: why for k, why in found.items() if k not in ALLOWED}
    assert not new, "imports against docs/architecture.md's layers:\n" + "\n".join(
        f"  {a} -> {b}: {why}" for (a, b), why in sorted(new.items()))


def test_allowlisted_violations_still_exist():
    gone = sorted(set(ALLOWED) - set(violations()))
    assert not gone, "fixed, remove from ALLOWED in tests/test_architecture.py: " + ", ".join(f"{a} -> {b}" for a, b in gone)


def test_every_product_module_has_a_layer():
    loose = [module_name(p)[0] for p in product_files() if placement(module_name(p)[0]) is None and p.name != "__init__.py"]
    assert not loose, f"modules outside every layer (add them to LAYERS and docs/architecture.md): {loose}"


def test_lora_key_naming_does_not_load_diffusers():
    # networks/ uses the UNet layout map in library/models; the package must not pull diffusers in with it
    import subprocess
    import sys

    code = ("import sys, networks.lora_names, networks.lora_convert, library.models.unet_layout; "
            "print(sorted(m for m in ('diffusers', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_lora_svd_maths_has_one_owner():
    # SVD, QR and quantiles of LoRA factors live in networks/lora_svd.py; merge, resize and extract call it
    import re

    pattern = re.compile(r"linalg\.(svd|qr)\b|svd_lowrank\(|torch\.quantile\(|\.kthvalue\(|torch\.svd\(")
    owner = ROOT / "networks/lora_svd.py"
    assert pattern.search(owner.read_text(encoding="utf-8"))
    others = [p.relative_to(ROOT).as_posix() for p in product_files() if p != owner and pattern.search(p.read_text(encoding="utf-8"))]
    assert not others, f"SVD/QR/quantile outside networks/lora_svd.py (call lora_svd instead): {others}"
