"""The issue's bar, owned by library/eval/concept_run.py and read by every quality case and bench/learning.py."""

from library.eval.concept_run import draws_the_concept_without_lora, misses_the_bar


def _rates(concept, class_colour):
    return {"concept": concept, "class_base_colour": class_colour,
            "seen_sks": [("star", "purple")], "seen_class": [("star", "yellow")]}


def test_a_lora_at_the_bar_passes_and_one_image_under_it_misses():
    assert misses_the_bar(_rates(10 / 12, 10 / 12)) == []
    assert misses_the_bar(_rates(0.8, 0.8)) == []
    concept_short = misses_the_bar(_rates(9 / 12, 1.0))
    assert len(concept_short) == 1 and concept_short[0].startswith("concept 0.75 < 0.8")
    assert "purple" in concept_short[0]  # names what was drawn
    class_short = misses_the_bar(_rates(1.0, 9 / 12))
    assert len(class_short) == 1 and class_short[0].startswith("class in a base colour 0.75")
    assert len(misses_the_bar(_rates(0.0, 0.0))) == 2


def test_the_base_alone_may_draw_the_concept_at_most_one_image_in_ten():
    assert draws_the_concept_without_lora(_rates(0.0, 1.0)) == []
    assert draws_the_concept_without_lora(_rates(0.1, 1.0)) == []
    over = draws_the_concept_without_lora(_rates(2 / 12, 1.0))
    assert len(over) == 1 and "0.17 > 0.1" in over[0]
