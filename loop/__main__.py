"""synthloop command line.

  python -m loop run [--config configs/default.yaml] [--rounds N] [--run-dir DIR] [key.sub=value ...]
  python -m loop status RUN_DIR
  python -m loop request --benchmark TASK --n N --out DIR [--config C] [--suite S] [--from-run RUN] [key.sub=value ...]
  python -m loop report RUN_DIR [--out FILE]      one self-contained HTML page comparing the rounds
  python -m loop compare RUN_A RUN_B [--split S]  paired differences between two runs' handed-over students

Bad input (config, suite, benchmark data, pool, models, run directory) stops the command before
any work with one line on stderr and exit code 2; --debug shows the traceback instead.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m loop", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--debug", action="store_true", help="show tracebacks of input errors")
    sub = ap.add_subparsers(dest="cmd", required=True)
    run_p = sub.add_parser("run", help="run (or resume) the synthesis loop",
                           description="Run the loop: eval -> tag -> diagnose -> synthesize + retrieve -> mix -> "
                                       "train, for N rounds. Re-running the same command resumes: finished stages "
                                       "(fingerprint in DONE) are skipped.")
    run_p.add_argument("--config", default=str(DEFAULT_CONFIG), help="YAML config (default: configs/default.yaml)")
    run_p.add_argument("--rounds", type=int, default=None, help="number of rounds (overrides the config's `rounds`)")
    run_p.add_argument("--run-dir", default=None, help="run directory (default: runs/<config name>)")
    run_p.add_argument("overrides", nargs="*", metavar="key.sub=value",
                       help="typed config overrides, e.g. train.lora.r=32 eval.limit=40")
    st_p = sub.add_parser("status", help="print each round's stage states and scores")
    st_p.add_argument("run_dir")
    rq_p = sub.add_parser("request", help="make a dataset of up to N records aimed at one benchmark",
                          description="Evaluate the student on one task's dev items (or reuse a run's samples), "
                                      "diagnose, synthesize + retrieve, decontaminate against the task, and write "
                                      "up to N records as an HF dataset folder with a card. Re-running resumes.")
    rq_p.add_argument("--benchmark", required=True, metavar="TASK", help="a task name of the suite")
    rq_p.add_argument("--n", type=int, required=True, help="at most this many records")
    rq_p.add_argument("--out", required=True, metavar="DIR", help="the dataset folder (stages under DIR/work/)")
    rq_p.add_argument("--config", default=None,
                      help="YAML config (default: the --from-run run's config.yaml, else configs/default.yaml)")
    rq_p.add_argument("--suite", default=None, help="suite name or YAML (same as eval.suite=S)")
    rq_p.add_argument("--from-run", default=None, metavar="RUN", help="reuse this run's latest eval samples")
    rq_p.add_argument("--overwrite", action="store_true", help="replace the dataset in a non-empty --out")
    rq_p.add_argument("overrides", nargs="*", metavar="key.sub=value", help="typed config overrides, as for run")
    rep_p = sub.add_parser("report", help="write the HTML report of a run (plots, round tables, cost)",
                           description="Write one self-contained HTML file (inline CSS and SVG, nothing fetched) "
                                       "that compares the rounds of a run: scores with CIs, targeted vs control, "
                                       "tag heatmap, deficiencies, data mix, stage times and cost.")
    rep_p.add_argument("run_dir")
    rep_p.add_argument("--out", default=None, help="output file (default: RUN_DIR/report.html)")
    cmp_p = sub.add_parser("compare", help="paired differences between two runs' handed-over students",
                           description="B − A per task and over all items, on the items both runs' handed-over "
                                       "students (state.json final.measured_at) were evaluated on: difference, "
                                       "95% paired bootstrap CI, exact McNemar p, minimum detectable effect.")
    cmp_p.add_argument("run_a")
    cmp_p.add_argument("run_b")
    cmp_p.add_argument("--split", choices=("test", "dev"), default="test", help="which items (default: test)")
    args = ap.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    if args.cmd == "status":
        from loop.report import status_text

        try:
            print(status_text(Path(args.run_dir)))
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "request":
        from loop.request import cli

        return cli(args)

    if args.cmd == "report":
        os.environ.setdefault("HF_HUB_OFFLINE", "1")   # the student's tokenizer, from the local cache only
        from loop.html_report import write_html

        try:
            print(write_html(Path(args.run_dir), Path(args.out) if args.out else None))
        except FileNotFoundError as exc:
            if args.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if args.cmd == "compare":
        from loop.compare import CompareError, compare_runs, compare_text

        try:
            print(compare_text(compare_runs(Path(args.run_a), Path(args.run_b), args.split)))
        except (CompareError, FileNotFoundError) as exc:
            if args.debug:
                raise
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0

    from evalsuite.records import RecordError
    from evalsuite.suite import SuiteError
    from loop.config import ConfigError, load_config
    from loop.preflight import PreflightError

    overrides = list(args.overrides) + ([f"rounds={args.rounds}"] if args.rounds is not None else [])
    try:
        cfg = load_config(args.config, overrides)
    except ConfigError as exc:
        if args.debug:
            raise
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    run_dir = Path(args.run_dir or Path("runs") / cfg.name)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if _all_local(cfg):
        # the embedded default needs nothing from a hub; never let a library try
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    from loop.run import run

    try:
        state = run(cfg, run_dir)
    except (PreflightError, SuiteError, RecordError) as exc:   # bad input; finished stages are kept
        if args.debug:
            raise
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    from loop.report import status_text

    print(status_text(run_dir))
    print(f"\nrun directory: {run_dir}   report: {run_dir / 'report.html'} (and report.md)   final test mean: "
          f"{state.get('final', {}).get('test_mean')}")
    return 0


def _all_local(cfg) -> bool:
    def local(model: str) -> bool:
        return model.startswith("embedded:") or Path(model).exists() or model == "builtin"

    return (local(cfg.student.model) and local(cfg.teacher.model) and cfg.eval.suite != "hub"
            and not cfg.retrieve.pool.source.startswith("hf:"))


if __name__ == "__main__":
    sys.exit(main())
