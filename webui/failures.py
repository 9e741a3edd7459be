"""A failed run's one-line error -> the row of docs/troubleshooting.md that explains it (a deep link).

Why: the trainer's ``UserError`` messages are catalogued in troubleshooting.md with their fix; the run
page shows the one line and links straight to the catalogue row whose example message shares the most
words with it (or to the exit-code table when none is close). The docs are served as HTML
(markdown-it-py) with an id on every heading (``#during-training``) and every table row (``#row-N``).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

DOCS = Path(__file__).resolve().parent.parent / "docs"
_WORD = re.compile(r"[a-z_][a-z0-9_]{2,}")
_COMMON = {"the", "and", "for", "with", "from", "this", "that", "use", "give", "or", "not", "are", "out", "one"}
MIN_SCORE = 0.2


def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark").enable("table")


def slug(text: str) -> str:
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"\s", "-", re.sub(r"[^\w\s-]", "", text.strip().lower()))


def _words(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _COMMON}


def _tag(tokens) -> list[tuple[str, str]]:
    """Give headings and body table rows their ids (in place); returns [(row id, row text)]."""
    rows, n, in_body = [], 0, False
    for i, tok in enumerate(tokens):
        if tok.type == "heading_open":
            tok.attrSet("id", slug(tokens[i + 1].content))
        elif tok.type in ("tbody_open", "tbody_close"):
            in_body = tok.type == "tbody_open"
        elif tok.type == "tr_open" and in_body:
            n += 1
            tok.attrSet("id", f"row-{n}")
            text = []
            for t in tokens[i + 1:]:
                if t.type == "tr_close":
                    break
                if t.type == "inline":
                    text.append(t.content)
            rows.append((f"row-{n}", " ".join(text)))
    return rows


@lru_cache(maxsize=8)
def _rows(name: str, mtime: float) -> tuple[tuple[str, str], ...]:
    tokens = _parser().parse((DOCS / name).read_text(encoding="utf-8"))
    return tuple(_tag(tokens))


def render(name: str) -> str:
    """docs/NAME (a .md page) as HTML with anchors on headings and table rows."""
    md = _parser()
    tokens = md.parse((DOCS / name).read_text(encoding="utf-8"))
    _tag(tokens)
    body = md.renderer.render(tokens, md.options, {})
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{name}</title>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='stylesheet' href='/static/style.css'></head><body class='help'><main>"
            f"{body}</main></body></html>")


def best_row(error: str | None, name: str = "troubleshooting.md") -> str | None:
    """The id of the catalogue row whose text shares the most words with ``error``, or None."""
    if not error:
        return None
    path = DOCS / name
    wanted = _words(error)
    if not wanted:
        return None
    best, best_score = None, 0.0
    for row_id, text in _rows(name, path.stat().st_mtime):
        have = _words(text)
        score = len(wanted & have) / len(wanted)
        if score > best_score:
            best, best_score = row_id, score
    return best if best_score >= MIN_SCORE else None


def help_link(error: str | None, page: str = "/help/troubleshooting.md") -> str:
    """The deep link for a failed run's error line: its catalogue row, else the exit-code table."""
    return f"{page}#{best_row(error) or 'exit-codes'}"
