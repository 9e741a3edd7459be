"""library.output_paths.check_output_name: the one name check --output_name and the ComfyUI node's
lora_name use; refused names raise a UserError naming the field and the reason."""

import pytest

from library.errors import UserError
from library.output_paths import LONGEST_SUFFIX, check_output_name


@pytest.mark.parametrize("name, why", [
    ("", "empty"), (" ", "empty"), (".", "dot"), ("..", "dot"), (".hidden", "dot"), ("a/b", "separator"),
    ("a\\b", "separator"), ("a\nb", "control character"), ("a\x00b", "control character"),
    ("a\u2028b", "control character"), ("a:b", "Windows"), ("a?b", "Windows"), ("name.", "ends in a space or a dot"),
    ("name ", "ends in a space or a dot"), ("CON", "reserved"), ("nul.txt", "reserved"), ("com1", "reserved"),
])
def test_bad_names_are_refused_with_the_reason(name, why):
    with pytest.raises(UserError, match=f"lora_name .*{why}"):
        check_output_name(name, what="lora_name")


def test_the_length_limit_counts_the_longest_suffix_in_bytes(tmp_path):
    room = 255 - len(LONGEST_SUFFIX)
    check_output_name("x" * room, str(tmp_path))
    with pytest.raises(UserError, match="too long"):
        check_output_name("x" * (room + 1), str(tmp_path))
    with pytest.raises(UserError, match="too long"):
        check_output_name("é" * (room // 2 + 1), str(tmp_path))  # two bytes each in UTF-8
    check_output_name("my_lora-v2 (final)", str(tmp_path / "not" / "made" / "yet"))
