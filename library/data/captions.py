"""Caption files and per-step caption processing, in kohya's order.

Why: captions are where most silent dataset mistakes hide (wrong extension, wrong encoding, empty
files), and the per-step processing must be reproducible for a given (seed, epoch, index).

Reading (``read_caption_file``):
- Encoding: UTF-8, or what a byte-order mark says (UTF-8, UTF-16 LE/BE, UTF-32 LE/BE; the mark is
  dropped). A file that is not valid UTF-8 is an error naming the file and the bad byte, and so is text
  holding NUL or other control characters (UTF-16 saved without a mark decodes as ``s\\x00k\\x00s``):
  guessing an encoding would train on garbled text.
- Size: a caption file over ``MAX_CAPTION_BYTES`` (1 MiB) is refused; one that is not a regular file
  (a FIFO, a device) is never opened for a blocking read.
- Lines: only ``\\n``, ``\\r\\n`` and ``\\r`` end a line (as kohya's text-mode read). Unicode line and
  paragraph separators (U+2028, U+2029), NEL (U+0085), tabs, vertical tabs and form feeds are spaces
  inside the line, so they never cut a caption. Blank lines are ignored; the caption is the first
  non-blank line (kohya takes the first line even when it is blank), or all non-blank lines joined by
  "\\n" with ``enable_wildcard`` (one is picked at random per step, as kohya does).

Processing (``process_caption``), kohya's order:
1. ``caption_prefix`` + " " + caption + " " + ``caption_suffix``
2. whole-caption dropout: ``caption_dropout_rate``, or every ``caption_dropout_every_n_epochs``-th epoch
   (epochs count from 1, so n=2 drops in epochs 2, 4, ...) -> ""
3. ``enable_wildcard``: pick a line, then replace each ``{a|b|c}`` by one choice (``{{``/``}}`` escape braces)
4. split on ``caption_separator``; keep the first ``keep_tokens`` tags (or the part before
   ``keep_tokens_separator``, and the part after its second occurrence, fixed at the end)
5. ``shuffle_caption`` shuffles the rest; ``caption_tag_dropout_rate`` drops each of the rest
6. join with ", "; then ``secondary_separator`` is replaced by ``caption_separator``.
Steps 4-6 run only when shuffling or tag dropout is on (kohya leaves the caption untouched otherwise),
except that a ``keep_tokens_separator`` present in the caption is always removed (kohya would pass the
literal separator to the text encoder when shuffling is off). Empty tags ("a,,b") are dropped.
"""

from __future__ import annotations

import random
import re
from typing import Dict, Iterable, Optional

from .errors import DatasetError
from .files import FileTooLarge, NotARegularFile, read_regular
from .params import SubsetParams

MAX_CAPTION_BYTES = 1024 * 1024
_WILDCARD = re.compile(r"\{([^{}]+)\}")


def read_caption_file(path: str, enable_wildcard: bool = False, data: Optional[bytes] = None) -> str:
    """Caption text of one file ("" when it is empty or blank); DatasetError when not decodable."""
    if data is None:
        try:
            data = read_regular(path, MAX_CAPTION_BYTES)
        except NotARegularFile as e:
            raise DatasetError(f"caption file {e}; remove it or replace it with a text file") from None
        except FileTooLarge as e:
            raise DatasetError(f"caption file {e} for a caption; is it the right file? A caption is a line of "
                               "text next to its image") from None
        except OSError as e:
            raise DatasetError(f"cannot read caption file {path}: {e.strerror or e}") from None
    if len(data) > MAX_CAPTION_BYTES:
        raise DatasetError(f"caption file {path} has {len(data):,} bytes, more than the {MAX_CAPTION_BYTES:,} allowed "
                           "for a caption; is it the right file?")
    lines = [line.strip() for line in caption_lines(decode_caption_bytes(data, path))]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    return "\n".join(lines) if enable_wildcard else lines[0]


_BOMS = (  # longest first: the UTF-32 LE mark starts with the UTF-16 LE one
    (b"\xff\xfe\x00\x00", "utf-32-le"), (b"\x00\x00\xfe\xff", "utf-32-be"), (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"), (b"\xfe\xff", "utf-16-be"),
)
_SPACES = str.maketrans({c: " " for c in "\t\v\f\x85\u2028\u2029"})
_LINE_ENDS = re.compile(r"\r\n|\r|\n")
_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x84\x86-\x9f]")


def caption_lines(text: str) -> list:
    """Lines split only at \\n, \\r\\n and \\r; other separators and tabs become spaces."""
    return _LINE_ENDS.split(text.translate(_SPACES))


