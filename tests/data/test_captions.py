"""Caption processing: kohya's order, each option alone and combined, deterministic per (seed, epoch, index)."""

import random

import pytest

from library.data.captions import caption_rng, captions_are_static, expand_wildcards, process_caption, tag_frequency
from library.data.params import SubsetParams

CAP = "man, smiling, outdoors, red shirt, sunny"


def run(caption=CAP, epoch=1, seed=0, index=0, **opts):
    return process_caption(caption, SubsetParams(**opts), caption_rng(seed, epoch, index), epoch)


def tags(text):
    return [t.strip() for t in text.split(",")]


def test_no_options_leaves_caption_untouched():
    assert run("a,b ,  c") == "a,b ,  c"  # kohya does not re-join unless shuffling/dropping


def test_prefix_suffix_joined_with_space():
    assert run("a, b", caption_prefix="sks", caption_suffix="style") == "sks a, b style"


def test_whole_caption_dropout_rate():
    assert run(caption_dropout_rate=1.0, caption_prefix="sks") == ""  # prefix is added first, then dropped
    results = [run(caption_dropout_rate=0.5, index=i) for i in range(200)]
    assert 60 < results.count("") < 140 and set(results) == {"", CAP}


def test_dropout_every_n_epochs_counts_from_one():
    assert [run(epoch=e, caption_dropout_every_n_epochs=2) for e in (1, 2, 3, 4)] == [CAP, "", CAP, ""]


def test_wildcards():
    outs = {run("a {red|blue} hat, {{literal}}", enable_wildcard=True, index=i) for i in range(50)}
    assert outs == {"a red hat, {literal}", "a blue hat, {literal}"}
    assert run("a {red|blue} hat") == "a {red|blue} hat"  # off unless enable_wildcard
    lines = {expand_wildcards("line one\nline two", random.Random(i)) for i in range(50)}
    assert lines == {"line one", "line two"}
    assert run("line one\nline two") == "line one"


def test_shuffle_keeps_tags_and_keep_tokens():
    outs = [run(shuffle_caption=True, keep_tokens=1, index=i) for i in range(30)]
    assert all(tags(o)[0] == "man" and sorted(tags(o)) == sorted(tags(CAP)) for o in outs)
    assert len(set(outs)) > 5
    assert run("a,,b", shuffle_caption=True).count(",") == 1  # empty tags dropped


def test_keep_tokens_separator_fixed_prefix_and_suffix():
    cap = "sks, man ||| smiling, outdoors, sunny ||| masterpiece"
    outs = [run(cap, shuffle_caption=True, keep_tokens_separator="|||", index=i) for i in range(30)]
    for o in outs:
        t = tags(o)
        assert t[:2] == ["sks", "man"] and t[-1] == "masterpiece" and sorted(t[2:5]) == ["outdoors", "smiling", "sunny"]
    assert len(set(outs)) > 1
    # without shuffling the separator is still removed (kohya would keep the literal "|||")
    assert run(cap, keep_tokens_separator="|||") == "sks, man, smiling, outdoors, sunny, masterpiece"


def test_tag_dropout_only_on_flexible_tags():
    assert run(caption_tag_dropout_rate=1.0, keep_tokens=2) == "man, smiling"
    kept = [len(tags(run(caption_tag_dropout_rate=0.5, index=i))) for i in range(100)]
    assert 1.5 < sum(kept) / len(kept) < 3.5


def test_secondary_separator():
    assert run("a;;;b, c", shuffle_caption=True, keep_tokens=1, secondary_separator=";;;") == "a,b, c"


def test_combined_order():
    # prefix joins the first tag; it is kept by keep_tokens; the wildcard resolves before splitting
    cap = "man, {red|blue} shirt, outdoors, sunny"
    opts = dict(caption_prefix="sks", keep_tokens=1, shuffle_caption=True, caption_tag_dropout_rate=0.3, enable_wildcard=True)
    outs = [run(cap, index=i, **opts) for i in range(60)]
    for o in outs:
        t = tags(o)
        assert t[0] == "sks man"
        assert set(t[1:]) <= {"red shirt", "blue shirt", "outdoors", "sunny"}
        assert "{" not in o
    assert any(len(tags(o)) < 4 for o in outs) and any("red shirt" in o for o in outs) and any("blue shirt" in o for o in outs)


def test_deterministic_for_seed_epoch_index():
    opts = dict(shuffle_caption=True, caption_tag_dropout_rate=0.2, caption_dropout_rate=0.1)
    a = [run(seed=7, epoch=2, index=i, **opts) for i in range(20)]
    b = [run(seed=7, epoch=2, index=i, **opts) for i in range(20)]
    c = [run(seed=7, epoch=3, index=i, **opts) for i in range(20)]
    d = [run(seed=8, epoch=2, index=i, **opts) for i in range(20)]
    assert a == b and a != c and a != d


def test_fixed_seed_golden_values():
    # random.Random with a str seed is stable across Python versions, so these outputs are fixed
    opts = dict(shuffle_caption=True, keep_tokens=1, caption_tag_dropout_rate=0.3)
    assert run(seed=0, index=0, **opts) == "man, sunny, red shirt"
    assert run(seed=0, index=1, **opts) == "man, sunny, outdoors"


@pytest.mark.parametrize(
    "opts, static",
    [({}, True), ({"caption_prefix": "x"}, True), ({"shuffle_caption": True}, False), ({"caption_dropout_rate": 0.1}, False),
     ({"enable_wildcard": True}, False), ({"caption_dropout_every_n_epochs": 3}, False), ({"caption_tag_dropout_rate": 0.1}, False)],
)
def test_captions_are_static(opts, static):
    assert captions_are_static(SubsetParams(**opts)) is static


def test_tag_frequency():
    assert tag_frequency(["A, b", "a, c, "]) == {"a": 2, "b": 1, "c": 1}
