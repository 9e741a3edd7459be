"""Prompt weighting: ``(word:1.2)``, ``(word)`` = x1.1, ``[word]`` = /1.1, ``\\(`` for a literal paren.

One parser for training captions (``--weighted_captions``) and sample/gen_img prompts, with A1111's
and kohya's grammar (kohya's ``parse_prompt_attention``):

- ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` by 1/1.1; they nest and multiply;
- ``(text:w)`` multiplies it by ``w`` (a plain number; ``[text:w]`` is not a weight);
- ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are the literal characters; a lone ``\\`` is dropped;
- an unclosed ``(`` or ``[`` applies to the rest of the prompt; a stray ``)`` or ``]`` is text;
- neighbouring pieces of equal weight are merged.

Tokens get the weight of the text they came from (each piece is tokenised alone, without BOS/EOS).
After encoding, kohya's ``get_weighted_text_embeddings`` scales every token's hidden state by its
weight and then rescales the whole sequence so its mean equals the unweighted mean
(``apply_token_weights``); the pooled SDXL vector is not weighted.
"""

from __future__ import annotations

import re
from typing import List, Tuple

import torch

ROUND, SQUARE = 1.1, 1 / 1.1

# one token of the grammar: an escape, an opening bracket, ":weight)", a closing bracket, plain text, or ":"
_TOKEN = re.compile(r"\\[()\[\]\\]|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|\]|[^\\()\[\]:]+|:")


def parse_prompt_weights(text: str) -> List[Tuple[str, float]]:
    """``"a (red:1.5) ball"`` -> ``[("a ", 1.0), ("red", 1.5), (" ball", 1.0)]``."""
    pieces: List[list] = []
    round_open: List[int] = []
    square_open: List[int] = []

    def scale_from(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for m in _TOKEN.finditer(text):
        tok, weight = m.group(0), m.group(1)
        if tok.startswith("\\"):
            pieces.append([tok[1:], 1.0])
        elif tok == "(":
            round_open.append(len(pieces))
        elif tok == "[":
            square_open.append(len(pieces))
        elif weight is not None and round_open and _is_number(weight):
            scale_from(round_open.pop(), float(weight))
        elif tok == ")" and round_open:
            scale_from(round_open.pop(), ROUND)
        elif tok == "]" and square_open:
            scale_from(square_open.pop(), SQUARE)
        else:
            pieces.append([tok, 1.0])
    for start in round_open:
        scale_from(start, ROUND)
    for start in square_open:
        scale_from(start, SQUARE)
    merged: List[list] = []
    for piece in pieces:
        if merged and merged[-1][1] == piece[1]:
            merged[-1][0] += piece[0]
        else:
            merged.append(list(piece))
    return [(t, w) for t, w in merged] or [("", 1.0)]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:  # "(a:1.2.3)" stays text
        return False


def plain_text(text: str) -> str:
    """The prompt with its weighting syntax removed (what the text encoder reads)."""
    return "".join(t for t, _ in parse_prompt_weights(text))


def has_weights(text: str) -> bool:
    """True when the syntax changes anything: a weight other than 1 or an escaped character."""
    parsed = parse_prompt_weights(text)
    return any(w != 1.0 for _, w in parsed) or "".join(t for t, _ in parsed) != text


def tokens_with_weights(tokenizer, text: str, limit: int) -> Tuple[List[int], List[float]]:
    """Token ids (no BOS/EOS) and one weight per token, cut at ``limit`` tokens."""
    ids: List[int] = []
    weights: List[float] = []
    for piece, weight in parse_prompt_weights(text):
        if not piece:
            continue
        piece_ids = tokenizer(piece, add_special_tokens=False).input_ids
        ids += piece_ids
        weights += [weight] * len(piece_ids)
    return ids[:limit], weights[:limit]


def apply_token_weights(hidden, weights):
    """kohya: ``h * w`` per token, then rescaled so each sample's mean over (tokens, width) is unchanged.

    ``hidden`` [B, L, D], ``weights`` [B, L]; computed in float32, returned in ``hidden``'s dtype.
    (With real CLIP encoders the mean is small but never zero; kohya divides unguarded.)
    """
    h = hidden.float()
    w = weights.to(h.device, h.dtype)
    before = h.mean(dim=(-2, -1))
    h = h * w.unsqueeze(-1)
    after = h.mean(dim=(-2, -1))
    # an exactly zero weighted mean (possible only with degenerate encoders) would divide by zero: leave it
    ratio = torch.where(after != 0, before / torch.where(after != 0, after, torch.ones_like(after)), torch.ones_like(after))
    return (h * ratio.view(-1, 1, 1)).to(hidden.dtype)
