"""The dependency picture of DESIGN.md, checked on the source: nothing imports loop; evalsuite imports
neither synth nor train; train uses only evalsuite's two light shared modules; those import nothing heavy."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("loop", "evalsuite", "synth", "train")


def _imports(pkg: str) -> set[str]:
    """Every module imported (absolutely) by the package's own files."""
    found = set()
    for path in (REPO / pkg).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module)
    return found


def _ours(mods: set[str]) -> set[str]:
    return {m for m in mods if m.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("pkg", ["evalsuite", "synth", "train"])
def test_nothing_imports_loop(pkg):
    assert not {m for m in _ours(_imports(pkg)) if m.split(".")[0] == "loop"}


def test_evalsuite_imports_neither_synth_nor_train():
    assert {m.split(".")[0] for m in _ours(_imports("evalsuite"))} <= {"evalsuite"}


def test_train_uses_only_the_shared_light_modules():
    outside = {m for m in _ours(_imports("train")) if not m.startswith("train")}
    assert outside <= {"evalsuite.records", "evalsuite.typedconfig", "evalsuite"}, outside


def test_the_shared_modules_are_light():
    code = ("import sys, evalsuite.records, evalsuite.typedconfig\n"
            "heavy = [m for m in ('torch', 'lm_eval', 'transformers', 'datasets') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)
