"""Verifiable instruction-following prompts written for this project.

A prompt is a task (form × topic) plus one to three constraints. Each constraint is
stated in words and carried as an IFEval instruction id with its kwargs, so lm-eval's
IFEval checkers (``lm_eval.tasks.ifeval``) score it. Constraints come from different
families, and pairs that contradict each other (lowercase + a capitalised end phrase,
JSON + bullets, ...) are never drawn together. Thresholds are small so a short answer
(the suite's tight ``max_gen_toks``) can satisfy them.
"""
from __future__ import annotations

import random

TOPICS = [
    "the water cycle", "a rainy afternoon in a small town", "learning to ride a bicycle", "honeybees",
    "the history of the printing press", "saving money as a student", "volcanoes", "a lighthouse keeper",
    "composting at home", "the moon landing", "healthy breakfast ideas", "a lost cat finding its way home",
    "how vaccines work", "the first day at a new job", "recycling plastic", "chess openings for beginners",
    "the life of a tree", "public libraries", "time management", "the Great Wall of China", "sleep hygiene",
    "a robot that learns to paint", "electric cars", "the importance of friendship", "desert animals",
    "how bread rises", "a mountain hiking trip", "photosynthesis", "remote work", "the invention of the telephone",
    "ocean tides", "a village festival", "learning a second language", "the solar system", "kindness to strangers",
    "making a paper airplane", "coral reefs", "a detective solving a small mystery", "urban gardening",
    "the benefits of walking", "ancient Egypt", "how a bill becomes a law", "winter in the Arctic",
    "a grandmother's recipe", "budget travel", "the internet", "rainforests", "a job interview",
    "birdwatching", "a school science fair", "clean drinking water", "the Olympic Games", "music practice",
    "a friendly dragon", "first aid for small cuts", "the history of coffee", "earthquakes", "board games",
    "a train journey", "caring for a houseplant",
]

FORMS = [
    "Write a short story about {t}.", "Explain {t} to a ten-year-old.", "Write an email to a friend about {t}.",
    "Give practical advice on {t}.", "Describe {t}.", "Write a short blog post about {t}.",
    "Write a poem about {t}.", "Write a letter to the editor about {t}.", "Summarize what people should know about {t}.",
    "List some interesting facts about {t}.", "Write a product description inspired by {t}.",
    "Write a short speech about {t}.", "Write a diary entry about {t}.", "Write a news report about {t}.",
    "Write a short dialogue between two people discussing {t}.", "Write a riddle and its answer about {t}.",
    "Write a haiku sequence about {t}.", "Write a limerick about {t}.",
]

KEYWORDS = ["bright", "journey", "simple", "future", "careful", "garden", "window", "river", "quiet", "energy",
            "balance", "history", "colour", "morning", "promise", "network", "secret", "ladder", "planet", "storm"]
PLACEHOLDERS = ["[name]", "[address]", "[date]", "[city]", "[time]"]


def _c(iid: str, text: str, **kwargs) -> tuple[str, str, dict]:
    return iid, text, kwargs


# family -> constraint makers; one constraint per family at most
def _case(r):
    return r.choice([
        lambda: _c("change_case:english_lowercase",
                   "Your entire response should be in English, and in all lowercase letters. No capital letters are allowed."),
        lambda: _c("change_case:english_capital", "Your entire response should be in English and in all capital letters."),
        lambda: (lambda n: _c("change_case:capital_word_frequency",
                              f"In your response, words with all capital letters should appear at least {n} times.",
                              capital_frequency=n, capital_relation="at least"))(r.randint(2, 4)),
    ])()


def _length(r):
    return r.choice([
        lambda: (lambda n: _c("length_constraints:number_words", f"Answer with less than {n} words.",
                              num_words=n, relation="less than"))(r.choice([40, 60, 80, 100])),
        lambda: (lambda n: _c("length_constraints:number_words", f"Answer with at least {n} words.",
                              num_words=n, relation="at least"))(r.choice([20, 30, 40])),
        lambda: (lambda n: _c("length_constraints:number_sentences", f"Your response should contain less than {n} sentences.",
                              num_sentences=n, relation="less than"))(r.choice([3, 4, 5, 6])),
        lambda: (lambda n: _c("length_constraints:number_sentences", f"Your response should contain at least {n} sentences.",
                              num_sentences=n, relation="at least"))(r.choice([2, 3, 4])),
        lambda: (lambda n: _c("length_constraints:number_paragraphs",
                              f"There should be {n} paragraphs. Paragraphs are separated with the markdown divider: ***",
                              num_paragraphs=n))(r.choice([2, 3])),
    ])()


def _format(r):
    return r.choice([
        lambda: (lambda n: _c("detectable_format:number_bullet_lists",
                              f"Your answer must contain exactly {n} bullet points. Use the markdown bullet points such as:\n* This is point 1.\n* This is point 2",
                              num_bullets=n))(r.choice([2, 3, 4])),
        lambda: _c("detectable_format:title",
                   "Your answer must contain a title, wrapped in double angular brackets, such as <<poem of joy>>."),
        lambda: (lambda n: _c("detectable_format:number_highlighted_sections",
                              f"Highlight at least {n} sections in your answer with markdown, i.e. *highlighted section*.",
                              num_highlights=n))(r.choice([1, 2, 3])),
        lambda: (lambda n, w: _c("detectable_format:multiple_sections",
                                 f"Your response must have {n} sections. Mark the beginning of each section with {w} X, such as: {w} 1.",
                                 section_spliter=w, num_sections=n))(r.choice([2, 3]), r.choice(["Section", "SECTION"])),
    ])()


