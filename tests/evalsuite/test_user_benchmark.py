"""Does exactly what evalsuite/README.md "Add your benchmark" says, on files written here."""
import json
import subprocess
import sys
import textwrap

import pytest

from evalsuite.records import RecordError, read_jsonl
from evalsuite.usertask import load_rows

ROWS = {
    "numeric": [{"id": "q1", "question": "What is 2 + 3?", "answer": 5},
                {"id": "q2", "question": "What is 10 / 4?", "answer": "2.5"}],
    "exact_match": [{"question": "Capital of France?", "answer": "Paris"},
                    {"question": "Opposite of hot?", "answer": "cold"}],
    "multiple_choice": [{"question": "2 + 2 =", "choices": ["3", "4", "5"], "answer": "4"},
                        {"question": "Colour of the sky?", "choices": ["green", "blue"], "answer": "B"}],
    "code_exec": [{"question": "Write add(a, b) returning the sum.", "test": "assert add(2, 3) == 5"}],
}


@pytest.fixture(scope="module")
def user_suite(tmp_path_factory):
    d = tmp_path_factory.mktemp("mybench")
    for metric, rows in ROWS.items():
        (d / f"{metric}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # an lm-eval task YAML of the user's own, over a local JSONL
    (d / "tasks").mkdir()
    (d / "tasks" / "my_yaml_task.yaml").write_text(textwrap.dedent(f"""\
        task: my_yaml_task
        dataset_path: json
        dataset_kwargs:
          data_files: {{test: {d / 'exact_match.jsonl'}}}
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{question}}}}"
        doc_to_target: "{{{{answer}}}}"
        generation_kwargs: {{until: ["\\n"], do_sample: false, max_gen_toks: 8}}
        metric_list:
          - metric: exact_match
            aggregation: mean
            higher_is_better: true
    """))
    suite = d / "my_suite.yaml"
    suite.write_text(textwrap.dedent("""\
        tasks:
          - name: math_offline          # keep a built-in task next to yours
            max_gen_toks: 8
          - name: my_numbers
            data: numeric.jsonl         # relative to this suite file
            metric: numeric
            max_gen_toks: 8
          - name: my_facts
            data: exact_match.jsonl
            metric: exact_match
          - name: my_choices
            data: multiple_choice.jsonl
            metric: multiple_choice
          - name: my_code
            data: code_exec.jsonl
            metric: code_exec
            max_gen_toks: 8
          - name: my_yaml_task
            yaml: tasks/my_yaml_task.yaml
    """))
    return suite


def test_user_benchmarks_run_through_the_cli(user_suite, tiny_model_path, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "evalsuite", "--suite", str(user_suite), "--model", tiny_model_path,
                           "--limit", "2", "--bootstrap", "20", "--out", str(out), "--sandbox", "unsafe-host"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("my_numbers", "my_facts", "my_choices", "my_code", "my_yaml_task", "math_offline"):
        assert name in proc.stdout  # the printed table
    res = json.loads((out / "results.json").read_text())
    assert res["tasks"]["my_choices"]["metric"] == "acc"
    assert res["tasks"]["my_code"]["metric"] == "pass_at_1"
    # --sandbox reaches the scorers: the explicit opt-in is what ran the code, and it is recorded
    assert res["sandbox"]["requested"] == res["sandbox"]["mechanism"] == "unsafe-host" and res["sandbox"]["warning"]
    assert res["tasks"]["my_numbers"]["metric"] == "exact_match"
    rows = read_jsonl(out / "samples.jsonl")
    by_task = {}
    for r in rows:
        by_task.setdefault(r["task"], []).append(r)
    assert [r["doc_id"] for r in by_task["my_numbers"]] == ["q1", "q2"]
    assert by_task["my_facts"][0]["doc_id"] == "line1" and by_task["my_facts"][0]["target"] == "Paris"
    mc = by_task["my_choices"]
    assert mc[1]["target"] == "blue" and mc[0]["response"] in ["3", "4", "5"]
    assert mc[0]["correct"] == (mc[0]["response"] == "4")
    assert len(by_task["my_code"]) == 1 and by_task["my_yaml_task"][0]["prompt"] == "Capital of France?"


def test_bad_user_rows_name_file_and_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"question": "ok", "answer": 1}\n{"question": "x", "answer": "seven"}\n')
    with pytest.raises(RecordError, match=r"bad.jsonl:2: 'answer' 'seven' is not a number"):
        load_rows(p, "numeric")
    p.write_text('{"question": "q", "choices": ["a", "b"], "answer": "c"}\n')
    with pytest.raises(RecordError, match="bad.jsonl:1"):
        load_rows(p, "multiple_choice")
