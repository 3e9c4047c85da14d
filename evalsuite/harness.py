"""The one place lm-evaluation-harness is called.

``run_eval`` loads the suite's tasks through lm-eval's ``TaskManager`` (our task YAMLs under
``configs/tasks`` plus lm-eval's own), evaluates the model (+ LoRA adapter through lm-eval's
peft / lora_local_path path, never merged) with ``simple_evaluate(log_samples=True)``, then
turns the logged samples into per-item rows with a dev/test split and bootstrap CIs.
"""
from __future__ import annotations

import copy
import importlib.metadata
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

from evalsuite import sandbox
from evalsuite.records import write_json, write_jsonl
from evalsuite.evidence import add_evidence
from evalsuite.samples import plain, stable_doc_id, summarize, target_text, to_rows
from evalsuite.split import assign_split
from evalsuite.suite import TASKS_DIR, Suite, SuiteError, SuiteTask, load_suite
from evalsuite.usertask import load_rows, task_config

log = logging.getLogger(__name__)

# config keys that decide how an item is scored; `scoring_from` copies them from another task
SCORING_KEYS = ("process_results", "metric_list", "filter_list")


@dataclass
class EvalConfig:
    suite: str = "offline"         # name of configs/suites/<name>.yaml, or a path to a suite YAML
    limit: int | None = None       # max items per task (None = all)
    dev_ratio: float = 0.5         # share of each task's items assigned to dev
    batch_size: int = 16
    max_gen_toks: int | None = None  # global cap over the per-task max_gen_toks
    bootstrap: int = 1000          # bootstrap resamples for CIs
    seed: int = 0
    backend: Literal["hf", "ct2", "vllm"] = "hf"  # lm-eval model type; ct2: the compiled CPU engine
    device: Literal["cpu", "cuda"] = "cpu"
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = "float32"
    quantization: Literal["int8", "int8_float32", "int16", "float32"] = "int8"  # ct2 backend: CTranslate2 weights
    replicas: int = 0              # ct2 backend: engines decoding side by side (0 = one single-threaded per core)
    # what confines model-written code (code tasks): auto = bwrap, else unshare, else refuse;
    # unsafe-host = run it unconfined on the host (warned, recorded in results.json)
    sandbox: Literal["auto", "bwrap", "unshare", "unsafe-host"] = "auto"


def lm_eval_version() -> str:
    return importlib.metadata.version("lm_eval")


def task_manager(suite: Suite):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=[str(TASKS_DIR), *map(str, suite.include_path)])


def _task_yaml(tm, name: str) -> Path:
    entry = tm.task_index.get(name)
    if entry is None or not entry.yaml_path:
        raise SuiteError(f"lm-eval knows no task YAML named {name!r}")
    return Path(entry.yaml_path)


def _unresolved(cfg: Any, prefix: str, where: str = "") -> list[str]:
    """Keys still holding a `!function` reference that was left unresolved (a path string)."""
    if isinstance(cfg, dict):
        return [k for key, v in cfg.items() for k in _unresolved(v, prefix, f"{where}.{key}" if where else key)]
    if isinstance(cfg, list):
        return [k for i, v in enumerate(cfg) for k in _unresolved(v, prefix, f"{where}[{i}]")]
    return [where] if isinstance(cfg, str) and cfg.startswith(prefix) else []


def _scored_like(tm, entry: SuiteTask) -> dict:
    """The task's YAML loaded WITHOUT importing its !function modules (lm-eval's humaneval/mbpp
    utils call evaluate.load, which needs the network), with the scoring keys of
    ``entry.scoring_from`` (one of our offline-safe tasks) put in their place."""
    from lm_eval.tasks._yaml_loader import load_yaml

    base_path = _task_yaml(tm, entry.task or entry.name)
    cfg = load_yaml(base_path, resolve_func=False)
    scorer = load_yaml(_task_yaml(tm, entry.scoring_from), resolve_func=True)
    for key in SCORING_KEYS:
        cfg.pop(key, None)
        if key in scorer:
            cfg[key] = scorer[key]
    cfg.update(copy.deepcopy(entry.overrides))
    if entry.num_fewshot is not None:
        cfg["num_fewshot"] = entry.num_fewshot
    for key in ("include", "tag", "group"):
        cfg.pop(key, None)
    left = _unresolved(cfg, str(base_path.parent) + "/")
    if left:
        raise SuiteError(f"task {entry.name!r}: keys {left} of {base_path} name functions that were not "
                         f"replaced by scoring_from={entry.scoring_from!r}; override them in 'overrides'")
    return cfg


