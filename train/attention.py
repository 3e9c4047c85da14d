"""``packed_sdpa``: causal SDPA run per packed example (varlen attention without flash-attn).

With a flat padding-free batch, transformers' own ``sdpa`` builds a block-diagonal (N, N)
mask from the restarting ``position_ids`` and computes all N*N scores; on CPU that is
wasted work growing with the square of the pack length. Here each example's span gets its
own ``is_causal`` SDPA call: the attention cost is that of the examples alone, exactly as
``flash_attention_2`` does on a GPU (which also reads packed ``position_ids``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

NAME = "packed_sdpa"


def _lengths(position_ids: torch.Tensor) -> list[int]:
    """Lengths of the examples in one flat row (positions restart at 0 for each)."""
    starts = (position_ids == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0] + starts
    return [e - s for s, e in zip(starts, starts[1:] + [position_ids.numel()])]


def packed_sdpa_forward(module, query, key, value, attention_mask, dropout=0.0, scaling=None,
                        position_ids=None, **kwargs):
    """query (B, H, T, D), key/value (B, Hkv, T, D) -> (B, T, H, D), None."""
    if attention_mask is not None:
        raise ValueError("packed_sdpa expects flat padding-free batches (no attention_mask)")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    T = query.shape[2]
    if position_ids is None or key.shape[2] != T:
        lens_per_row = [[T]] * query.shape[0]
    else:
        pos = position_ids.expand(query.shape[0], -1)
        lens_per_row = [_lengths(pos[b]) for b in range(query.shape[0])]
    rows = []
    # split/unbind, not slicing: their backward concatenates the pieces' gradients, where the
    # backward of each slice would zero-fill and add a full-size tensor (O(examples x T) traffic)
    for q, k, v, lens in zip(query.unbind(0), key.unbind(0), value.unbind(0), lens_per_row):
        parts = [F.scaled_dot_product_attention(qs, ks, vs, dropout_p=dropout, scale=scaling, is_causal=True)
                 for qs, ks, vs in zip(q.split(lens, 1), k.split(lens, 1), v.split(lens, 1))]
        rows.append(parts[0] if len(parts) == 1 else torch.cat(parts, dim=1))
    out = torch.stack(rows, 0)
    return out.transpose(1, 2).contiguous(), None


def _no_mask(*args, **kwargs):
    return None  # spans come from position_ids; no (N, N) mask is ever built


def register() -> str:
    """Make ``attn_implementation="packed_sdpa"`` available to transformers models (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS

    AttentionInterface.register(NAME, packed_sdpa_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, _no_mask)
    return NAME
