"""Captions and prompts -> UNet conditioning, per family, the way kohya's trainers compute it.

Inference owns it (training encodes captions with it, sample images and tools/gen_img.py encode
weighted or clip-skipped prompts with it), so a prompt is conditioned exactly as a caption was in training.

SD1/SD2: one CLIP; ``clip_skip`` k > 1 takes the k-th hidden state from the end and applies
the final layer norm. SDXL: CLIP-L penultimate ‖ bigG penultimate (2048 wide) as context, and
bigG's projected pooled output plus the size/crop embedding as the extra vector.
``max_token_length`` 150/225 splits the caption into 75-token chunks, each wrapped in
BOS/EOS and encoded separately, then concatenated (kohya's long-prompt scheme).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from library.errors import UserError
from library.inference.prompt_weights import apply_token_weights, tokens_with_weights

CHUNK = 75  # tokens per chunk, without BOS/EOS


@dataclass
class Conditioning:
    """What the UNet takes besides the noisy latents."""

    context: torch.Tensor  # [B, L, D]
    pooled: torch.Tensor | None = None  # SDXL: bigG text_embeds [B, P]


def _core(text_encoder):
    """The CLIPTextTransformer-like module holding ``final_layer_norm`` (v5 flattens CLIPTextModel)."""
    return getattr(text_encoder, "text_model", text_encoder)


def _length(max_token_length: int | None) -> int:
    length = max_token_length or CHUNK
    if length % CHUNK:
        raise UserError(f"--max_token_length must be 75, 150 or 225, got {max_token_length}")
    return length


def tokenize(tokenizer, captions: list[str], max_token_length: int | None = None) -> torch.Tensor:
    """Token ids [B, n_chunks * 77], each chunk ``BOS + 75 tokens + EOS/pad``."""
    length = _length(max_token_length)
    ids = tokenizer(list(captions), padding="max_length", truncation=True, max_length=length + 2, return_tensors="pt").input_ids
    return _chunked(tokenizer, ids, length)


def tokenize_weighted(tokenizer, captions: list[str], max_token_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(token ids as :func:`tokenize` lays them out, weights [B, 75n + 2] for the merged context).

    ``(word:1.2)``-style weights (library/inference/prompt_weights.py); BOS, EOS and padding weigh 1.
    A caption without weighting syntax gets the ids :func:`tokenize` gives it.
    """
    length = _length(max_token_length)
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    rows, weight_rows = [], []
    for caption in captions:
        ids, weights = tokens_with_weights(tokenizer, caption, length)
        rest = length - len(ids)
        rows.append([bos] + ids + [eos] + [pad] * rest)
        weight_rows.append([1.0] + weights + [1.0] * (rest + 1))
    full = torch.tensor(rows, dtype=torch.long)
    return _chunked(tokenizer, full, length), torch.tensor(weight_rows, dtype=torch.float32)


def _chunked(tokenizer, ids: torch.Tensor, length: int) -> torch.Tensor:
    """[B, length + 2] ids -> [B, n * 77]: each 75-token chunk wrapped in BOS ... EOS (kohya's long captions)."""
    if length == CHUNK:
        return ids
    bos, eos, pad = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    chunks = []
    for start in range(1, length + 1, CHUNK):
        chunk = torch.cat([ids[:, :1], ids[:, start : start + CHUNK], ids[:, -1:]], dim=1).clone()
        # A chunk cut mid-caption must still end with EOS; one that starts on padding gets EOS first.
        cut = (chunk[:, -2] != eos) & (chunk[:, -2] != pad)
        chunk[cut, -1] = eos
        starts_on_pad = chunk[:, 1] == pad
        chunk[starts_on_pad, 1] = eos
        chunk[:, 0] = bos
        chunks.append(chunk)
    return torch.cat(chunks, dim=1)


def _merge_chunks(states: torch.Tensor, batch: int) -> torch.Tensor:
    """[B*n, 77, D] -> [B, 75n + 2, D]: first BOS, every chunk's 75 tokens, last EOS."""
    n = states.shape[0] // batch
    states = states.reshape(batch, n, states.shape[1], states.shape[2])
    if n == 1:
        return states[:, 0]
    parts = [states[:, 0, :1]] + [states[:, i, 1:-1] for i in range(n)] + [states[:, -1, -1:]]
    return torch.cat(parts, dim=1)


def _hidden(text_encoder, ids: torch.Tensor, layer_from_end: int, final_norm: bool):
    out = text_encoder(ids.to(text_encoder.device), output_hidden_states=True)
    if layer_from_end == 1 and final_norm:
        return out.last_hidden_state, out
    h = out.hidden_states[-layer_from_end]
    if final_norm:
        h = _core(text_encoder).final_layer_norm(h)
    return h, out


def encode(text_encoders: list, token_ids: list[torch.Tensor], family: str, clip_skip: int | None = None,
           weights: list[torch.Tensor] | None = None) -> Conditioning:
    """Conditioning for a batch of token ids (one tensor per text encoder, from :func:`tokenize`).

    ``weights`` (one per encoder, from :func:`tokenize_weighted`) weight each encoder's hidden states
    as kohya's get_weighted_text_embeddings does; SDXL's pooled vector stays unweighted."""
    batch = token_ids[0].shape[0]

    def weighted(h, i):
        return apply_token_weights(h, weights[i]) if weights is not None else h

    if family != "sdxl":
        ids = token_ids[0].reshape(-1, 77)
        h, _ = _hidden(text_encoders[0], ids, clip_skip or 1, final_norm=True)
        return Conditioning(weighted(_merge_chunks(h, batch), 0))
    ids1, ids2 = (t.reshape(-1, 77) for t in token_ids)
    h1, _ = _hidden(text_encoders[0], ids1, 2, final_norm=False)
    h2, out2 = _hidden(text_encoders[1], ids2, 2, final_norm=False)
    pooled = out2.text_embeds.reshape(batch, -1, out2.text_embeds.shape[-1])[:, 0]  # first chunk's pooled, as kohya
    context = torch.cat([weighted(_merge_chunks(h1, batch), 0), weighted(_merge_chunks(h2, batch), 1)], dim=-1)
    return Conditioning(context, pooled)


def encode_captions(base, captions: list[str], max_token_length: int | None, clip_skip: int | None,
                    weighted: bool = False, device=None) -> Conditioning:
    """Captions -> conditioning with the model's tokenizers and encoders; ``weighted`` parses ``(word:1.2)``."""
    device = device if device is not None else base.text_encoders[0].device
    if not weighted:
        ids = [tokenize(tok, captions, max_token_length).to(device) for tok in base.tokenizers]
        return encode(base.text_encoders, ids, base.family, clip_skip)
    pairs = [tokenize_weighted(tok, captions, max_token_length) for tok in base.tokenizers]
    return encode(base.text_encoders, [p[0].to(device) for p in pairs], base.family, clip_skip, [p[1] for p in pairs])
