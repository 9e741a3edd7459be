"""The demo (scripts/demo.sh) is the concept quality test's recipe on the same data, so what a new user
watches is what the quality suite measures: the preset, the shipped images and the sample prompts are
checked against library/eval/concept_run.py, their one owner."""

import filecmp
import os
from pathlib import Path

from library.eval.concept_run import CLASS_PROMPT, CONCEPT_PROMPT, GEN, TRAIN_DEFAULTS
from library.options import parse_args
from tools.make_demo_dataset import write_shapes_demo

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "examples" / "shapes_demo"


def test_the_shipped_shapes_demo_is_what_the_tool_draws(tmp_path):
    write_shapes_demo(str(tmp_path))
    made = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    shipped = sorted(p.relative_to(SHIPPED) for p in SHIPPED.rglob("*") if p.is_file())
    assert made == shipped, "run python tools/make_demo_dataset.py --shapes"
    assert len([p for p in made if p.suffix == ".png"]) == 12
    for rel in made:
        assert filecmp.cmp(tmp_path / rel, SHIPPED / rel, shallow=False), f"{rel} differs: regenerate it"


def test_the_demo_preset_is_the_concept_tests_recipe(tmp_path):
    script = (REPO / "scripts" / "demo.sh").read_text()
    assert "presets/shapes_demo.toml" in script and f'--class_prompt "{CLASS_PROMPT}"' in script
    args = parse_args(["--config_file", str(REPO / "presets" / "shapes_demo.toml"), "--pretrained_model_name_or_path",
                       str(REPO / "README.md"), "--train_data_dir", str(SHIPPED / "img"), "--output_dir",
                       str(tmp_path)], "train_network")
    for key, want in TRAIN_DEFAULTS.items():
        got = getattr(args, key)
        if want is None:
            assert got is True, key
        elif isinstance(got, tuple):
            assert got == (int(want),) * 2, key
        else:
            assert got == type(got)(want), key
    assert (args.class_image_steps, args.class_image_scale) == (GEN["steps"], GEN["scale"])
    assert os.path.isdir(SHIPPED / "img" / f"10_{CONCEPT_PROMPT}")
    prompts = (SHIPPED / "prompts.txt").read_text()
    assert f"--s {GEN['steps']} --l {GEN['scale']:g}" in prompts
