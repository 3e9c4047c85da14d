"""Suite files (``configs/suites/<name>.yaml``): which tasks to evaluate, and how.

```yaml
apply_chat_template: true        # render prompts with the model's chat template
include_path: [my_tasks/]        # optional extra dirs of lm-eval task YAMLs (relative to this file)
tasks:
  - name: math_offline           # the name used in results.json / samples.jsonl
    max_gen_toks: 256            # per-task generation cap (EvalConfig.max_gen_toks caps it globally)
  - name: gsm8k                  # lm-eval's own task (task: defaults to name)
    num_fewshot: 0
    filter: flexible-extract     # which filter's answers to score (default: the task's first)
  - name: humaneval
    scoring_from: humaneval_offline   # load the YAML without its !functions; score like our task
  - name: my_qa                  # your benchmark: a local JSONL + one of the built-in metrics
    data: data/my_qa.jsonl
    metric: numeric              # numeric | exact_match | multiple_choice | code_exec
  - name: my_task
    yaml: my_tasks/my_task.yaml  # or: your own lm-eval task YAML
```
Unknown keys and wrong types are errors naming the file, the task and the key.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs"
SUITES_DIR = CONFIGS_DIR / "suites"
TASKS_DIR = CONFIGS_DIR / "tasks"
METRIC_TYPES = ("numeric", "exact_match", "multiple_choice", "code_exec")


class SuiteError(ValueError):
    """A suite file is malformed; the message names the file, task and key."""


@dataclass
class SuiteTask:
    name: str
    task: str | None = None            # lm-eval task/group name (default: name)
    yaml: str | None = None            # path to the user's own lm-eval task YAML
    data: str | None = None            # path to a local JSONL of question/answer rows
    metric: str | None = None          # with data: numeric | exact_match | multiple_choice | code_exec
    prompt: str | None = None          # with data: Jinja template over the row (default per metric)
    max_gen_toks: int | None = None
    limit: int | None = None           # per-task cap on items (EvalConfig.limit caps it globally)
    num_fewshot: int | None = None
    filter: str | None = None          # lm-eval filter whose answers are scored
    primary_metric: str | None = None  # per-item metric that decides `correct` (default: the first)
    scoring_from: str | None = None    # take process_results/metric_list/filter_list from this task
    overrides: dict = field(default_factory=dict)  # raw lm-eval task config keys (e.g. dataset_kwargs)

    @property
    def source(self) -> str:
        return "data" if self.data else "yaml" if self.yaml else "task"


@dataclass
class Suite:
    name: str
    path: Path
    tasks: list[SuiteTask]
    apply_chat_template: bool = True
    include_path: list[Path] = field(default_factory=list)


_TYPES = {"name": str, "task": str, "yaml": str, "data": str, "metric": str, "prompt": str,
          "max_gen_toks": int, "limit": int, "num_fewshot": int, "filter": str,
          "primary_metric": str, "scoring_from": str, "overrides": dict}


def suite_path(suite: str | Path) -> Path:
    """A suite name (``offline``) or a path to a suite YAML."""
    p = Path(suite)
    if p.suffix in (".yaml", ".yml"):
        if not p.exists():
            raise SuiteError(f"suite file {p} does not exist")
        return p.resolve()
    cand = SUITES_DIR / f"{suite}.yaml"
    if not cand.exists():
        known = sorted(x.stem for x in SUITES_DIR.glob("*.yaml"))
        raise SuiteError(f"unknown suite {suite!r}; known: {known} (or pass a path to a suite YAML)")
    return cand


def _resolve(base: Path, value: str) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _task(raw: Any, i: int, where: Path) -> SuiteTask:
    loc = f"{where}: tasks[{i}]"
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, dict) or "name" not in raw:
        raise SuiteError(f"{loc}: each task must be a name or a mapping with a 'name' key")
    loc = f"{where}: task {raw['name']!r}"
    known = {f.name for f in fields(SuiteTask)}
    for key, val in raw.items():
        if key not in known:
            raise SuiteError(f"{loc}: unknown key {key!r}; known: {sorted(known)}")
        want = _TYPES[key]
        if val is not None and not (isinstance(val, want) and not (want is int and isinstance(val, bool))):
            raise SuiteError(f"{loc}: key {key!r} must be {want.__name__}, got {type(val).__name__}")
    t = SuiteTask(**raw)
    if sum(x is not None for x in (t.task, t.yaml, t.data)) > 1:
        raise SuiteError(f"{loc}: give only one of 'task', 'yaml', 'data'")
    if t.data is not None:
        if t.metric not in METRIC_TYPES:
            raise SuiteError(f"{loc}: key 'metric' must be one of {METRIC_TYPES} for a 'data' task, got {t.metric!r}")
        t.data = _resolve(where.parent, t.data)
        if not Path(t.data).exists():
            raise SuiteError(f"{loc}: key 'data': file {t.data} does not exist")
    elif t.metric is not None:
        raise SuiteError(f"{loc}: key 'metric' only applies to 'data' tasks")
    if t.yaml is not None:
        t.yaml = _resolve(where.parent, t.yaml)
        if not Path(t.yaml).exists():
            raise SuiteError(f"{loc}: key 'yaml': file {t.yaml} does not exist")
    for key in ("max_gen_toks", "limit"):
        if getattr(t, key) is not None and getattr(t, key) < 1:
            raise SuiteError(f"{loc}: key {key!r} must be >= 1")
    return t


def suite_hash(suite: str | Path) -> str:
    """Content hash of everything an evaluation of this suite reads from disk: the suite file,
    the shipped task YAMLs/data/utils, the suite's include paths and its tasks' own files. It goes
    into the eval stage's fingerprint, so editing a task's data reruns the eval."""
    import hashlib

    s = load_suite(suite)
    files = {s.path, *(p for p in TASKS_DIR.rglob("*") if p.is_file())}
    for inc in s.include_path:
        files |= {p for p in Path(inc).rglob("*") if p.is_file()}
    for t in s.tasks:
        files |= {Path(f) for f in (t.data, t.yaml) if f}
        if t.yaml:
            files |= {p for p in Path(t.yaml).parent.glob("*") if p.is_file()}
    h = hashlib.sha256()
    for p in sorted(f for f in files if "__pycache__" not in f.parts):
        h.update(str(p).encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def load_suite(suite: str | Path) -> Suite:
    path = suite_path(suite)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise SuiteError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("tasks"), list) or not raw["tasks"]:
        raise SuiteError(f"{path}: a suite needs a non-empty 'tasks' list")
    extra = set(raw) - {"tasks", "apply_chat_template", "include_path", "description"}
    if extra:
        raise SuiteError(f"{path}: unknown top-level key(s) {sorted(extra)}")
    tasks = [_task(t, i, path) for i, t in enumerate(raw["tasks"])]
    names = [t.name for t in tasks]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise SuiteError(f"{path}: duplicate task name(s) {dupes}")
    chat = raw.get("apply_chat_template", True)
    if not isinstance(chat, bool):
        raise SuiteError(f"{path}: key 'apply_chat_template' must be true or false")
    inc = raw.get("include_path") or []
    inc = [inc] if isinstance(inc, str) else inc
    return Suite(name=path.stem, path=path, tasks=tasks, apply_chat_template=chat,
                 include_path=[Path(_resolve(path.parent, p)) for p in inc])
