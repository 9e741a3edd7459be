"""Errors and collected issues for the datasets layer.

Why: every mistake a user can make with their data (a missing folder, a bad caption file, an unknown
config key) must end in one short message naming the file/folder/key and the fix, never a bare
traceback. Scanning collects warnings and errors into an ``Issues`` list so the preflight can show
all problems at once; training raises the first errors as one ``DatasetError``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

from library.errors import UserError

logger = logging.getLogger("lorasmith.data")


class DatasetError(UserError):
    """A problem with the user's data or dataset options; the message says what and how to fix it."""


@dataclass(frozen=True)
class Issue:
    """One finding: level is "error" (training cannot start), "warning" or "info"."""

    level: str
    code: str
    message: str
    path: Optional[str] = None
    count: Optional[int] = None  # how many files an aggregated finding covers

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Issues:
    """An ordered list of findings; warnings are also logged as they are added."""

    items: list = field(default_factory=list)
    log: bool = True

    def add(self, level: str, code: str, message: str, path=None, count=None) -> None:
        issue = Issue(level, code, message, None if path is None else str(path), count)
        self.items.append(issue)
        if self.log:
            {"error": logger.error, "warning": logger.warning}.get(level, logger.info)(message)

    def error(self, code: str, message: str, path=None, count=None) -> None:
        self.add("error", code, message, path, count)

    def warning(self, code: str, message: str, path=None, count=None) -> None:
        self.add("warning", code, message, path, count)

    def info(self, code: str, message: str, path=None, count=None) -> None:
        self.add("info", code, message, path, count)

    def __iter__(self) -> Iterator[Issue]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def of_level(self, level: str) -> list:
        return [i for i in self.items if i.level == level]

    def with_code(self, code: str) -> list:
        return [i for i in self.items if i.code == code]

    @property
    def errors(self) -> list:
        return self.of_level("error")

    def raise_if_errors(self, limit: int = 5) -> None:
        """Raise one DatasetError listing the first ``limit`` errors (and how many more there are)."""
        errors = self.errors
        if not errors:
            return
        lines = [e.message for e in errors[:limit]]
        if len(errors) > limit:
            lines.append(f"... and {len(errors) - limit} more problems; run tools/check_dataset.py to list them all.")
        raise DatasetError("\n".join(lines))
