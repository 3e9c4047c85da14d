"""Render the teacher's Jinja prompt templates (``configs/prompts/*.j2``); the only jinja2 user.

Prompts are data: a stage formats its inputs into template variables, renders here,
and parses the answer separately (``synth.parse``). Every shipped template begins with
a marker line (``MARKERS``) so the scripted ``fake`` backend can tell which prompt it got.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

# <repo>/synth/prompts.py -> <repo>/configs/prompts (this file's path: the package may be namespace-merged)
PROMPTS_DIR = Path(__file__).resolve().parents[1] / "configs" / "prompts"

# template name -> a phrase its first line carries (used by the fake backend's builtin mode)
MARKERS = {
    "tag": "Label the skills",
    "diagnose": "Find the missing ability",
    "ability": "Name the skill a student is missing",
    "instruct": "Write one new question",
    "evolve": "Rewrite the question",
    "followup": "Continue the conversation as the user",
    "request": "Write one writing request",
    "instruct_code": "Write one new Python programming task",
    "solve": "Solve the math word problem step by step",
    "pot": "Write a short Python program that computes the answer",
    "solve_code": "Solve the Python programming task",
    "code_tests": "Write tests for the Python task",
    "judge": "Grade the answer to the request",
    "evolve_check": "Check a rewritten question",
}


@functools.lru_cache(maxsize=8)
def _env(prompts_dir: str):
    import jinja2

    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(prompts_dir),
        undefined=jinja2.StrictUndefined,  # a missing variable is an error naming it, not ''
        trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=False, autoescape=False)


def render(name: str, prompts_dir: str | Path | None = None, **variables) -> str:
    """Render ``<prompts_dir>/<name>.j2`` with ``variables``; errors name the template."""
    import jinja2

    d = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    if not (d / f"{name}.j2").is_file():
        raise FileNotFoundError(f"prompt template {d / (name + '.j2')} not found")
    try:
        return _env(str(d.resolve())).get_template(f"{name}.j2").render(**variables).strip()
    except jinja2.UndefinedError as exc:
        raise ValueError(f"prompt template {d / (name + '.j2')}: {exc}") from None


def load_data(name: str, prompts_dir: str | Path | None = None):
    """A YAML data file next to the templates (``roles.yaml``, ``constraints.yaml``): prompts as data."""
    import yaml

    d = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    path = d / name
    if not path.is_file():
        raise FileNotFoundError(f"prompt data {path} not found")
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"prompt data {path}: invalid YAML: {exc}") from None


def templates_hash(names: tuple[str, ...], prompts_dir: str | Path | None = None) -> str:
    """Content hash of the named templates (``name`` = ``name.j2``; a name with a suffix, such as
    ``roles.yaml``, is that data file), for the fingerprints of the stages that read them:
    editing one reruns exactly those stages."""
    import hashlib

    d = Path(prompts_dir) if prompts_dir else PROMPTS_DIR
    h = hashlib.sha256()
    for name in names:
        path = d / (name if "." in name else f"{name}.j2")
        h.update(name.encode() + b"\0" + (path.read_bytes() if path.is_file() else b"<missing>") + b"\0")
    return h.hexdigest()[:16]


_TURN = re.compile(r"^=== (system|user|assistant) ===[ \t]*$", re.M)


def render_chat(name: str, prompts_dir: str | Path | None = None, **variables) -> list[dict]:
    """Render a template into chat messages.

    A template may hold several turns, each opened by a line ``=== system|user|assistant ===``
    (few-shot examples as earlier turns are what a tiny chat model follows best); a template
    without such lines is one user turn. A final assistant turn is a prefill (the answer's
    first words, e.g. ``Tags:``); join it back with :func:`with_prefill` before parsing.
    """
    text = render(name, prompts_dir, **variables)
    parts = _TURN.split(text)
    if len(parts) == 1:
        return user(text)
    if parts[0].strip():
        raise ValueError(f"prompt template {name}.j2: text before the first '=== role ===' line")
    msgs = [{"role": role, "content": body.strip()} for role, body in zip(parts[1::2], parts[2::2])]
    if not msgs or msgs[-1]["role"] == "system" or (msgs[-1]["role"] == "assistant" and len(msgs) < 2):
        raise ValueError(f"prompt template {name}.j2: the last turn must be a user turn or an assistant prefill")
    return msgs


_LABEL = re.compile(r"\s*\**[A-Za-z][A-Za-z -]{0,20}\**\s*:\s")


def with_prefill(messages: list[dict], answer: str) -> str:
    """The whole answer: the prompt's assistant prefill (if any) followed by the generated text."""
    if not messages or messages[-1]["role"] != "assistant":
        return answer
    prefill = messages[-1]["content"]
    # a backend that ignores prefills (a scripted fake, some servers) answers in full, label first
    if answer.lstrip().startswith(prefill.strip()) or _LABEL.match(answer):
        return answer
    sep = "" if not answer or answer[0].isspace() or prefill.endswith((" ", "\n")) else " "
    return prefill + sep + answer


def user(text: str) -> list[dict]:
    """One prompt as a chat: a single user turn (the model's template adds its system prompt)."""
    return [{"role": "user", "content": text}]


def which_prompt(text: str) -> str | None:
    """Name of the shipped template ``text`` (all turns joined) was rendered from; None if none."""
    for name, marker in MARKERS.items():
        if marker in text:
            return name
    return None
