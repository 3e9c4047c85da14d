import json

import pytest

from loop.artifacts import RunDir


def _writer(calls, text="x"):
    def fn(out):
        calls.append(out)
        (out / "data.txt").write_text(text)
        return {"n": len(calls)}
    return fn


def test_stage_skips_when_fingerprint_matches_and_reruns_when_changed(tmp_path):
    rd = RunDir(tmp_path)
    calls = []
    a = rd.stage(0, "a", [{"k": 1}], _writer(calls))
    assert not a.skipped and (tmp_path / "round_000/a/data.txt").read_text() == "x"
    done = json.loads((tmp_path / "round_000/a/DONE").read_text())
    assert done["fingerprint"] == a.fingerprint and done["summary"] == {"n": 1}

    again = rd.stage(0, "a", [{"k": 1}], _writer(calls))
    assert again.skipped and len(calls) == 1 and again.summary == {"n": 1}

    changed = rd.stage(0, "a", [{"k": 2}], _writer(calls, "y"))
    assert not changed.skipped and len(calls) == 2
    assert (tmp_path / "round_000/a/data.txt").read_text() == "y"


def test_downstream_reruns_when_upstream_changes(tmp_path):
    rd = RunDir(tmp_path)
    calls = []
    up = rd.stage(0, "up", [1], _writer([]))
    rd.stage(0, "down", [up.fingerprint], _writer(calls))
    up2 = rd.stage(0, "up", [2], _writer([]))
    down2 = rd.stage(0, "down", [up2.fingerprint], _writer(calls))
    assert not down2.skipped and len(calls) == 2


def test_interrupted_stage_leaves_no_done_and_reruns_from_scratch(tmp_path):
    rd = RunDir(tmp_path)

    def boom(out):
        (out / "half.txt").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        rd.stage(0, "s", [1], boom)
    assert not (tmp_path / "round_000/s").exists()
    assert rd.stage_status(0, "s")[0] == "partial"

    seen = []

    def fn(out):
        seen.append(sorted(p.name for p in out.iterdir() if p.name != ".fingerprint"))
        (out / "ok.txt").write_text("ok")

    res = rd.stage(0, "s", [1], fn)
    assert seen == [[]]                      # the half-written file was cleared
    assert (res.dir / "ok.txt").exists() and rd.stage_status(0, "s")[0] == "done"


def test_keep_partial_hands_back_checkpoints_only_for_same_fingerprint(tmp_path):
    rd = RunDir(tmp_path)

    def crash(out):
        (out / "ckpt").write_text("step 10")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        rd.stage(0, "train", [1], crash, keep_partial=True)
    seen = []
    rd.stage(0, "train", [1], lambda out: seen.append((out / "ckpt").exists()), keep_partial=True)
    assert seen == [True]

    with pytest.raises(RuntimeError):
        rd.stage(1, "train", [1], crash, keep_partial=True)
    seen.clear()
    rd.stage(1, "train", [2], lambda out: seen.append((out / "ckpt").exists()), keep_partial=True)
    assert seen == [False]                   # other inputs: the stale checkpoint is not reused


def test_reuse_from_copies_a_finished_twin_with_the_same_fingerprint(tmp_path):
    """A run extended by a round evaluates the adapter final/ already measured: copy, not recompute."""
    rd = RunDir(tmp_path)
    calls = []
    fin = rd.stage("final", "eval", [{"adapter": "a1"}], _writer(calls, "final scores"))
    twin = rd.stage(2, "eval", [{"adapter": "a1"}], _writer(calls, "recomputed"), reuse_from=("final",))
    assert len(calls) == 1 and twin.fingerprint == fin.fingerprint
    assert (tmp_path / "round_002/eval/data.txt").read_text() == "final scores"
    assert twin.summary == {"n": 1, "reused_from": "final/eval"}
    other = rd.stage(3, "eval", [{"adapter": "a2"}], _writer(calls, "new"), reuse_from=("final",))
    assert len(calls) == 2 and (other.dir / "data.txt").read_text() == "new"


def test_the_training_launcher_is_not_part_of_the_fingerprint():
    from loop.artifacts import fingerprint
    from train.lora import TrainConfig

    base = TrainConfig()
    assert fingerprint(base) == fingerprint(TrainConfig(launcher=["accelerate", "launch"]))
    assert fingerprint(base) != fingerprint(TrainConfig(lr=1e-3))
