"""The compiled generation engine for CPU: CTranslate2. The one module that imports ``ctranslate2``.

The teacher backend (``synth.llm.ct2``) and the student's lm-eval model (``evalsuite.lm_ct2``)
both go through :class:`Engine`; they hand it token ids and get texts or log-probs back.
Why CTranslate2 and not llama.cpp or transformers ``generate``: README "Generation engine"
(measured by ``benchmarks/generation.py``).

* :func:`prepare` converts an HF model folder (optionally with a LoRA adapter merged in by
  peft: CT2 has no LoRA at run time) once into ``<cache>/ct2/<key>``, keyed by the content of
  the source folder, the adapter's content, the quantization and the ctranslate2 version.
* :meth:`Engine.generate` takes all prompts of a call, groups them by length into batches of up
  to ``batch_size`` (:func:`plan_batches`: CT2 ingests a batch's prompts at once only up to the
  shortest one), and CT2 drops finished rows as it decodes (no compute spent on padding after
  EOS, unlike a transformers batch); a per-token callback stops a row at a stop string.
* :meth:`Engine.loglikelihood`
  (``forward_batch``: every position's log-probs, which lm-eval's ``is_greedy`` needs).
"""
from __future__ import annotations

import atexit
import functools
import hashlib
import logging
import os
import shutil
import time
import weakref
from pathlib import Path
from typing import Sequence

from evalsuite.models import cache_root

log = logging.getLogger(__name__)

# CTranslate2 weight types; int8 is the CPU default (the fastest here, README "Generation engine")
QUANTIZATIONS = ("int8", "int8_float32", "int16", "float32", "float16", "bfloat16", "int8_float16",
                 "int8_bfloat16")
LOGPROB_BUDGET = 2048  # batch x positions per forward_batch in loglikelihood (x vocab x 4 bytes)


def _hash_tree(path: Path, h) -> None:
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        if f.name == "DONE":  # written by our own converters, not model content
            continue
        h.update(str(f.relative_to(path)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)


@functools.lru_cache(maxsize=32)
def _content_hash(path: str, stamp: tuple) -> str:  # stamp: re-hash only when a file changed
    h = hashlib.sha256()
    _hash_tree(Path(path), h)
    return h.hexdigest()


def content_hash(path: str | os.PathLike) -> str:
    """sha256 over a folder's file names and bytes (a 540 MB model: ~1 s, once per process)."""
    p = Path(path).resolve()
    if not p.is_dir():
        raise FileNotFoundError(f"no model/adapter folder at {p}")
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.rglob("*")) if f.is_file())
    return _content_hash(str(p), stamp)


def check_quantization(q: str, key: str = "") -> None:
    """``key``: the config key that set ``q``, named in the error."""
    if q not in QUANTIZATIONS:
        raise ValueError(f"{key + ': ' if key else ''}unknown ct2 quantization {q!r}; use one of {', '.join(QUANTIZATIONS)}")


