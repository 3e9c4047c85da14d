"""Role-play dialogues: grow to the target turns; an unparseable follow-up stops growth cleanly."""
import json

from synth.llm import LLMConfig, Sampling, load_llm
from synth.multiturn import extend_dialogues, parse_followup


def test_parse_followup():
    assert parse_followup("User: And why is that?\nAssistant: Because.") == "And why is that?"
    assert parse_followup("User: ok") is None


def test_extend_dialogues(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [
        {"match": "User: stuck", "responses": ["..."]},
        {"match": "Continue the conversation", "responses": ["User: Can you say more about it?"]},
        {"match": "Can you say more", "responses": ["Certainly, here are more details about it."]}]}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    base = lambda q: [{"role": "user", "content": q}, {"role": "assistant", "content": "An answer."}]  # noqa: E731
    dialogs, stats = extend_dialogues(llm, [base("grow"), base("stuck"), base("grow more")], [3, 2, 2],
                                      Sampling(), Sampling())
    assert [sum(m["role"] == "user" for m in d) for d in dialogs] == [3, 1, 2]
    assert all(d[-1]["role"] == "assistant" for d in dialogs)
    assert stats["parse_failures"] == 1 and stats["turns_added"] == 3 and stats["completed"] == 2