def _spec(tm, entry: SuiteTask) -> str | dict:
    """What TaskManager.load takes for this suite entry."""
    if entry.data:
        return {**task_config(entry.name, entry.data, entry.metric, entry.prompt), **entry.overrides}
    if entry.scoring_from:
        return _scored_like(tm, entry)
    name = entry.yaml or entry.task or entry.name
    if entry.overrides:
        if entry.yaml:
            raise SuiteError(f"task {entry.name!r}: 'overrides' is for registered tasks; edit your YAML instead")
        return _with_overrides(tm, entry, name)
    return name


def _with_overrides(tm, entry: SuiteTask, name: str) -> dict:
    """A registered task's own YAML config (includes and !functions resolved) with the suite's
    overrides on top, as an inline config: a bare {"task": name, ...} would replace the YAML."""
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    found = tm.task_index.get(name)
    if found is None:
        raise SuiteError(f"task {entry.name!r}: lm-eval knows no task named {name!r}")
    if found.kind not in (Kind.TASK,) or not found.yaml_path:
        raise SuiteError(f"task {entry.name!r}: 'overrides' applies to single YAML tasks, and {name!r} is a "
                         f"{found.kind.name.lower()}; list its tasks one by one instead")
    cfg = load_yaml(found.yaml_path, resolve_func=True)
    for key in ("tag", "group", "task_list"):
        cfg.pop(key, None)
    cfg.update(copy.deepcopy(entry.overrides))
    if entry.num_fewshot is not None:
        cfg["num_fewshot"] = entry.num_fewshot
    cfg["task"] = name
    return cfg


def load_tasks(suite: Suite, tm, cfg: EvalConfig) -> dict[str, tuple[SuiteTask, Any]]:
    """lm-eval leaf task name -> (suite entry, Task), with per-task generation caps applied."""
    out: dict[str, tuple[SuiteTask, Any]] = {}
    for entry in suite.tasks:
        try:
            loaded = tm.load([_spec(tm, entry)])["tasks"]
        except (KeyError, ValueError, FileNotFoundError, ImportError) as exc:
            raise SuiteError(f"{suite.path}: task {entry.name!r}: lm-eval could not load it: {exc}") from exc
        for leaf, task in loaded.items():
            if task.get_config("output_type") == "generate_until":
                own = entry.max_gen_toks or (task.get_config("generation_kwargs") or {}).get("max_gen_toks")
                caps = [c for c in (own, cfg.max_gen_toks) if c]
                if caps:
                    task.set_config("generation_kwargs", {"max_gen_toks": min(caps)}, update=True)
            if entry.num_fewshot is not None:
                task.set_config("num_fewshot", entry.num_fewshot)
            out[leaf] = (entry, task)
    return out


def check_suite(cfg: EvalConfig) -> dict[str, int]:
    """Load every task of the suite as the eval will (parsing local data) and count its items;
    a task lm-eval cannot load or one with no items is a SuiteError naming the suite and task.
    Run before any work so that a bad benchmark stops a run in one line."""
    suite = load_suite(cfg.suite)
    for entry in suite.tasks:   # user data first: its errors name file:line without lm-eval's wrapping
        if entry.data:
            load_rows(entry.data, entry.metric)
    tasks = load_tasks(suite, task_manager(suite), cfg)
    counts: dict[str, int] = {}
    for leaf, (entry, task) in tasks.items():
        counts[entry.name] = counts.get(entry.name, 0) + len(task.eval_docs)
    for name, n in counts.items():
        if n == 0:
            raise SuiteError(f"{suite.path}: task {name!r} has no items to evaluate")
    return counts


def _decontamination_query(task, doc) -> str:
    """The task's own decontamination query where it sets one; lm-eval ``literal_eval``s a rendered
    template query, which fails on plain text such as "Question: ...\nAnswer:" — then the question
    as the task renders it (``doc_to_text``) is the same text."""
    if task.should_decontaminate():
        try:
            return str(task.doc_to_decontamination_query(doc))
        except (SyntaxError, ValueError):
            pass
    return str(task.doc_to_text(doc))


SPLITS = ("test", "validation", "train", "fewshot")   # every split an lm-eval Task can define


def _task_splits(task) -> tuple[str, list[tuple[str, Any]]]:
    """(the scored split's name, [(split name, docs)] of every split the task defines, the scored
    one first): its test, validation, training and few-shot docs (lm-eval's ``fewshot_docs``
    falls back to the training or validation docs; ``decontam_rows`` does not list a doc twice)."""
    scored = "test" if task.has_test_docs() else "validation"
    out = []
    for name in sorted(SPLITS, key=lambda n: n != scored):
        attr = "training" if name == "train" else name
        has = getattr(task, f"has_{attr}_docs", None)
        if has is not None and not has():
            continue
        try:
            docs = getattr(task, f"{attr}_docs")()
        except (KeyError, ValueError, AttributeError):   # a declared split the data does not hold
            continue
        if docs is not None:
            out.append((name, docs))
    return scored, out


