"""lm-eval model type ``synthloop-ct2``: the student's eval on the compiled engine (``evalsuite.engine``).

Registered in lm-eval's own model registry; ``harness.py`` imports this module when
``EvalConfig.backend == "ct2"`` (lm-eval is touched only there and here). A LoRA adapter
(``peft=``) is merged into the base and converted once (cache key: base content, adapter content
hash, quantization): CT2 serves dense weights only.

* ``generate_until``: each gen_kwargs group is one engine call (the engine batches by length);
  the task's ``until`` plus EOS are stop strings; greedy unless ``do_sample``; contexts are
  left-truncated to ``max_length - max_gen_toks`` and post-processed exactly as lm-eval's ``hf``.
* ``loglikelihood`` / ``loglikelihood_rolling``: the engine's ``forward_batch`` log-probs from the
  same quantized weights (sum and is_greedy). :meth:`CT2LM.report` says so; ``results.json``
  carries it under ``engine``.
* ``apply_chat_template``: the model's own chat template, as lm-eval's ``hf`` does.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from evalsuite.engine import Engine

log = logging.getLogger(__name__)

NAME = "synthloop-ct2"


@register_model(NAME)
class CT2LM(TemplateLM):
    def __init__(self, pretrained: str, peft: str | None = None, quantization: str = "int8",
                 batch_size: int | str = 64, device: str = "cpu", max_length: int | None = None,
                 max_gen_toks: int = 256, threads: int = 0, seed: int = 0, replicas: int = 0, **unused):
        super().__init__()
        if unused:
            log.info("synthloop-ct2 ignores model args %s", sorted(unused))
        self.engine = Engine(str(pretrained), adapter=str(peft) if peft else None, quantization=quantization,
                             device=device, threads=int(threads), replicas=int(replicas))
        self.tokenizer = self.engine.tok
        self.pretrained, self.adapter, self.quantization = str(pretrained), peft, quantization
        # "auto" means nothing to the engine (it plans its own batches): take its default cap
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 64
        self.max_gen_toks, self.seed = int(max_gen_toks), int(seed)
        self._max_length = int(max_length) if max_length else self._model_max_length()
        self.requests = {"generate_until": 0, "loglikelihood": 0, "loglikelihood_rolling": 0}
        self._device, self._rank, self._world_size = device, 0, 1

    def _model_max_length(self) -> int:
        """As lm-eval's hf model type: the model config's context size, else 2048."""
        cfg_path = Path(self.pretrained) / "config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        for key in ("n_positions", "max_position_embeddings", "n_ctx"):
            if cfg.get(key):
                return int(cfg[key])
        return 2048

    # ------------------------------------------------------------------ tokenizer
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.eot_token_id

    @property
    def max_length(self) -> int:
        return self._max_length

    @property
    def tokenizer_name(self) -> str:
        return self.tokenizer.name_or_path.replace("/", "__")

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        if add_special_tokens is None:  # a chat-templated string already starts with its BOS
            bos = self.tokenizer.bos_token
            add_special_tokens = not (bos and string.startswith(bos))
        return self.tokenizer(string, add_special_tokens=add_special_tokens)["input_ids"]

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt,
                                                  continue_final_message=not add_generation_prompt)

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = {}
        for i, req in enumerate(requests):
            groups.setdefault(json.dumps(req.args[1], sort_keys=True, default=str), []).append(i)
        eos = self.tokenizer.decode([self.eot_token_id], skip_special_tokens=False)
        for idx in groups.values():
            kwargs = normalize_gen_kwargs(dict(requests[idx[0]].args[1]), self.max_gen_toks)
            until = handle_stop_sequences(kwargs.pop("until", None), eos=eos)
            max_gen = int(kwargs.pop("max_gen_toks"))
            max_ctx = self.max_length - max_gen
            if max_ctx <= 0:
                raise ValueError(f"max_gen_toks={max_gen} leaves no room for a prompt in max_length={self.max_length}")
            contexts = [requests[i].args[0] for i in idx]
            ids = [self.tok_encode(c)[-max_ctx:] for c in contexts]
            temperature = float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample") else 0.0
            texts = self.engine.generate(ids, max_new_tokens=max_gen, temperature=temperature,
                                         top_p=float(kwargs.get("top_p", 1.0)), seed=self.seed, stop=until,
                                         batch_size=self.batch_size, desc="generate_until[ct2]")
            for i, context, text in zip(idx, contexts, texts):
                text = postprocess_generated_text(generation=text, stop=until, think_end_token=None)
                out[i] = text
                self.cache_hook.add_partial("generate_until", (context, requests[i].args[1]), text)
        self.requests["generate_until"] += len(requests)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------ log-likelihood
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        pairs = []
        for _, ctx, cont in requests:
            cont = cont[-self.max_length:]
            ctx = ctx[-(self.max_length - len(cont)):] if len(ctx) + len(cont) > self.max_length else ctx
            if not ctx:  # a continuation as long as the window: condition on the prefix token
                ctx, cont = [self.prefix_token_id], cont[-(self.max_length - 1):]
            pairs.append((ctx, cont))
        res = self.engine.loglikelihood(pairs)
        for (key, _, _), r in zip(requests, res):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, r)
        self.requests["loglikelihood"] += len(requests)
        return res

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for k, req in enumerate(requests):
            toks = self.tok_encode(req.args[0], add_special_tokens=False)
            for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=toks, prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1)):
                windows.append((None, ctx, cont))
                owner.append(k)
        scores = self._loglikelihood_tokens(windows)
        totals = [0.0] * len(requests)
        for k, (s, _) in zip(owner, scores):
            totals[k] += s
        for req, t in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", (req.args[0],), t)
        self.requests["loglikelihood_rolling"] += len(requests)
        return totals

    # ------------------------------------------------------------------ provenance
    def report(self) -> dict:
        """What served this evaluation (results.json ``engine``)."""
        import ctranslate2

        st = self.engine.stats
        return {"backend": "ct2", "library": f"ctranslate2 {ctranslate2.__version__}",
                "quantization": self.quantization, "model_dir": str(self.engine.path),
                "replicas": self.engine.replicas, "threads_per_replica": self.engine.threads,
                "adapter": str(self.adapter) if self.adapter else None,
                "adapter_applied": "merged into the base with peft, then converted" if self.adapter else None,
                "generate_until": "ct2 generate_batch",
                "loglikelihood": f"ct2 forward_batch ({self.quantization} weights)",
                "requests": dict(self.requests), "generated_tokens": st["generated_tokens"],
                "generate_s": round(st["generate_s"], 1),
                "tokens_per_s": round(st["generated_tokens"] / st["generate_s"], 1) if st["generate_s"] else None}
