"""Model-written code runs in a child process; bad programs are failures, the caller survives."""
import json
import logging
import os

import pytest

from evalsuite import sandbox_mechanisms as mech
from evalsuite.sandbox import SandboxUnavailable, run_code

WORKING = [m for m in mech.CONFINED if mech.probe(m) is None]
# where nothing can confine code, run_code refuses (tested below) instead of running it
needs_box = pytest.mark.skipif(not WORKING, reason="neither bwrap nor unshare works here")


@needs_box
def test_passing_and_failing_programs():
    ok = run_code("def f(x):\n    return x + 1\nassert f(1) == 2\nprint('fine')", timeout_s=5)
    assert ok.passed and ok.status == "passed" and "fine" in ok.stdout
    bad = run_code("assert 1 + 1 == 3", timeout_s=5)
    assert not bad.passed and bad.status == "failed" and "AssertionError" in bad.stderr
    syntax = run_code("def f(:\n  pass", timeout_s=5)
    assert syntax.status == "failed" and "SyntaxError" in syntax.stderr


@needs_box
def test_infinite_loop_is_a_timeout():
    r = run_code("while True:\n    pass", timeout_s=1.5)
    assert r.status == "timeout" and not r.passed


@needs_box
def test_memory_hog_is_a_failure():
    r = run_code("blocks = []\nwhile True:\n    blocks.append(bytearray(50 * 1024 * 1024))", timeout_s=10, memory_mb=256)
    assert r.status == "memory" and not r.passed


@needs_box
def test_network_and_processes_are_refused():
    sock = run_code("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)", timeout_s=5)
    assert not sock.passed and "not allowed" in sock.stderr
    raw = run_code("import socket\ns = socket.socket()\ns.bind(('0.0.0.0', 0))", timeout_s=5)
    assert not raw.passed
    sub = run_code("import subprocess\nsubprocess.run(['true'])", timeout_s=5)
    assert not sub.passed and "subprocess.Popen" in sub.stderr