def decontam_rows(tasks: dict[str, tuple[SuiteTask, Any]]) -> list[dict]:
    """The texts no training record may overlap: for every item of every split of every task (the
    scored docs, not only the ``limit`` evaluated, and the train, validation and few-shot docs the
    task defines), the question as the task says to decontaminate it (lm-eval's
    ``doc_to_decontamination_query`` where the task sets ``should_decontaminate``, else its
    ``doc_to_text`` — the question, not the chat or few-shot template) and its target. Rows of the
    scored split keep the samples' key (``task/doc_id``); another split's are ``task/split:doc_id``;
    each row says its ``split``. A doc whose question and target another split already gave is
    not repeated."""
    rows, prefix = [], _id_prefixes(tasks)
    for leaf, (entry, task) in tasks.items():
        choices_of = _choices_fn(task)
        seen: set[tuple[str, str]] = set()
        scored_split, splits = _task_splits(task)
        for split, docs in splits:
            scored = split == scored_split
            for i, doc in enumerate(docs):
                query = str(_decontamination_query(task, doc))
                target = target_text(doc, plain(task.doc_to_target(doc)), choices_of(doc))
                if (query, target) in seen:
                    continue
                seen.add((query, target))
                doc_id = f"{prefix[leaf]}{stable_doc_id(doc, i)}"
                key = f"{entry.name}/{doc_id}" if scored else f"{entry.name}/{split}:{doc_id}"
                rows.append({"key": key, "field": "question", "text": query, "split": split})
                rows.append({"key": key, "field": "target", "text": target, "split": split})
    return rows


def _primary_metric(entry: SuiteTask, task) -> str:
    if entry.primary_metric:
        return entry.primary_metric
    first = (task.config.metric_list or [{}])[0].get("metric")
    return first if isinstance(first, str) else getattr(first, "__name__", str(first))


def _choices_fn(task):
    if task.get_config("output_type") != "multiple_choice":
        return lambda doc: None
    return lambda doc: [str(c) for c in task.doc_to_choice(doc)]


def _model_args(cfg: EvalConfig, model: str, adapter: str | None) -> dict:
    if cfg.backend == "hf":
        args = {"pretrained": model, "dtype": cfg.dtype}
        if adapter:
            args["peft"] = str(adapter)
        return args
    if cfg.backend == "vllm":
        args = {"pretrained": model, "dtype": cfg.dtype}
        if adapter:
            args["lora_local_path"] = str(adapter)
            args["max_lora_rank"] = 64
        return args
    if cfg.backend == "ct2":  # evalsuite.lm_ct2 merges the adapter and converts once (cached)
        return {"pretrained": model, "peft": str(adapter) if adapter else None, "quantization": cfg.quantization,
                "seed": cfg.seed, "replicas": cfg.replicas}
    raise ValueError(f"EvalConfig.backend must be 'hf', 'ct2' or 'vllm', got {cfg.backend!r}")


def _lm(cfg: EvalConfig, model: str, adapter: str | None):
    """What simple_evaluate gets as ``model``: a registered name, or for ct2 our own instance, so
    that results.json can say what served each request type."""
    args = _model_args(cfg, model, adapter)
    if cfg.backend != "ct2":
        return cfg.backend, args
    from lm_eval.api.registry import get_model

    from evalsuite import lm_ct2  # registers "synthloop-ct2" with lm-eval

    return get_model(lm_ct2.NAME).create_from_arg_obj(args, {"batch_size": cfg.batch_size, "device": cfg.device}), None


def _write_configs(out_dir: Path, results: dict, suite: Suite) -> None:
    """The exact task configs lm-eval ran (callables by name) and the suite file."""
    cdir = out_dir / "task_configs"
    cdir.mkdir(parents=True, exist_ok=True)
    for name, conf in (results.get("configs") or {}).items():
        safe = name.replace("/", "_").replace(":", "_")
        (cdir / f"{safe}.yaml").write_text(yaml.safe_dump(plain(conf), sort_keys=False, allow_unicode=True),
                                           encoding="utf-8")
    (cdir / "_suite.yaml").write_text(suite.path.read_text(encoding="utf-8"), encoding="utf-8")
    (out_dir / "lm_eval_version.txt").write_text(lm_eval_version() + "\n", encoding="utf-8")


def _id_prefixes(tasks: dict) -> dict[str, str]:
    """Leaf -> the prefix of its doc ids (a suite entry that expands to several leaves, e.g. a
    group, names its items ``leaf/doc_id``)."""
    return {leaf: f"{leaf}/" if sum(e is entry for e, _ in tasks.values()) > 1 else ""
            for leaf, (entry, _) in tasks.items()}


