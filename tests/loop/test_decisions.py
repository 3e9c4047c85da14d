"""Decisions use dev only: the plateau stop and the adapter handed over ignore test scores."""
from __future__ import annotations

import json

from loop.config import load_config
from loop.run import _hand_over, _plateaued


def _results(dev: float, test: float) -> dict:
    return {"tasks": {"t": {"dev": {"score": dev, "n": 10}, "test": {"score": test, "n": 10}}}}


def test_plateau_looks_at_dev_with_patience():
    cfg = load_config(None, ["stop.patience=2", "stop.min_delta=0.01"])
    assert not _plateaued([0.2, 0.2], cfg)                    # too few students to judge
    assert not _plateaued([0.2, 0.25, 0.2], cfg)              # the last two hold a gain over 0.2
    assert _plateaued([0.3, 0.25, 0.305], cfg)                # neither of the last two beat 0.3 by 0.01
    assert not _plateaued([0.3] * 5, load_config(None, []))   # patience 0: never stops early


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
