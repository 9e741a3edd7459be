"""CLIP tokenizers built offline from the BPE file shipped in ``data/``.

Every SD text encoder (CLIP-L, OpenCLIP-H, OpenCLIP-bigG) uses the same 49408-token
vocabulary, so one file serves all three; only the padding token differs. Building the
tokenizer here (instead of ``CLIPTokenizer.from_pretrained("openai/clip-vit-large-patch14")``)
means nothing is fetched from the Hugging Face hub, ever.

The vocabulary is derived from the merge list exactly as CLIP's reference tokenizer does:
the 256 byte-level characters, the same with ``</w>``, one token per merge, then the two
special tokens. The merge list is lines 1..48894 of the file (line 0 is a header).
"""

from __future__ import annotations

import functools
import gzip
from pathlib import Path

from transformers import CLIPTokenizer

BPE_FILE = Path(__file__).with_name("data") / "bpe_simple_vocab_16e6.txt.gz"
VOCAB_SIZE = 49408
MAX_LENGTH = 77
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
# SD1 and SDXL's CLIP-L pad with the end token; OpenCLIP (SD2's H, SDXL's bigG) pads with "!" (id 0).
PAD_CLIP = EOS_TOKEN
PAD_OPENCLIP = "!"
_NUM_MERGES = VOCAB_SIZE - 256 * 2 - 2


def _byte_to_unicode() -> list[tuple[int, str]]:
    """The reversible byte -> printable character table of byte-level BPE, in vocabulary order.

    Printable Latin-1 bytes map to themselves; the rest are shifted past 255 so no token
    contains whitespace or control characters.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\xa1"), ord("\xac") + 1))
        + list(range(ord("\xae"), ord("\xff") + 1))
    )
    table = [(b, chr(b)) for b in printable]
    shift = 0
    for b in range(256):
        if b not in printable:
            table.append((b, chr(256 + shift)))
            shift += 1
    return table


@functools.lru_cache(maxsize=1)
def clip_vocab_and_merges() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """(token -> id, merge pairs) from the shipped BPE file; parsed once per process."""
    with gzip.open(BPE_FILE, "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = tuple(tuple(line.split()) for line in lines[1 : 1 + _NUM_MERGES])
    chars = [c for _, c in _byte_to_unicode()]
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [BOS_TOKEN, EOS_TOKEN]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"{BPE_FILE}: expected {VOCAB_SIZE} tokens, built {len(vocab)}; the file is damaged")
    return vocab, merges


def clip_tokenizer(pad_token: str = PAD_CLIP) -> CLIPTokenizer:
    """A fresh CLIP tokenizer (77 tokens) padding with ``pad_token``.

    A new object each call: callers may add tokens (textual inversion) without touching
    anyone else's tokenizer. The parsed vocabulary behind it is cached.
    """
    if pad_token not in (PAD_CLIP, PAD_OPENCLIP):
        raise ValueError(f"pad_token must be {PAD_CLIP!r} or {PAD_OPENCLIP!r}, got {pad_token!r}")
    vocab, merges = clip_vocab_and_merges()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=MAX_LENGTH,
    )


def tokenizers_from_configs(tokenizer_configs: list[dict]) -> list[CLIPTokenizer]:
    """One shipped tokenizer per entry of ``configs["tokenizers"]`` (``{"pad_token": ...}``)."""
    return [clip_tokenizer(c.get("pad_token", PAD_CLIP)) for c in tokenizer_configs]