def decode_caption_bytes(data: bytes, path: str) -> str:
    """UTF-8, or the encoding a byte-order mark names; DatasetError naming the file otherwise.

    Decoded text holding NULs or other control characters is an error too: it is almost always UTF-16
    saved without a mark, or a binary file with a caption's extension.
    """
    encoding = "utf-8"
    for bom, name in _BOMS:
        if data.startswith(bom):
            data, encoding = data[len(bom):], name
            break
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        if encoding != "utf-8":
            raise DatasetError(f"caption file {path} starts with a {encoding.upper()} mark but is not valid "
                               f"{encoding.upper()} ({e.reason}); re-save it as UTF-8") from None
        bad = data[e.start : e.start + 1].hex()
        raise DatasetError(
            f"caption file {path} is not UTF-8 (byte 0x{bad} at offset {e.start}); "
            "re-save it as UTF-8 (in most editors: Save As -> Encoding: UTF-8)"
        ) from None
    hint = "it looks like UTF-16 saved without a byte-order mark; " if encoding == "utf-8" else ""
    return check_caption_text(text, f"caption file {path}", hint)


def check_caption_text(text: str, where: str, hint: str = "") -> str:
    """``text`` unchanged, or DatasetError naming ``where`` when it holds NULs or other control characters."""
    bad = _CONTROL.search(text)
    if bad:
        what = "NUL characters" if bad.group() == "\x00" else f"the control character {bad.group()!r}"
        hint = hint if bad.group() == "\x00" else ""
        raise DatasetError(f"{where} holds {what} (at character {bad.start()}); {hint}re-save it as UTF-8 text")
    return text


def caption_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The random stream for one sample occurrence; same (seed, epoch, index) -> same choices."""
    return random.Random(f"caption:{seed}:{epoch}:{index}")


def process_caption(caption: str, subset: SubsetParams, rng: random.Random, epoch: int = 1) -> str:
    """Apply prefix/suffix, dropout, wildcards, keep/shuffle/tag-dropout for one training step."""
    if subset.caption_prefix:
        caption = subset.caption_prefix + " " + caption
    if subset.caption_suffix:
        caption = caption + " " + subset.caption_suffix

    dropped = subset.caption_dropout_rate > 0 and rng.random() < subset.caption_dropout_rate
    every = subset.caption_dropout_every_n_epochs
    if dropped or (every > 0 and epoch % every == 0):
        return ""

    if subset.enable_wildcard:
        caption = expand_wildcards(caption, rng)
    else:
        caption = caption.split("\n")[0]

    sep = subset.caption_separator or ","
    keep_sep = subset.keep_tokens_separator
    shuffle_or_drop = subset.shuffle_caption or subset.caption_tag_dropout_rate > 0
    if keep_sep and keep_sep in caption:
        fixed_part, flex_part = caption.split(keep_sep, 1)
        suffix_part = ""
        if keep_sep in flex_part:
            flex_part, suffix_part = flex_part.split(keep_sep, 1)
        fixed, flex, suffix = (_tags(p, sep) for p in (fixed_part, flex_part, suffix_part))
        caption = ", ".join(fixed + _shuffle_and_drop(flex, subset, rng) + suffix)
    elif shuffle_or_drop:
        tags = _tags(caption, sep)
        keep = max(subset.keep_tokens, 0)
        caption = ", ".join(tags[:keep] + _shuffle_and_drop(tags[keep:], subset, rng))

    if subset.secondary_separator:
        caption = caption.replace(subset.secondary_separator, sep)
    return caption


def expand_wildcards(caption: str, rng: random.Random) -> str:
    """One random line of a multi-line caption, then ``{a|b}`` -> a or b; ``{{``/``}}`` are literal braces."""
    if "\n" in caption:
        caption = rng.choice(caption.split("\n"))
    open_mark, close_mark = "\x00<", ">\x00"
    caption = caption.replace("{{", open_mark).replace("}}", close_mark)
    caption = _WILDCARD.sub(lambda m: rng.choice(m.group(1).split("|")), caption)
    return caption.replace(open_mark, "{").replace(close_mark, "}")


def _tags(text: str, sep: str) -> list:
    return [t.strip() for t in text.split(sep) if t.strip()]


def _shuffle_and_drop(tags: list, subset: SubsetParams, rng: random.Random) -> list:
    tags = list(tags)
    if subset.shuffle_caption:
        rng.shuffle(tags)
    rate = subset.caption_tag_dropout_rate
    if rate > 0:
        tags = [t for t in tags if rng.random() >= rate]
    return tags


def captions_are_static(subset: SubsetParams) -> bool:
    """True when every step sees the same caption, so text-encoder outputs may be cached."""
    return not (
        subset.shuffle_caption
        or subset.caption_dropout_rate > 0
        or subset.caption_dropout_every_n_epochs > 0
        or subset.caption_tag_dropout_rate > 0
        or subset.enable_wildcard
    )


def tag_frequency(captions: Iterable[str], sep: str = ",") -> Dict[str, int]:
    """Lower-cased tag counts (for the ``ss_tag_frequency`` metadata)."""
    counts: Dict[str, int] = {}
    for caption in captions:
        for tag in caption.split(sep):
            tag = tag.strip().lower()
            if tag:
                counts[tag] = counts.get(tag, 0) + 1
    return counts
