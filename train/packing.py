"""Packing without padding: examples into rows, rows into flat padding-free batches.

Rows are filled best-fit-decreasing up to ``max_seq_len`` tokens (as TRL's ``bfd``
packing). A batch of rows is then concatenated into ONE flat sequence of shape (1, N) with
``position_ids`` restarting at 0 for every example (the "padding-free" layout of TRL and of
transformers' ``DataCollatorWithFlattening``): no pad token is ever computed, and the
attention (see ``attention.py``) keeps every example to itself. Labels are handed over as
``shift_labels`` (the target of each position), so no collator can re-mask them: with
SmolLM2, pad == eos == ``<|im_end|>``, and a pad-based collator would mask every end-of-turn.
"""
from __future__ import annotations

import bisect
import random

import torch

from .format import IGNORE, Example


def pack_rows(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing: indices grouped into rows of at most ``capacity`` tokens.

    Ties keep input order (the caller shuffled it with the seed), so the result is deterministic.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # sorted (remaining capacity, row index)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            rem, r = free.pop(k)
        else:
            rem, r = capacity, len(rows)
            rows.append([])
        rows[r].append(i)
        if rem - n > 0:
            bisect.insort(free, (rem - n, r))
    return rows


def make_rows(examples: list[Example], capacity: int, pack: bool, seed: int) -> list[list[int]]:
    """Rows of example indices in training order (rows shuffled with the seed)."""
    if pack:
        rows = pack_rows([len(e.input_ids) for e in examples], capacity)
    else:
        rows = [[i] for i in range(len(examples))]
    random.Random(seed).shuffle(rows)
    return rows


class RowDataset(torch.utils.data.Dataset):
    """Item i is row i: the list of examples packed into it."""

    def __init__(self, examples: list[Example], rows: list[list[int]]):
        self.examples, self.rows = examples, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> list[Example]:
        return [self.examples[j] for j in self.rows[i]]

    def row_tokens(self, i: int) -> int:
        return sum(len(self.examples[j].input_ids) for j in self.rows[i])


class FlatCollator:
    """Rows -> one flat (1, N) batch: input_ids, position_ids, labels, shift_labels.

    ``log`` keeps, per batch built, (tokens, trained tokens, sum of squared example lengths —
    which sets the attention cost) so throughput is measured on what the model computed.
    Padding is 0 by construction. The Trainer's dataloader builds one batch ahead, so count
    from ``log[:batches_run]``, not from the whole log.
    """

    def __init__(self):
        self.log: list[tuple[int, int, int]] = []

    def __call__(self, rows: list[list[Example]]) -> dict[str, torch.Tensor]:
        ids, pos, labels, shift, sq = [], [], [], [], 0
        for row in rows:
            for ex in row:
                n = len(ex.input_ids)
                sq += n * n
                ids += ex.input_ids
                pos += range(n)
                labels += ex.labels
                # target of position t is label t+1; the last token of an example predicts nothing
                shift += ex.labels[1:] + [IGNORE]
        self.log.append((len(ids), sum(1 for x in shift if x != IGNORE), sq))
        t = lambda x: torch.tensor([x], dtype=torch.long)  # noqa: E731
        return {"input_ids": t(ids), "position_ids": t(pos), "labels": t(labels), "shift_labels": t(shift)}

    def totals(self, batches: int) -> tuple[int, int, int]:
        """(tokens, trained, sq) summed over the first ``batches`` batches built."""
        rows = self.log[:batches]
        return tuple(sum(r[i] for r in rows) for i in range(3))  # type: ignore[return-value]
