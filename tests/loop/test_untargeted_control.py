"""``control: untargeted`` end to end: the shared smoke run's round 0 (its targeted stages copied, so
they resume) re-run with the untargeted control arm, whose data is synthesized without the diagnosis
and topped up with random pool records to the targeted mix's token count."""
from __future__ import annotations

import json
import shutil

from evalsuite.records import read_json, read_records
from smoke import cli

TARGETED = ("eval", "tag", "diagnose", "synthesize", "retrieve", "mix", "train")


def test_untargeted_control_synthesizes_without_the_diagnosis(smoke_run, tmp_path):
    run_dir, args = smoke_run
    run = tmp_path / "untargeted"
    for s in TARGETED:
        shutil.copytree(run_dir / "round_000" / s, run / "round_000" / s)
    shutil.copytree(run_dir / "cache", run / "cache")
    before = {s: (run / "round_000" / s / "DONE").read_text() for s in TARGETED}
    args = list(args)
    args[args.index("--rounds") + 1], args[args.index("--run-dir") + 1] = "1", str(run)
    proc = cli([*args, "control=untargeted", "tracking.wandb=disabled"])
    assert proc.wait(timeout=900) == 0

    r0 = run / "round_000"
    assert {s: (r0 / s / "DONE").read_text() for s in TARGETED} == before   # the targeted arm resumed as it was
    defs = read_json(r0 / "control_synth" / "deficiencies.json")
    assert defs["untargeted"] and {d["tasks"][0] for d in defs["deficiencies"]} == {
        "math_offline", "ifeval_offline", "humaneval_offline"}
    assert not any(d["examples"] or d["error"] or d["tags"] for d in defs["deficiencies"])
    synth = read_records(r0 / "control_synth" / "records.jsonl")
    assert synth, "the scripted teacher answers the untargeted prompts as it does the targeted ones"
    assert all(rec["meta"]["deficiency_id"].startswith("untargeted-") for rec in synth)
    assert not {rec["id"] for rec in synth} & {rec["id"] for rec in read_records(r0 / "synthesize" / "records.jsonl")}

    data = read_json(r0 / "control_data" / "DONE")["summary"]
    chosen = read_records(r0 / "control_data" / "train_data.jsonl")
    assert data["first_offered"] == len(synth) and data["first_taken"] >= 1
    assert [rec["id"] for rec in chosen[:data["first_taken"]]] == [rec["id"] for rec in synth][:data["first_taken"]]
    assert data["tokens"] >= data["target_tokens"] > 0
    assert all(rec["source"].startswith("pool:") for rec in chosen[data["first_taken"]:])

    st = json.loads((run / "state.json").read_text())
    assert st["status"] == "finished" and st["rounds"]["0"]["vs_control"]["_all"]["n"] > 0
    assert "records synthesized without the diagnosis" in (run / "report.html").read_text()
