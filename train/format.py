"""Chat-template a record into token ids and labels, with loss on assistant tokens only.

Explicit prefix masking, which works with any chat template (SmolLM2's has no
``{% generation %}`` markers, so TRL's ``assistant_only_loss`` refuses it): for each
assistant turn i, the template rendered for ``messages[:i]`` with the generation prompt is
a prefix of the rendering of ``messages[:i+1]``; the difference is the assistant's text up
to and including its end-of-turn token. The text is cut into alternating prompt/assistant
segments and each segment is tokenized on its own, so a prompt is tokenized exactly as it
is at inference (where generation starts right after the generation prompt). Assistant
segments are labelled, with their end-of-turn token (so the model learns to stop);
system/user text and the template's glue are -100. Trailing unlabelled text (the newline
after the last end-of-turn) is dropped: no loss term depends on it.
"""
from __future__ import annotations

from dataclasses import dataclass

IGNORE = -100


class SkipRecord(Exception):
    """A well-formed record that cannot be trained on; ``reason`` is a short key for counts."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class TemplateError(ValueError):
    """The chat template does not render turn by turn as prefixes of each other."""


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]


def _render(tok, messages, add_generation_prompt=False) -> str:
    return tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def segments(tok, messages: list[dict], eot: str, rid: str = "?") -> list[tuple[str, bool]]:
    """The rendered conversation as ``[(text, is_assistant), ...]`` (see module doc)."""
    full = _render(tok, messages)
    out: list[tuple[str, bool]] = []
    pos = 0
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = _render(tok, messages[:i], add_generation_prompt=True)
        upto = _render(tok, messages[:i + 1])
        if not (upto.startswith(prompt) and full.startswith(upto) and len(prompt) >= pos):
            raise TemplateError(f"record {rid}: the chat template's rendering of turn {i} is not a prefix "
                                "of the whole conversation; prefix masking cannot find the assistant span")
        # The turn ends at its end-of-turn token; text after it (a newline) is template glue.
        end = upto.rfind(eot, len(prompt))
        end = end + len(eot) if end >= 0 else len(upto.rstrip())
        out.append((full[pos:len(prompt)], False))
        out.append((full[len(prompt):end], True))
        pos = end
    return [(t, a) for t, a in out if t]


def encode(tok, record: dict, max_seq_len: int, eot: str | None = None) -> Example:
    """Token ids and labels of one record; raises SkipRecord for untrainable ones."""
    rid = record.get("id", "?")
    msgs = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    if not any(m["role"] == "assistant" for m in msgs):
        raise SkipRecord("no_assistant", rid)
    if msgs[0]["role"] == "assistant":
        # no prompt precedes the reply, so there is no inference-time prefix to condition on
        raise SkipRecord("assistant_first", rid)
    ids: list[int] = []
    labels: list[int] = []
    for text, is_asst in segments(tok, msgs, eot or tok.eos_token, rid):
        piece = tok(text, add_special_tokens=False)["input_ids"]
        ids += piece
        labels += piece if is_asst else [IGNORE] * len(piece)
    if len(ids) > max_seq_len:
        raise SkipRecord("too_long", f"{rid} has {len(ids)} tokens > max_seq_len {max_seq_len}")
    return Example(ids, labels)
