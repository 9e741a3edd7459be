"""The demo's step-by-step table: the samples a run recorded, read back by the shapes scorer."""

import json

from library.eval.sample_progress import progress_text, sample_progress
from library.eval.shapes_data import ShapeSpec, concept_specs, render


def _sample(folder, step, prompt, spec, records):
    name = f"s_{step:06d}_{len(records):02d}.png"
    render(spec).save(folder / "sample" / name)
    records.append({"step": step, "prompt": prompt, "file": f"sample/{name}"})


def test_the_table_follows_the_concept_from_the_base_colour_to_purple(tmp_path):
    (tmp_path / "sample").mkdir()
    records = []
    yellow = ShapeSpec("star", "yellow", "centre", 32, 32, 15)
    for spec in (yellow, yellow):
        _sample(tmp_path, 0, "sks star", spec, records)
    for spec in concept_specs(2, seed=1):
        _sample(tmp_path, 100, "sks star", spec, records)
    _sample(tmp_path, 100, "a star", yellow, records)
    records.append({"step": 200, "prompt": "sks star", "file": "sample/deleted.png"})  # a file since removed
    (tmp_path / "samples.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")

    table = sample_progress(tmp_path)
    assert sorted(table) == [0, 100]
    assert [(r.shape, r.colour) for r in table[0]["sks star"]] == [("star", "yellow")] * 2
    assert [(r.shape, r.colour) for r in table[100]["sks star"]] == [("star", "purple")] * 2
    text = progress_text(tmp_path)
    assert "step     0  'sks star'   yellow star 2 (concept 0/2)" in text
    assert "step   100  'sks star'   purple star 2 (concept 2/2)" in text
    assert "step   100  'a star'     yellow star 1" in text and "(concept 0/1)" not in text


def test_no_samples_is_said_plainly(tmp_path):
    assert sample_progress(tmp_path) == {}
    assert "no samples recorded" in progress_text(tmp_path)
