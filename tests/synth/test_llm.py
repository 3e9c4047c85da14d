"""Backend registry and the fake backend (scripted and builtin)."""
import json

import pytest

from synth.llm import BACKENDS, LLMConfig, Sampling, get_backend, load_llm
from synth.prompts import MARKERS, render_chat


def test_registry_is_a_plain_dict_with_did_you_mean():
    assert set(BACKENDS) == {"hf", "ct2", "vllm", "openai", "fake"}
    with pytest.raises(ValueError, match="Did you mean 'openai'"):
        get_backend("opnai")
    with pytest.raises(ValueError, match="Known: ct2, fake, hf, openai, vllm"):
        load_llm(LLMConfig(backend="zzz"))


def test_vllm_backend_fails_clearly_when_not_installed():
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install"):
        load_llm(LLMConfig(backend="vllm"))


def test_fake_script_cycles_responses_per_rule(tmp_path):
    script = tmp_path / "s.json"
    script.write_text(json.dumps({"rules": [{"match": "apple", "responses": ["A1", "A2"]},
                                            {"match": r"num\d+", "responses": ["N"]}], "default": "D"}))
    llm = load_llm(LLMConfig(backend="fake", model=str(script)))
    p = lambda t: [{"role": "user", "content": t}]  # noqa: E731
    out = llm.generate([p("an apple"), p("num42"), p("apple pie"), p("other"), p("apple")], Sampling())
    assert out == ["A1", "N", "A2", "D", "A1"]
    assert llm.calls == 1 and llm.prompts_seen == 5


def test_fake_script_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"rules": [{"match": "x"}]}')
    with pytest.raises(ValueError, match=r"bad.json: rules\[0\]"):
        load_llm(LLMConfig(backend="fake", model=str(bad)))
    with pytest.raises(FileNotFoundError, match="missing.json"):
        load_llm(LLMConfig(backend="fake", model=str(tmp_path / "missing.json")))


def test_builtin_fake_answers_every_template_parseably():
    from evalsuite.metrics import extract_number
    from synth.diagnose import parse_diagnosis
    from synth.evolve import parse_evolved, parse_verdict
    from synth.judge import parse_score
    from synth.multiturn import load_roles, parse_followup
    from synth.propose import parse_instruction
    from synth.tagging import TagConfig, parse_tags
    from synth.verify import printed_number
    from synth.verify_code import function_name, parse_solution, parse_tests, verify
    from synth.verify_math import parse_program

    cfg = TagConfig()
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    prompts = {
        "tag": render_chat("tag", text="What is 3 + 4?", categories=cfg.categories, max_fine=4),
        "diagnose": render_chat("diagnose", question="What is 3 + 4?", target="7", response="8"),
        "ability": render_chat("ability", error="The student added wrongly."),
        "instruct": render_chat("instruct", ability="addition", error="", tags=[], topic="cooking"),
        "evolve": render_chat("evolve", instruction="What is 3 + 4?", dimension="depth", how="harder"),
        "followup": render_chat("followup", turns=[{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello"}], role=load_roles()[0]),
        "request": render_chat("request", topic="cooking"),
        "instruct_code": render_chat("instruct_code", ability="loops", error="", tags=[], topic="cooking"),
        "solve": render_chat("solve", question="Ann has 3 bags of 4 apples. How many?", context=[]),
        "pot": render_chat("pot", question="Ann has 3 bags of 4 apples. How many?", context=[]),
        "judge": render_chat("judge", instruction="Name a fruit.", response="An apple.", rubric="correct"),
        "evolve_check": render_chat("evolve_check", original="What is 3 + 4?", evolved="What is 3 + 4 + 5?",
                                    how="harder"),
    }
    out = dict(zip(prompts, llm.generate(list(prompts.values()), Sampling())))
    task = parse_instruction(out["instruct_code"])
    name = function_name(task)
    code_prompts = {"solve_code": render_chat("solve_code", task=task, context=[]),
                    "code_tests": render_chat("code_tests", task=task, signature=f"def {name}(x)")}
    out.update(zip(code_prompts, llm.generate(list(code_prompts.values()), Sampling())))
    prompts.update(code_prompts)
    assert set(prompts) == set(MARKERS)
    assert parse_tags(out["tag"], cfg)["macro"] == ["Math Reasoning"]
    assert parse_diagnosis(out["diagnose"])["ability"] and parse_diagnosis(out["ability"])["ability"]
    assert "addition" in parse_instruction(out["instruct"])
    assert parse_evolved(out["evolve"]).startswith("What is 3 + 4?")
    assert parse_followup(out["followup"])
    assert "cooking" in parse_instruction(out["request"])
    assert parse_score(out["judge"]) == 4 and parse_verdict(out["evolve_check"]) is True
    # the verification templates agree with each other: worked answer = program output, tests pass
    assert printed_number(parse_program(out["pot"]))[0] == extract_number(out["solve"])
    assert verify([parse_solution(out["solve_code"])], [parse_tests(out["code_tests"])], name, timeout_s=20)[1].verifies
    # deterministic, and varies with the prompt
    assert llm.generate(list(prompts.values()), Sampling()) == [out[k] for k in prompts]
    many = llm.generate([render_chat("diagnose", question=f"q {i}", target="1", response="2") for i in range(8)],
                        Sampling())
    assert len(set(many)) > 1


def test_builtin_fake_identical_prompts_in_one_call_differ():
    llm = load_llm(LLMConfig(backend="fake", model="builtin"))
    p = render_chat("instruct", ability="addition", error="", tags=[], topic="cooking")
    out = llm.generate([p, p, p], Sampling(seed=3))
    assert len(set(out)) == 3
    assert out == llm.generate([p, p, p], Sampling(seed=3))
