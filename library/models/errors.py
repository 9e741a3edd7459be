"""Errors a user can cause when loading or saving a base model.

Each message is one line: the file or folder, what is wrong with it, and what to do.
"""

from library.errors import UserError


class ModelLoadError(UserError):
    """A checkpoint or diffusers folder that cannot be loaded as an SD1/SD2/SDXL base model."""


class ModelSaveError(UserError):
    """A base model that cannot be written where or how the user asked."""


def one_line(text: str) -> str:
    """Collapse whitespace runs (newlines from third-party messages) so a message stays one line."""
    return " ".join(str(text).split())


class UnmappedKey(KeyError):
    """Internal: a tensor name with no place in the target layout (collected, then reported)."""
