"""Bad input stops a run before any work, in one line, exit code 2 (a test per catalogue entry)."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from evalsuite.records import make_record, write_jsonl
from loop.__main__ import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def setup(tmp_path, tiny_model_path):
    """A tiny valid world: a one-task user suite, a small pool; each case then breaks one thing."""
    data = tmp_path / "qa.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": i + 1}) + "\n"
                            for i in range(4)))
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"tasks:\n  - name: qa\n    data: {data}\n    metric: numeric\n")
    pool = tmp_path / "pool.jsonl"
    write_jsonl(pool, [make_record([{"role": "user", "content": f"hi {i}"}, {"role": "assistant", "content": "hello"}],
                                   "pool:t") for i in range(3)])
    args = ["run", "--config", str(REPO / "configs/smoke.yaml"), "--run-dir", str(tmp_path / "run"),
            f"student.model={tiny_model_path}", "teacher.backend=fake", "teacher.model=builtin",
            f"eval.suite={suite}", f"retrieve.pool.source={pool}", f"cache_dir={tmp_path / 'cache'}",
            "tracking.wandb=disabled"]
    return tmp_path, args, data, suite, pool


def _broken_yaml(t, args, *_):
    (t / "bad.yaml").write_text("name: x\ntrain: [unclosed\n")
    return [a if not a.endswith("smoke.yaml") else str(t / "bad.yaml") for a in args], r"bad.yaml:\d+: invalid YAML"


def _missing_config(t, args, *_):
    return [a if not a.endswith("smoke.yaml") else str(t / "nope.yaml") for a in args], "config file not found"


def _without(module: str, args: list[str], message: str):
    """A case whose config needs ``module``, run where it is not installed."""
    def case(t, a, d, s, p, mp):
        from loop import preflight

        real = preflight._installed
        mp.setattr(preflight, "_installed", lambda m: m != module and real(m))
        return a + args, message
    return case


def _hub_id_not_cached(key: str, extra: list[str]):
    def case(t, a, d, s, p, mp):
        import huggingface_hub.constants

        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(t / "hf-cache"))   # an empty cache
        return a + extra + [f"{key}=someorg/not-downloaded"], (
            rf"{key}: hub id 'someorg/not-downloaded' is not in the local Hugging Face cache and HF_HUB_OFFLINE=1; "
            r"valid: a local model folder \(with config.json\), embedded:smollm2-135m-instruct, or a hub id in the cache")
    return case


CASES = {
    "broken yaml": _broken_yaml,
    "missing config file": _missing_config,
    "unknown key": lambda t, a, *_: (a + ["train.lora.rr=3"], r"unknown key 'train.lora.rr' \(did you mean"),
    "wrong type": lambda t, a, *_: (a + ["eval.limit=many"], r"eval.limit: expected int, got str 'many'"),
    "enum typo": lambda t, a, *_: (a + ["train.policy=contnue"], r"train.policy: must be one of"),
    "empty benchmark": lambda t, a, d, *_: (d.write_text("") and a or a, r"eval.suite: .*qa.jsonl: no rows"),
    "broken benchmark line": lambda t, a, d, *_: (
        d.write_text(d.read_text() + "{not json\n") and a or a, r"eval.suite: .*qa.jsonl:5: invalid JSON"),
    "unknown metric": lambda t, a, d, s, *_: (
        s.write_text(f"tasks:\n  - name: qa\n    data: {d}\n    metric: rouge\n") and a or a,
        r"eval.suite: .*task 'qa': key 'metric' must be one of"),
    "broken pool line": lambda t, a, d, s, p, *_: (
        p.write_text(p.read_text() + "{oops\n") and a or a, r"retrieve.pool.source: .*pool.jsonl:4"),
    "missing pool": lambda t, a, *_: (a + [f"retrieve.pool.source={t / 'none.jsonl'}"],
                                      r"retrieve.pool.source: .*none.jsonl"),
    "pool of the wrong format in a list": lambda t, a, d, s, p, *_: (
        a + [f"retrieve.pools=[{{source: {p}, weight: 2}}, {{source: {p}, name: again, format: alpaca}}]"],
        r"retrieve.pools\[1\].source: .*pool.jsonl:1: format 'alpaca' needs"),
    "unknown pool format": lambda t, a, d, s, p, *_: (
        (t / "odd.jsonl").write_text('{"question": "q", "answer": "a"}\n') and a + [f"retrieve.pools=[{{source: {t / 'odd.jsonl'}}}]"] or a,
        r"retrieve.pools\[0\].source: .*odd.jsonl:1: unknown row format"),
    "unwritable run dir": lambda t, a, *_: (
        (t / "afile").write_text("x") and a + ["--run-dir", str(t / "afile" / "run")] or a,
        r"--run-dir .*afile/run: not writable"),
    "missing student": lambda t, a, *_: (a + [f"student.model={t / 'no-model'}"],
                                         r"student.model: .*no-model is not a model folder"),
    "missing fake script": lambda t, a, *_: (a + [f"teacher.model={t / 'script.json'}"],
                                             r"teacher.model: the fake backend takes 'builtin' or a script file"),
    "missing teacher folder (hf)": lambda t, a, *_: (a + ["teacher.backend=hf", f"teacher.model={t / 'no-teacher'}"],
                                                     r"teacher.model: .*no-teacher is not a model folder"),
    "missing teacher folder (ct2)": lambda t, a, *_: (a + ["teacher.backend=ct2", f"teacher.model={t / 'no-teacher'}"],
                                                      r"teacher.model: .*no-teacher is not a model folder"),
    "openai base_url not a URL": lambda t, a, *_: (
        a + ["teacher.backend=openai", "teacher.model=served", "teacher.base_url=localhost:8000/v1"],
        r"teacher.base_url: the openai backend needs the server's URL \(http://host:port/v1\), got 'localhost:8000/v1'"),
    "vllm missing (eval backend)": _without("vllm", ["eval.backend=vllm"],
                                            r"eval.backend: needs the 'vllm' package, which is not installed"),
    "vllm missing (teacher backend)": _without("vllm", ["teacher.backend=vllm", "teacher.model=embedded:smollm2-135m-instruct"],
                                               r"teacher.backend: needs the 'vllm' package, which is not installed"),
    "ray missing": _without("ray", ["executor.kind=ray"],
                            r"executor.kind: needs the 'ray' package, which is not installed \(pip install"),
    "flash_attn missing": _without("flash_attn", ["train.attn_implementation=flash_attention_2"],
                                   r"train.attn_implementation: needs the 'flash_attn' package, which is not installed"),
    "student hub id not in the cache": _hub_id_not_cached("student.model", []),
    "teacher hub id not in the cache": _hub_id_not_cached("teacher.model", ["teacher.backend=hf"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_and_exit_2_before_any_work(case, setup, capsys, monkeypatch):
    t, args, data, suite, pool = setup
    argv, message = CASES[case](t, args, data, suite, pool, monkeypatch)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()   # progress bars may precede it; the error is one line
    assert "Traceback" not in err and len([x for x in err.splitlines() if "error" in x]) == 1, err
    assert re.search(message, err.splitlines()[-1]), err
    assert not list((t / "run").glob("round_*")), "no stage ran"


def test_a_sandbox_that_cannot_confine_code_stops_before_work(setup, capsys, monkeypatch):
    from evalsuite import sandbox_mechanisms as mech

    t, args, *_ = setup
    monkeypatch.setenv(mech.ENV_VAR, "auto")      # restored afterwards: the loop sets it for its stages
    monkeypatch.setattr(mech, "probe", lambda m: "not installed")
    assert main(args + ["eval.sandbox=bwrap"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert re.search(r"eval.sandbox: sandbox: cannot confine model-written code here \(bwrap: not installed\); "
                     r"install bubblewrap", last), last
    assert not list((t / "run").glob("round_*"))
    # the user's explicit opt-in passes (and is what every stage then reads)
    monkeypatch.setattr(mech, "probe", lambda m: "not installed")
    from loop import preflight
    preflight._sandbox("unsafe-host")
    assert mech.requested() == "unsafe-host"


def test_the_real_cli_prints_no_traceback_and_debug_shows_one(setup):
    t, args, data, *_ = setup
    data.write_text("")
    base = [sys.executable, "-m", "loop"]
    out = subprocess.run(base + args, cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: eval.suite:")
    dbg = subprocess.run(base + ["--debug"] + args, cwd=REPO, capture_output=True, text=True)
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr and "PreflightError" in dbg.stderr


def _fake_hub_cache(root, repo_id: str):
    """The layout huggingface_hub downloads into: refs/main names the snapshot holding the files."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")


def test_hub_ids_in_the_cache_pass_and_others_are_named_without_the_network(tmp_path, monkeypatch):
    import huggingface_hub
    import huggingface_hub.constants

    from loop import preflight

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    _fake_hub_cache(tmp_path, "someorg/downloaded")
    calls = []

    def no_network(repo_id, timeout=None):
        calls.append(repo_id)
        raise ConnectionError("network is unreachable")
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    for offline in ("1", "0"):
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
        preflight._model("student.model", "someorg/downloaded")     # cached: fine, online or not
    assert calls == []
    # online, not cached, the hub unreachable: the same one line, naming why
    with pytest.raises(preflight.PreflightError, match=r"teacher.model: hub id 'someorg/elsewhere' is not in the local "
                       r"Hugging Face cache and the hub cannot be reached \(ConnectionError\); valid:"):
        preflight._model("teacher.model", "someorg/elsewhere")
    assert calls == ["someorg/elsewhere"]
    with pytest.raises(preflight.PreflightError, match=r"student.model: 'a/b/c' is not a hub id"):
        preflight._model("student.model", "a/b/c")
