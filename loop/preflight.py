"""Everything a run will need, checked before the first stage, so bad input costs no round.

The config is already typed and checked when it loads (``loop.config``); here: the run directory
is writable, the student and teacher models resolve, the chosen backends' optional packages are
installed (vllm, ray for ``executor.kind: ray``, flash_attn for ``train.attn_implementation:
flash_attention_2``), a hub id is in the local HF cache (or, online, known to the hub), every
task of the eval suite loads and has items (local data is parsed), and the pool
converts (its cache is what the retrieve stage then reads). A problem is a ``PreflightError``
whose message is one line naming the config key and the file/line at fault.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)


class PreflightError(ValueError):
    pass


def check(cfg, run_dir: Path) -> dict:
    """Run every check; returns what was found (task sizes, pool size) for the log."""
    t0 = time.time()
    _writable(Path(run_dir))
    _model("student.model", cfg.student.model)
    if cfg.retrieve.ifd_max > 0 and cfg.retrieve.ifd_model:
        _model("retrieve.ifd_model", cfg.retrieve.ifd_model)
    _teacher(cfg.teacher)
    if cfg.eval.backend == "vllm":
        _package("eval.backend", "vllm", "pip install -e '.[vllm]'")
    if cfg.executor.kind == "ray":
        _package("executor.kind", "ray", "pip install -e '.[ray]', or executor.kind=local")
    if cfg.train.attn_implementation == "flash_attention_2":
        _package("train.attn_implementation", "flash_attn",
                 "pip install flash-attn on a CUDA machine, or train.attn_implementation=packed_sdpa")
    _sandbox(cfg.eval.sandbox)
    pool_records = _pool(cfg)
    found = {"tasks": _suite(cfg.eval), "pool_records": pool_records}
    log.info("preflight: %s tasks (%s items), pool of %d records, checked in %.1f s", len(found["tasks"]),
             sum(found["tasks"].values()), found["pool_records"], time.time() - t0)
    return found


def _writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-probe-{time.time_ns()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise PreflightError(f"--run-dir {run_dir}: not writable ({exc.strerror or exc})") from None


def _model(key: str, spec: str) -> None:
    from evalsuite.models import PREFIX, gguf_path

    if spec.startswith(PREFIX):
        try:
            gguf_path(spec[len(PREFIX):])
        except (ValueError, RuntimeError) as exc:
            raise PreflightError(f"{key}: {exc}") from None
        return
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")):
        if not (path / "config.json").is_file():
            raise PreflightError(f"{key}: {spec} is not a model folder (no config.json)")
        return
    # anything else is a hub id: transformers loads it from the local HF cache (downloading it
    # first when online); offline or without a network it must already be there
    from evalsuite.models import EMBEDDED, hub_model_problem

    problem = hub_model_problem(spec)
    if problem:
        raise PreflightError(f"{key}: {problem}; valid: a local model folder (with config.json), "
                             f"{' or '.join(PREFIX + n for n in EMBEDDED)}, or a hub id in the cache "
                             f"(`hf download {spec}` while online)")


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _package(key: str, module: str, fix: str) -> None:
    if not _installed(module):
        raise PreflightError(f"{key}: needs the {module!r} package, which is not installed ({fix})")


def _teacher(t) -> None:
    if t.backend == "fake":
        if t.model != "builtin" and not Path(t.model).is_file():
            raise PreflightError(f"teacher.model: the fake backend takes 'builtin' or a script file; "
                                 f"{t.model} does not exist")
        return
    if t.backend == "openai":
        if not t.base_url.startswith(("http://", "https://")):
            raise PreflightError(f"teacher.base_url: the openai backend needs the server's URL "
                                 f"(http://host:port/v1), got {t.base_url!r}")
        return
    if t.backend == "vllm":
        _package("teacher.backend", "vllm", "pip install -e '.[vllm]'")
    _model("teacher.model", t.model)


def _sandbox(value: str) -> None:
    """The eval's code tasks and synthesis's verifiers run model-written code: the mechanism asked
    for must confine it here (or the user opted in to unsafe-host). Also makes the choice the one
    every stage and child process reads."""
    from evalsuite import sandbox

    try:
        sandbox.resolve(sandbox.apply_setting(value))
    except sandbox.SandboxUnavailable as exc:
        raise PreflightError(f"eval.sandbox: {_one_line(exc)}") from None


def _suite(eval_cfg) -> dict[str, int]:
    from evalsuite.harness import check_suite
    from evalsuite.records import RecordError
    from evalsuite.suite import SuiteError

    try:
        return check_suite(eval_cfg)
    except (SuiteError, RecordError) as exc:
        raise PreflightError(f"eval.suite: {_one_line(exc)}") from None


def _pool(cfg) -> int:
    """Every configured pool converts (a row of unknown format is named by file and row)."""
    from evalsuite.records import RecordError
    from synth.pool import load_pool
    from synth.pools import pool_configs

    try:
        pools = pool_configs(cfg.retrieve.pool, cfg.retrieve.pools)
    except ValueError as exc:
        raise PreflightError(_one_line(exc)) from None
    n = 0
    for key, pool_cfg, _ in pools:
        try:
            n += len(load_pool(pool_cfg, Path(cfg.cache_dir)))
        except (RecordError, ValueError, OSError, RuntimeError) as exc:
            raise PreflightError(f"{key}: {_one_line(exc)}") from None
    return n


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())
