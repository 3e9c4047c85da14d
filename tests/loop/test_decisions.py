"""Decisions use dev only: the plateau stop and the adapter handed over ignore test scores."""
from __future__ import annotations

import json

from loop.config import load_config
from loop.run import _hand_over, _plateaued


def _results(dev: float, test: float) -> dict:
    return {"tasks": {"t": {"dev": {"score": dev, "n": 10}, "test": {"score": test, "n": 10}}}}


def _student(tmp_path, i: int, dev_right: list[int], test_right: list[int]) -> dict:
    """A measured student: which dev and test items (of 40 each) it got right, as samples.jsonl rows,
    and the results.json means they give."""
    d = tmp_path / f"s{i}"
    d.mkdir()
    rows = [{"task": "t", "doc_id": k, "split": split, "correct": int(k in right)}
            for split, right in (("dev", dev_right), ("test", test_right)) for k in range(40)]
    (d / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "results.json").write_text(json.dumps(_results(len(dev_right) / 40, len(test_right) / 40)))
    return {"where": f"round_{i:03d}", "adapter": f"a{i}" if i else None, "dir": d}


def test_plateau_needs_a_paired_dev_gain_beyond_noise_within_patience(tmp_path):
    """A gain is the paired change on dev over the best student before the last ``patience`` ones:
    at least min_delta and a bootstrap CI above zero. Test items never decide."""
    cfg = load_config(None, ["stop.patience=2", "stop.min_delta=0.01"])
    base = list(range(8))                                 # 8 of 40 dev items right
    s0 = _student(tmp_path, 0, base, [])
    noisy = _student(tmp_path, 1, base[1:] + [8], list(range(40)))  # one item lost, one won: test is perfect
    tiny = _student(tmp_path, 2, base + [8], [])          # +1 item: 0.025, but its CI reaches 0
    clear = _student(tmp_path, 3, list(range(20)), [])    # +12 items, none lost: CI far above 0
    worse = _student(tmp_path, 4, base[:4], list(range(40)))
    assert not _plateaued([s0, noisy], cfg)               # too few students to judge
    assert _plateaued([s0, noisy, tiny], cfg)             # neither of the last two is a gain beyond noise
    assert not _plateaued([s0, noisy, clear], cfg)        # the last one is
    assert not _plateaued([s0, clear, worse], cfg)        # within patience, `clear` still holds its gain
    assert _plateaued([s0, clear, worse, tiny], cfg)      # the reference is now `clear`, the best before
    assert not _plateaued([s0, noisy, clear, worse, tiny], load_config(None, []))  # patience 0: never early


def test_hand_over_picks_the_best_dev_student_not_the_best_test(tmp_path):
    measured = []
    for i, (dev, test) in enumerate([(0.2, 0.9), (0.5, 0.1), (0.5, 0.2), (0.3, 0.95)]):
        d = tmp_path / f"e{i}"
        d.mkdir()
        (d / "results.json").write_text(json.dumps(_results(dev, test)))
        measured.append({"where": f"round_{i:03d}", "adapter": f"a{i}" if i else None, "dir": d})
    out = _hand_over(measured)
    assert (out["adapter"], out["measured_at"], out["dev_mean"], out["test_mean"]) == ("a1", "round_001", 0.5, 0.1)
    assert out["last_adapter"] == "a3" and out["last_test_mean"] == 0.95
