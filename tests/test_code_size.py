"""Small modules and functions (docs/architecture.md): no product file over 500 lines, no function over 60.

A function is measured from its ``def`` line to its last line (docstring included, decorators not).
The current offenders are listed with a reason; the lists only shrink: an entry that now fits
fails too, so whoever splits a file or function removes its line.
"""

from __future__ import annotations

import ast

from tests.test_architecture import ROOT, product_files

MAX_FILE_LINES = 500
MAX_FUNCTION_LINES = 60

LONG_FILES = {
}

LONG_FUNCTIONS = {
}


def _functions(tree: ast.AST, prefix: str = ""):
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield f"{prefix}{node.name}", node
            yield from _functions(node, f"{prefix}{node.name}.")
        elif isinstance(node, ast.ClassDef):
            yield from _functions(node, f"{prefix}{node.name}.")


def measure() -> tuple[dict[str, int], dict[str, int]]:
    """({file: lines} over the file limit, {file::function: lines} over the function limit)."""
    files, functions = {}, {}
    for path in product_files():
        rel = path.relative_to(ROOT).as_posix()
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_FILE_LINES:
            files[rel] = len(text.splitlines())
        for name, node in _functions(ast.parse(text)):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                functions[f"{rel}::{name}"] = length
    return files, functions


def test_no_new_long_file_or_function():
    files, functions = measure()
    new = [f"{k} ({n} lines)" for k, n in sorted({**files, **functions}.items()) if k not in LONG_FILES and k not in LONG_FUNCTIONS]
    assert not new, (f"over {MAX_FILE_LINES} lines per file / {MAX_FUNCTION_LINES} per function; split them "
                     f"(or say why in docs/architecture.md and tests/test_code_size.py): {new}")


def test_listed_offenders_are_still_long():
    files, functions = measure()
    fixed = sorted((set(LONG_FILES) - set(files)) | (set(LONG_FUNCTIONS) - set(functions)))
    assert not fixed, f"now within the limits, remove from tests/test_code_size.py: {fixed}"


def test_the_measure_counts_methods_and_nested_functions():
    tree = ast.parse("class A:\n    def f(self):\n        def g():\n            pass\n")
    assert [name for name, _ in _functions(tree)] == ["A.f", "A.f.g"]
