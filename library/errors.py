"""The one base class for mistakes a user can make and fix (bad file, bad option, bad folder).

Entry points catch ``UserError`` and print its message alone (no traceback unless
``--debug``), so every message must name the file, folder or option and say what to do.
This module imports nothing, so any layer (networks/ included) may use it.
"""


class UserError(Exception):
    """A problem in the user's input, with a message that says how to fix it."""
