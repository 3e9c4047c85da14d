"""Packing: rows within capacity, flat batches, and no attention across packed examples."""
from __future__ import annotations

import torch

from train import attention
from train.format import IGNORE, Example
from train.packing import FlatCollator, make_rows, pack_rows


def test_best_fit_decreasing_respects_capacity_and_uses_each_example_once():
    lengths = [7, 3, 5, 9, 1, 4, 6, 2, 8, 10]
    rows = pack_rows(lengths, capacity=10)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 10 for r in rows)
    assert len(rows) == -(-sum(lengths) // 10)  # 55 tokens fit in the minimum 6 rows here
    assert pack_rows(lengths, 10) == rows


def test_rows_are_seeded():
    exs = [Example([1] * n, [1] * n) for n in (3, 4, 5, 6, 7, 8)]
    assert make_rows(exs, 10, True, seed=1) == make_rows(exs, 10, True, seed=1)
    assert make_rows(exs, 10, False, seed=1) != make_rows(exs, 10, False, seed=2)


def test_collator_flattens_without_padding_and_shifts_labels():
    a = Example([10, 11, 12], [IGNORE, 11, 12])
    b = Example([20, 21], [IGNORE, 21])
    col = FlatCollator()
    batch = col([[a, b], [a]])
    assert batch["input_ids"].tolist() == [[10, 11, 12, 20, 21, 10, 11, 12]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 1, 2]]
    # position t targets token t+1 of the same example; an example's last token targets nothing
    assert batch["shift_labels"].tolist() == [[11, 12, IGNORE, 21, IGNORE, 11, 12, IGNORE]]
    assert col.log == [(8, 5, 3 * 3 + 2 * 2 + 3 * 3)] and col.totals(1) == (8, 5, 22)


def test_packed_forward_equals_separate_forwards(tiny_model_path):
    from transformers import AutoModelForCausalLM

    name = attention.register()
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation=name).eval()
    ref = AutoModelForCausalLM.from_pretrained(tiny_model_path, attn_implementation="sdpa").eval()
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(3, 1000, (n,), generator=g) for n in (5, 9, 4)]
    ids = torch.cat(seqs)[None]
    pos = torch.cat([torch.arange(len(s)) for s in seqs])[None]
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
        alone = torch.cat([ref(input_ids=s[None], use_cache=False).logits[0] for s in seqs])
        # transformers' own sdpa path (block-diagonal mask from position_ids) agrees too
        masked = ref(input_ids=ids, position_ids=pos, use_cache=False).logits[0]
    torch.testing.assert_close(packed, alone, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(masked, alone, atol=1e-4, rtol=1e-4)
    # and a plain causal run over the concatenation (leaking across examples) does not
    with torch.no_grad():
        leaky = ref(input_ids=ids, use_cache=False).logits[0]
    assert not torch.allclose(leaky[5:], alone[5:], atol=1e-3)
