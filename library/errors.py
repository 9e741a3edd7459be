"""The one base class for mistakes a user can make and fix (bad file, bad option, bad folder).

Entry points catch ``UserError`` and print its message alone (no traceback unless
``--debug``), so every message must name the file, folder or option and say what to do.
This module imports nothing, so any layer (networks/ included) may use it.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says how to fix it."""


def run_reporting_user_errors(action, debug: bool = False) -> int:
    """Run ``action()`` for a command-line tool: 0 when it returns; a ``UserError`` becomes one
    ``error: ...`` line on stderr and exit code 2 (with the traceback first under ``--debug``)."""
    import sys
    import traceback

    try:
        action()
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
