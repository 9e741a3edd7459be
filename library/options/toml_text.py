"""TOML text for the files we write (--output_config, GUI/ComfyUI option files, dataset configs).

Why: the escaping rules of TOML strings (quotes, backslashes of Windows paths, newlines, control
characters) and the layout of nested ``[[datasets.subsets]]`` tables are a kept library's job
(``tomli_w``), not ours; reading stays ``tomllib``. Two rules are ours: a non-finite number is refused
(TOML can spell ``nan``/``inf`` but no option accepts them, so the file could not be read back), and
a comment header may go on top. kohya reads these files with the ``toml`` package, which also parses
everything ``tomli_w`` writes as long as each array holds one type (callers convert values first).
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import tomli_w

from ..errors import UserError


def dumps(data: Mapping[str, Any], header: str = "") -> str:
    """``data`` as TOML text, with ``header`` as ``#`` comment lines on top."""
    _refuse_non_finite(data, "")
    text = tomli_w.dumps(data)
    if not header:
        return text
    comments = "".join(f"# {line}\n" for line in header.splitlines())
    return comments + ("\n" if text and not text.startswith("\n") else "") + text


def _refuse_non_finite(value: Any, where: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f"{where or 'a value'} is {value!r}; a TOML file we write holds finite numbers only "
                        f"(nan and inf are refused when read back): give a finite number")
    if isinstance(value, Mapping):
        for key, item in value.items():
            _refuse_non_finite(item, f"{where}.{key}" if where else str(key))
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _refuse_non_finite(item, f"{where}[{i}]")