def item_texts(cfg: EvalConfig) -> list[dict]:
    """Every item of every task in the suite (no limit, dev and test alike) as decontamination
    rows (``decontam_rows``), without evaluating anything."""
    suite = load_suite(cfg.suite)
    return decontam_rows(load_tasks(suite, task_manager(suite), cfg))


def run_eval(cfg: EvalConfig, model: str, adapter: str | None, out_dir: Path, split: str | None = None) -> dict:
    """Evaluate model(+adapter) on the suite; writes out_dir/results.json, out_dir/samples.jsonl,
    out_dir/decontam_texts.jsonl (every item of every task: what training data must not overlap)
    (+ out_dir/task_configs/ and lm-eval version); returns the same dict as results.json.
    ``split`` ("dev"/"test"): evaluate only that split's items among those ``limit`` selects."""
    import lm_eval

    t0 = time.time()
    out_dir = Path(out_dir)
    # lm-eval calls our scorers in this process: they read the choice from the environment
    want = sandbox.apply_setting(cfg.sandbox)
    ran_before = sandbox.programs_run()
    suite = load_suite(cfg.suite)
    tm = task_manager(suite)
    tasks = load_tasks(suite, tm, cfg)
    prefix = _id_prefixes(tasks)
    items = decontam_rows(tasks)   # every item, before `limit` or `split` narrow what is evaluated

    # per-task item caps as explicit doc indices (lm-eval's `limit` is one number for all tasks)
    samples_idx = {}
    for leaf, (entry, task) in list(tasks.items()):
        caps = [c for c in (cfg.limit, entry.limit) if c]
        n = len(task.eval_docs)
        idx = list(range(min([n, *caps])))
        if split is not None:
            docs = task.eval_docs
            idx = [i for i in idx if assign_split(entry.name, prefix[leaf] + stable_doc_id(docs[i], i),
                                                  cfg.dev_ratio) == split]
            if not idx:   # lm-eval reads an empty list as "every item"
                del tasks[leaf]
                continue
        samples_idx[leaf] = idx
    if not tasks:
        raise SuiteError(f"{suite.path}: no {split} items among the first {cfg.limit} of any task")

    lm, model_args = _lm(cfg, model, adapter)
    results = lm_eval.simple_evaluate(
        model=lm, model_args=model_args,
        tasks=[task for _, task in tasks.values()], task_manager=tm,
        batch_size=cfg.batch_size, device=cfg.device, samples=samples_idx,
        log_samples=True, apply_chat_template=suite.apply_chat_template,
        bootstrap_iters=0,  # our CIs are per split, computed below
        confirm_run_unsafe_code=True,
        random_seed=cfg.seed, numpy_random_seed=cfg.seed, torch_random_seed=cfg.seed,
        fewshot_random_seed=cfg.seed,
    )

    rows, metric_of = [], {}
    for leaf, (entry, task) in tasks.items():
        metric_of[entry.name] = _primary_metric(entry, task)
        rows += to_rows(entry.name, results["samples"].get(leaf, []), primary_metric=metric_of[entry.name],
                        prompt_of=lambda d, t=task: str(t.doc_to_text(d)), choices_of=_choices_fn(task),
                        filter_name=entry.filter, dev_ratio=cfg.dev_ratio, id_prefix=prefix[leaf])

    # what the scorers know of each failure (failed checkers, the failing assert, the wrong number)
    n_evidence = add_evidence(rows, run=sandbox.run_code)
    summary = summarize(rows, bootstrap=cfg.bootstrap, seed=cfg.seed)
    box = sandbox.describe(want)  # which mechanism ran the suite's model-written code
    out = {
        "tasks": {name: {"metric": metric_of[name], **summary.get(name, {})} for name in metric_of},
        "lm_eval_version": lm_eval_version(),
        "model": model,
        "adapter": str(adapter) if adapter else None,
        "suite": str(suite.path),
        "config": asdict(cfg),
        "split": split or "all",
        "lm_eval_results": plain(results.get("results", {})),
        # what served generation and loglikelihood (for ct2: the engine, its weights, request counts)
        "engine": lm.report() if hasattr(lm, "report") else {"backend": cfg.backend,
                                                             "loglikelihood": f"lm-eval {cfg.backend}"},
        "n_samples": len(rows),
        "n_evidence": n_evidence,
        "sandbox": {**box, "programs": (sandbox.programs_run() - ran_before)[box["mechanism"]]},
        "wall_s": round(time.time() - t0, 1),
    }
    write_jsonl(out_dir / "samples.jsonl", rows)
    write_jsonl(out_dir / "decontam_texts.jsonl", items)
    _write_configs(out_dir, results, suite)
    write_json(out_dir / "results.json", out)
    return out