@needs_box
def test_writes_stay_in_the_private_dir(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run_code(f"open({str(target)!r}, 'w').write('x')", timeout_s=5)
    assert not r.passed and not target.exists()
    local = run_code("open('scratch.txt', 'w').write('ok')\nassert open('scratch.txt').read() == 'ok'", timeout_s=5)
    assert local.passed
    assert os.getcwd() != "/"  # the caller's working directory is untouched


# ---- mechanism choice, refusal, recording --------------------------------------------------


def test_no_mechanism_means_a_one_line_refusal(monkeypatch):
    monkeypatch.setattr(mech, "probe", lambda m: "not installed" if m == "bwrap" else "Operation not permitted")
    for requested in ("auto", "bwrap", "unshare"):
        with pytest.raises(SandboxUnavailable) as err:
            run_code("print('never runs')", mechanism=requested)
        msg = str(err.value)
        assert "\n" not in msg and "apt-get install bubblewrap" in msg
        assert "kernel.unprivileged_userns_clone=1" in msg and "unsafe-host" in msg
    assert "bwrap: not installed" in msg or "unshare: Operation not permitted" in msg
    assert mech.describe("auto")["mechanism"] is None and "bubblewrap" in mech.describe("auto")["error"]
    monkeypatch.setenv(mech.ENV_VAR, "auto")
    with pytest.raises(SandboxUnavailable):  # what metrics.pass_at_1 and synth.verify get
        run_code("print('never runs')")


def test_unsafe_host_runs_only_when_asked_and_says_so(monkeypatch, caplog):
    monkeypatch.setattr(mech, "probe", lambda m: "not installed")
    mech._warn_unsafe.cache_clear()
    monkeypatch.setenv(mech.ENV_VAR, "unsafe-host")
    with caplog.at_level(logging.WARNING):
        r = run_code("print('on the host')")
    assert r.passed and r.mechanism == "unsafe-host" and "without kernel isolation" in caplog.text
    assert mech.describe()["warning"].startswith("sandbox: unsafe-host")
    monkeypatch.setenv(mech.ENV_VAR, "nonsense")
    with pytest.raises(ValueError, match="must be one of"):
        run_code("pass")


@pytest.mark.skipif("unshare" not in WORKING, reason=f"unshare: {mech.probe('unshare')}")
def test_auto_falls_back_to_unshare(monkeypatch):
    real = mech.probe
    monkeypatch.setattr(mech, "probe", lambda m: "not installed" if m == "bwrap" else real(m))
    r = run_code("print('hi')", timeout_s=10)
    assert r.passed and r.mechanism == "unshare"


@pytest.mark.skipif(not WORKING, reason="no confined mechanism works on this machine")
def test_run_eval_passes_the_choice_to_the_scorers_and_records_it(tiny_model_path, tmp_path, monkeypatch):
    from evalsuite.harness import EvalConfig, run_eval

    monkeypatch.delenv(mech.ENV_VAR, raising=False)  # run_eval sets it; restored after the test
    chosen = WORKING[-1]  # unshare where both work: not what auto would pick
    (tmp_path / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Write add(a, b).", "test": "assert add(2, 3) == 5"},
        {"question": "Write neg(a).", "test": "assert neg(2) == -2"}]))
    (tmp_path / "suite.yaml").write_text("tasks:\n  - name: my_code\n    data: code.jsonl\n"
                                         "    metric: code_exec\n    max_gen_toks: 8\n")
    cfg = EvalConfig(suite=str(tmp_path / "suite.yaml"), bootstrap=10, sandbox=chosen)
    res = run_eval(cfg, tiny_model_path, None, tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    # two scored programs, plus one evidence re-run per failed item (evalsuite.evidence)
    failed = sum(1 for line in (tmp_path / "out" / "samples.jsonl").read_text().splitlines()
                 if json.loads(line).get("evidence", {}).get("kind") == "code")
    assert saved["sandbox"] == res["sandbox"] == {"requested": chosen, "mechanism": chosen, "programs": 2 + failed}


def test_run_eval_refuses_code_tasks_without_a_mechanism(tiny_model_path, tmp_path, monkeypatch):
    from evalsuite.harness import EvalConfig, run_eval

    monkeypatch.delenv(mech.ENV_VAR, raising=False)
    monkeypatch.setattr(mech, "probe", lambda m: "not installed")
    (tmp_path / "code.jsonl").write_text(json.dumps({"question": "Write f().", "test": "assert f() == 1"}) + "\n")
    (tmp_path / "suite.yaml").write_text("tasks:\n  - name: my_code\n    data: code.jsonl\n"
                                         "    metric: code_exec\n    max_gen_toks: 4\n")
    with pytest.raises(SandboxUnavailable, match="apt-get install bubblewrap"):
        run_eval(EvalConfig(suite=str(tmp_path / "suite.yaml"), bootstrap=10), tiny_model_path, None, tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()


def test_in_ci_the_hostile_catalogue_fails_loudly_without_a_mechanism(tmp_path):
    """Where neither bwrap nor unshare exists, CI must not pass the catalogue by skipping it."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != mech.ENV_VAR}
    env.update(CI="true", PATH=str(tmp_path), PYTHONPATH=str(repo))     # no bwrap, no unshare on PATH
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "the_box_itself_works",
                          str(repo / "tests/evalsuite/test_sandbox_hostile.py")], cwd=repo, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1, out.stdout[-2000:]
    assert re.search(r"2 skipped, \d+ deselected, 1 error", out.stdout), \
        out.stdout[-2000:]          # the default box fails at set-up; only the named mechanisms skip
    reason = [ln for ln in out.stdout.splitlines() if "CI: no kernel mechanism confines model code here" in ln]
    assert reason and "bwrap: not installed; unshare: not installed" in reason[0], out.stdout[-2000:]
