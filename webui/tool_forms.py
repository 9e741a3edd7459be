"""A tool's form from its own argparse parser (tools/<tool>.py build_parser), so the Tools page never
repeats a tool's options. Run in a child process (``python -m webui.tool_forms TOOL``): tools import
torch, which the GUI process itself does not need.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys


def describe(parser: argparse.ArgumentParser) -> list[dict]:
    fields = []
    for action in parser._actions:  # argparse has no public iterator over its arguments
        if isinstance(action, argparse._HelpAction) or not action.option_strings:
            continue
        flag = max(action.option_strings, key=len)
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction))
        default = action.default if isinstance(action.default, (str, int, float, bool, type(None))) else str(action.default)
        fields.append({
            "flag": flag, "name": action.dest, "help": action.help or "", "required": bool(action.required),
            "kind": "flag" if is_flag else "list" if action.nargs in ("*", "+") else "value",
            "choices": [str(c) for c in action.choices] if action.choices else None,
            "default": None if is_flag else default,
        })
    return fields


def main(tool: str) -> int:
    module = importlib.import_module(f"tools.{tool}")
    parser = module.build_parser()
    print(json.dumps({"tool": tool, "description": parser.description or "", "fields": describe(parser)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