def _keywords(r):
    return r.choice([
        lambda: (lambda ks: _c("keywords:existence", f"Include the keywords {ks[0]} and {ks[1]} in the response.",
                               keywords=ks))(r.sample(KEYWORDS, 2)),
        lambda: (lambda k, n: _c("keywords:frequency", f"In your response, the word {k} should appear at least {n} times.",
                                 keyword=k, frequency=n, relation="at least"))(r.choice(KEYWORDS), r.choice([2, 3])),
        lambda: (lambda ks: _c("keywords:forbidden_words", f"Do not include the keywords {ks[0]} or {ks[1]} in the response.",
                               forbidden_words=ks))(r.sample(["the", "and", "very", "good", "is", "it"], 2)),
        lambda: (lambda l, n: _c("keywords:letter_frequency",
                                 f"In your response, the letter {l} should appear less than {n} times.",
                                 letter=l, let_frequency=n, let_relation="less than"))(r.choice("qzxjk"), r.choice([2, 3, 4])),
        lambda: (lambda l, n: _c("keywords:letter_frequency",
                                 f"In your response, the letter {l} should appear at least {n} times.",
                                 letter=l, let_frequency=n, let_relation="at least"))(r.choice("eatn"), r.choice([5, 10, 15])),
    ])()


def _ending(r):
    return r.choice([
        lambda: (lambda p: _c("startend:end_checker",
                              f"Finish your response with this exact phrase: {p} No other words should follow this phrase.",
                              end_phrase=p))(r.choice(["Is there anything else I can help with?", "Any other questions?",
                                                       "That is all for today."])),
        lambda: (lambda m: _c("detectable_content:postscript",
                              f"At the end of your response, please explicitly add a postscript starting with {m}",
                              postscript_marker=m))(r.choice(["P.S.", "P.P.S"])),
    ])()


def _content(r):
    return r.choice([
        lambda: (lambda n: _c("detectable_content:number_placeholders",
                              f"The response must contain at least {n} placeholders represented by square brackets, such as {' '.join(PLACEHOLDERS[:n])}.",
                              num_placeholders=n))(r.choice([1, 2])),
        lambda: _c("punctuation:no_comma", "In your entire response, refrain from the use of any commas."),
    ])()


# Constraints that shape the whole answer: only ever alone or with a length limit.
def _whole(r):
    return r.choice([
        lambda: _c("detectable_format:json_format",
                   "Entire output should be wrapped in JSON format. You can use markdown ticks such as ```."),
        lambda: _c("startend:quotation", "Wrap your entire response with double quotation marks."),
        lambda: _c("combination:two_responses",
                   "Give two different responses. Responses and only responses should be separated by 6 asterisk symbols: ******."),
        lambda: (lambda lang, name: _c("language:response_language",
                                       f"Your ENTIRE response should be in {name} language, no other language is allowed.",
                                       language=lang))(*r.choice([("fr", "French"), ("es", "Spanish"), ("de", "German")])),
    ])()


FAMILIES = {"case": _case, "length": _length, "format": _format, "keywords": _keywords,
            "ending": _ending, "content": _content}
# case rules contradict capitalised end phrases/markers; all-capitals contradicts nothing else here
CONFLICTS = {("case", "ending")}
# instruction pairs that cannot both hold ("SECTION 1" is not lowercase, "Section 1" not all capitals)
ID_CONFLICTS = {("change_case:english_lowercase", "detectable_format:multiple_sections"),
                ("change_case:english_capital", "detectable_format:multiple_sections")}


def _compatible(fams: list[str]) -> bool:
    return not any((a, b) in CONFLICTS or (b, a) in CONFLICTS for a in fams for b in fams)


def _ids_compatible(ids: list[str]) -> bool:
    return not any((a, b) in ID_CONFLICTS or (b, a) in ID_CONFLICTS for a in ids for b in ids)


def build(n: int = 300, seed: int = 4321) -> list[dict]:
    """``n`` distinct prompts (1-3 constraints each) in IFEval's row format plus an ``id``."""
    r = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        task = r.choice(FORMS).format(t=r.choice(TOPICS))
        k = r.choices([1, 2, 3], weights=[3, 4, 3])[0]
        if r.random() < 0.12:
            cons = [_whole(r)]
            if k > 1 and cons[0][0] != "language:response_language":
                cons.append(FAMILIES["length"](r))
        else:
            fams = r.sample(sorted(FAMILIES), k)
            if not _compatible(fams):
                continue
            cons = [FAMILIES[f](r) for f in fams]
            if not _ids_compatible([iid for iid, _, _ in cons]):
                continue
        prompt = " ".join([task] + [text for _, text, _ in cons])
        if prompt in seen:
            continue
        seen.add(prompt)
        rows.append({"id": f"ifeval-{len(rows):04d}", "key": len(rows), "prompt": prompt,
                     "instruction_id_list": [iid for iid, _, _ in cons],
                     "kwargs": [kw for _, _, kw in cons]})
    return rows