def prepare(model: str, adapter: str | None = None, quantization: str = "int8",
            cache_dir: str | os.PathLike | None = None) -> Path:
    """The CT2 folder for ``model`` (an HF folder) + ``adapter`` (merged) at ``quantization``,
    converted once into the cache (temp name, renamed into place)."""
    import ctranslate2

    check_quantization(quantization)
    if not Path(model).is_dir():
        raise FileNotFoundError(f"ct2 engine: {model!r} is not a local HF model folder "
                                f"(resolve embedded:/hub names with evalsuite.models.resolve_model first)")
    parts = [content_hash(model), content_hash(adapter) if adapter else "no-adapter", quantization,
             ctranslate2.__version__]
    key = hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]
    name = f"{Path(model).name}{'+' + Path(adapter).name if adapter else ''}-{quantization}-{key}"
    target = cache_root(cache_dir) / "ct2" / name
    if (target / "DONE").exists():
        return target
    t0 = time.time()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    merged = target.with_name(target.name + f".merged{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        source = model
        if adapter:
            _merge_adapter(model, adapter, merged)
            source = str(merged)
        log.info("converting %s to CTranslate2 (%s) at %s (once)", source, quantization, target)
        from ctranslate2.converters import TransformersConverter

        TransformersConverter(source, low_cpu_mem_usage=True).convert(str(tmp), quantization=quantization,
                                                                      force=True)
        from transformers import AutoTokenizer

        AutoTokenizer.from_pretrained(source).save_pretrained(tmp)  # the engine reads its tokenizer from here
        gen_cfg = Path(source) / "generation_config.json"
        if gen_cfg.exists():  # its eos_token_id list is where generation stops
            shutil.copy(gen_cfg, tmp / "generation_config.json")
        (tmp / "DONE").write_text(f"model {model}\nadapter {adapter}\nquantization {quantization}\n"
                                  f"ctranslate2 {ctranslate2.__version__}\n")
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(merged, ignore_errors=True)
    log.info("ct2 model ready in %.1f s", time.time() - t0)
    return target


def _merge_adapter(model: str, adapter: str, out: Path) -> None:
    """base + LoRA merged into plain fp32 weights (CT2 serves one dense model)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(out, safe_serialization=True)
    AutoTokenizer.from_pretrained(model).save_pretrained(out)
    gen_cfg = Path(model) / "generation_config.json"
    if gen_cfg.exists():
        shutil.copy(gen_cfg, out / "generation_config.json")


# Cost model of plan_batches, in ms, measured for SmolLM2-135M int8 on the 2 shared cores (load
# ~4.5; only the ratios matter): a decode step costs STEP_MS plus, per row, ROW_MS + CTX_MS per token
# of context (b=1: 24 ms, b=16: 196 ms per step at 300 tokens of context). The context term is CT2
# copying its KV cache each step (ops::Concat in layers/attention.cc), with the model's 3 key/value
# heads replicated to all 9 query heads before caching, so a long prompt makes every row-step
# expensive. A prompt token forwarded at once costs PREFILL_MS (1.28 ms at b=16, 0.77 at b=1).
# A batch of b rows decodes about new_tokens * b / (b + GEN_SPREAD) steps: its longest answer
# (most answers stop well before the cap; one row alone ran ~0.27 of it in the benchmark's calls).
STEP_MS, ROW_MS, CTX_MS, PREFILL_MS, GEN_SPREAD = 12.0, 0.7, 0.036, 1.2, 3.0


def plan_batches(lengths: Sequence[int], max_batch: int, new_tokens: int) -> list[list[int]]:
    """Prompt indices grouped into batches (sorted by length) at the least estimated cost.

    CT2 forwards a batch's prompts at once only up to its SHORTEST prompt; the rest of each longer
    prompt is fed one token per decode step (OpenNMT/CTranslate2#1480): a row-step at that token's
    context length instead of a prefill token. A batch of prompts of lengths l_min..l_max costs
    about PREFILL_MS*b*l_min + sum over l of (l - l_min)*(ROW_MS + CTX_MS*(l_min + l)/2) +
    STEP_MS*(l_max - l_min + its decode steps) on top of its generated tokens' own row-steps (the
    same in any grouping): fewer batches save fixed step costs, a wide length spread costs prompt
    tokens fed one at a time, dearly when prompts are long. Exact dynamic programme over the
    sorted lengths, at most ``max_batch`` rows per batch.
    """
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    L = [lengths[i] for i in order]
    n, cap = len(L), max(1, max_batch)
    s1, s2 = [0], [0]
    for x in L:
        s1.append(s1[-1] + x)
        s2.append(s2[-1] + x * x)
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - cap), j):
            b, lo = j - i, L[i]
            spread = s1[j] - s1[i] - b * lo                       # prompt tokens fed one per step
            spread_ms = ROW_MS * spread + CTX_MS / 2 * (s2[j] - s2[i] - b * lo * lo)
            steps = L[j - 1] - lo + new_tokens * b / (b + GEN_SPREAD)
            c = best[i] + PREFILL_MS * b * lo + spread_ms + STEP_MS * steps
            if c < best[j]:
                best[j], cut[j] = c, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j]:j])
        j = cut[j]
    return groups[::-1]


def budget_batches(lengths: Sequence[int], budget: int, longest_first: bool = False) -> list[list[int]]:
    """Indices sorted by length (ties by index; ``longest_first`` descending), cut into batches
    whose padded size, rows x the batch's longest, stays within ``budget`` tokens (one row at least).
    The one planner of every scoring pass: CT2 ``forward_batch`` / ``score_batch`` and IFD's
    transformers forward."""
    n = len(lengths)
    order = sorted(range(n), key=lambda i: (-lengths[i] if longest_first else lengths[i], i))
    groups, start = [], 0
    while start < n:
        end = start + 1
        while end < n and (end - start + 1) * max(lengths[order[start]], lengths[order[end]], 1) <= budget:
            end += 1
        groups.append(order[start:end])
        start = end
    return groups


MIN_SHARED = 8  # shortest common prefix worth forwarding once for the whole batch


def shared_prefix(prompts: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix every prompt of a batch starts with (0 for a single prompt or one
    shorter than MIN_SHARED), leaving each prompt at least one token of its own.

    :meth:`Engine.generate` forwards it once as CT2's ``static_prompt`` (batch 1, the state then
    tiled to the batch) instead of once per row: the teacher's templates share most of their
    tokens (tag: ~235 of ~270, diagnose: ~256 of ~320)."""
    if len(prompts) < 2:
        return 0
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    k = 0
    while k < n and all(p[k] == first[k] for p in prompts):
        k += 1
    return k if k >= MIN_SHARED else 0


def _end_ids(folder: Path, tok) -> list[int]:
    """EOS ids: the tokenizer's and the generation config's (transformers stops on either)."""
    import json

    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gc = folder / "generation_config.json"
    if gc.exists():
        eos = json.loads(gc.read_text()).get("eos_token_id")
        ids.update(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    return sorted(ids)


def cpu_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


MAX_AUTO_REPLICAS = 8


def balance(groups: Sequence[Sequence[int]], costs: Sequence[float], replicas: int) -> list[list[int]]:
    """Group indices per replica: longest estimated cost first onto the least loaded replica (LPT),
    each replica's groups kept in plan order (a replica runs its queue in that order: deterministic)."""
    load, owner = [0.0] * replicas, [0] * len(groups)
    for g in sorted(range(len(groups)), key=lambda g: (-costs[g], g)):
        r = min(range(replicas), key=lambda r: (load[r], r))
        owner[g], load[r] = r, load[r] + costs[g]
    return [[g for g in range(len(groups)) if owner[g] == r] for r in range(replicas)]


class Engine:
    """CTranslate2 generators over ``model`` (+ ``adapter``) with the model's own tokenizer.

    On CPU the engine holds ``replicas`` generators of ``threads`` threads each (auto: one
    single-threaded replica per core), each decoding its own batches at the same time: a 135M
    model's matmuls are too small to keep two threads busy, so batches side by side on one core
    each beat one batch on all cores (README "Generation engine"). Which batch runs on which
    replica is fixed by :func:`balance`, so sampled output is reproducible."""

    def __init__(self, model: str, adapter: str | None = None, quantization: str = "int8",
                 device: str = "cpu", threads: int = 0, cache_dir: str | os.PathLike | None = None,
                 replicas: int = 0):
        import ctranslate2
        from transformers import AutoTokenizer

        self._ct2 = ctranslate2
        self.path = prepare(model, adapter, quantization, cache_dir)
        self.quantization = quantization
        if device == "auto":
            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        self.device = device
        if replicas <= 0:  # auto: one replica per core on CPU (of `threads` threads, if set), one on GPU
            cores = cpu_cores()
            replicas = 1 if device != "cpu" else max(1, min(MAX_AUTO_REPLICAS, cores // max(1, threads)))
        self.replicas = replicas
        # threads per replica; 0 = CT2's default (all cores) when alone, one core each side by side
        self.threads = max(0, threads) if threads > 0 or replicas == 1 else 1
        self.generators: list = []
        self._load()
        self.tok = AutoTokenizer.from_pretrained(self.path)
        self.end_ids = _end_ids(self.path, self.tok)
        self.stats = {"generated_tokens": 0, "generate_s": 0.0, "prompts": 0}
        _OPEN.add(self)

    @property
    def generator(self):
        """The first replica (scoring and single calls)."""
        return self.generators[0] if self.generators else None

    def _load(self) -> None:
        self.generators = [self._ct2.Generator(str(self.path), device=self.device, compute_type=self.quantization,
                                               intra_threads=self.threads) for _ in range(self.replicas)]

    def _reseed(self, seed: int) -> None:
        """CT2 samples from a thread-local RNG seeded when its worker thread starts, so a seed
        takes effect only in fresh generators (a reload: ~0.1 s each for SmolLM2-135M int8)."""
        self._ct2.set_random_seed(seed)
        for g in self.generators:
            g.unload_model()
        self._load()

    def _tokens(self, ids: Sequence[int]) -> list[str]:
        return self.tok.convert_ids_to_tokens(list(ids))

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, stop: Sequence[str] = (), batch_size: int = 64,
                 desc: str = "ct2") -> list[str]:
        """Decoded continuations (special tokens skipped, cut before the first stop string), in input order.

        Greedy when ``temperature <= 0``; otherwise top-p sampling over the whole vocabulary, seeded
        (same seed + same prompts -> same samples). Batches come from :func:`plan_batches`.
        """
        from tqdm.auto import tqdm

        if not prompts:
            return []
        stop = [s for s in stop if s]
        tail = max((len(s) for s in stop), default=0) + 1  # tokens to decode: each is >= 1 character
        n = len(prompts)
        produced = [0] * n
        seen: list[list[int]] = [[] for _ in range(n)]
        bar = tqdm(total=n, desc=desc, unit="prompt", leave=False)
        t0, last = time.time(), [0.0]
        greedy = temperature <= 0
        if not greedy:
            self._reseed(seed)
        texts: list[str] = [""] * n
        # side by side, each replica needs batches of its own: cap rows so there are enough of them
        cap = batch_size if self.replicas == 1 else max(1, min(batch_size, -(-n // self.replicas)))
        groups = plan_batches([len(p) for p in prompts], cap, max_new_tokens)
        costs = [sum(len(prompts[i]) for i in g) * PREFILL_MS + STEP_MS * max_new_tokens * len(g) / (len(g) + GEN_SPREAD)
                 for g in groups]
        pending = []  # (group, async results) in submission order
        for r, mine in enumerate(balance(groups, costs, self.replicas)):
            for gi in mine:
                group = groups[gi]

                def on_token(step, group=group) -> bool:
                    i = group[step.batch_id]
                    produced[i] += 1
                    now = time.time()
                    if now - last[0] > 0.5:
                        last[0] = now
                        bar.set_postfix(tok_s=f"{sum(produced) / max(now - t0, 1e-6):.1f}", refresh=False)
                    if not stop or step.is_last or step.token_id in self.end_ids:
                        return False
                    seen[i].append(step.token_id)
                    text = self.tok.decode(seen[i][-tail:], skip_special_tokens=True)
                    return any(s in text for s in stop)  # True stops this row now

                shared = shared_prefix([prompts[i] for i in group])
                # asynchronous: each replica runs its queue in order while the others run theirs
                pending.append((group, self.generators[r].generate_batch(
                    [self._tokens(prompts[i][shared:]) for i in group], max_length=max_new_tokens,
                    static_prompt=self._tokens(prompts[group[0]][:shared]) if shared else None,
                    cache_static_prompt=False, include_prompt_in_result=False, end_token=self.end_ids,
                    sampling_topk=1 if greedy else 0, sampling_topp=1.0 if greedy else top_p,
                    sampling_temperature=1.0 if greedy else temperature, callback=on_token,
                    asynchronous=True)))
        for group, results in pending:
            for i, res in zip(group, results):
                ids = res.result().sequences_ids[0]
                text = self.tok.decode(ids, skip_special_tokens=True)
                cut = min((text.find(s) for s in stop if s in text), default=len(text))
                texts[i] = text[:cut]
                self.stats["generated_tokens"] += len(ids)
            bar.update(len(group))
        bar.close()
        self.stats["generate_s"] += time.time() - t0
        self.stats["prompts"] += n
        return texts

    # ------------------------------------------------------------------ scoring
    def loglikelihood(self, pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
                      desc: str = "ct2 loglikelihood") -> list[tuple[float, bool]]:
        """(sum log p(continuation | context), continuation is the greedy one) per pair, from
        ``forward_batch`` log-probs; batches grow while batch x length stays within LOGPROB_BUDGET."""
        import numpy as np
        from tqdm.auto import tqdm

        seqs = [list(c) + list(x) for c, x in pairs]
        result: list[tuple[float, bool]] = [(0.0, False)] * len(seqs)
        bar = tqdm(total=len(seqs), desc=desc, unit="req", leave=False)
        for idx in budget_batches([len(q) for q in seqs], LOGPROB_BUDGET, longest_first=True):
            lp = np.asarray(self.generator.forward_batch([seqs[i] for i in idx], return_log_probs=True))
            for row, i in enumerate(idx):
                n_cont, L = len(pairs[i][1]), len(seqs[i])
                # position t predicts token t+1; the continuation is tokens L-n_cont .. L-1
                pred = lp[row, L - n_cont - 1:L - 1]
                target = np.asarray(seqs[i][L - n_cont:])
                total = float(pred[np.arange(n_cont), target].sum())
                result[i] = (total, bool((pred.argmax(-1) == target).all()))
            bar.update(len(idx))
        bar.close()
        return result

    def token_logprobs(self, seqs: Sequence[Sequence[int]], batch_tokens: int = 8192,
                       desc: str = "ct2 score") -> list[list[float]]:
        """log p(token t | tokens before it) for t = 1 .. len-1 of each sequence (``score_batch``:
        only the scored tokens' log-probs leave CT2, not the vocabulary's). Sequences are sorted by
        length into batches of at most ``batch_tokens`` padded tokens, spread over the replicas
        (each scores its queue while the others score theirs)."""
        from tqdm.auto import tqdm

        if not seqs:
            return []
        groups = budget_batches([len(q) for q in seqs], batch_tokens)   # a batch's last sequence is its widest
        costs = [len(g) * len(seqs[g[-1]]) for g in groups]
        self.stats["score_batches"] = self.stats.get("score_batches", 0) + len(groups)
        pending = [(groups[gi], self.generators[r].score_batch(
                       [self._tokens(seqs[i]) for i in groups[gi]], max_input_length=0, asynchronous=True))
                   for r, mine in enumerate(balance(groups, costs, self.replicas)) for gi in mine]
        out: list[list[float]] = [[] for _ in seqs]
        with tqdm(total=len(seqs), desc=desc, unit="seq", leave=False) as bar:
            for group, results in pending:
                for i, res in zip(group, results):
                    out[i] = list(res.result().log_probs)
                bar.update(len(group))
        return out

    def close(self) -> None:
        for g in getattr(self, "generators", []):
            g.unload_model()
        self.generators = []


_OPEN: "weakref.WeakSet[Engine]" = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # CT2's OpenMP pool torn down during interpreter exit next to torch's can abort the process
    # ("Resource deadlock avoided", seen once in 4 runs): release the models while Python still runs
    for e in list(_OPEN):
        e.close()
