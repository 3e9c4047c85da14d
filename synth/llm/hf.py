"""transformers backend: batched chat generation (the CPU default).

Prompts are rendered with the model's chat template, sorted by length so that each
batch pads little, generated with left padding and returned in input order. Greedy
when ``temperature == 0``; otherwise sampling seeded by ``Sampling.seed`` (the global
torch RNG is restored afterwards).
"""
from __future__ import annotations

import time
from typing import Sequence

from synth.llm.base import LLMConfig, Messages, Sampling, encode_prompts


def trim_at_stop(text: str, stop: Sequence[str]) -> str:
    """Cut ``text`` at the first occurrence of any stop string (generation may overshoot)."""
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if i != -1:
                cut = min(cut, i)
    return text[:cut]


class HFBackend:
    def __init__(self, cfg: LLMConfig):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from evalsuite.models import resolve_model

        self.cfg = cfg
        self.torch = torch
        self.usage = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
        path = resolve_model(cfg.model)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
                 "auto": "auto"}.get(cfg.dtype)
        if dtype is None:
            raise ValueError(f"LLMConfig.dtype: unknown dtype {cfg.dtype!r}; use float32|bfloat16|float16|auto")
        device = cfg.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        if cfg.threads > 0:  # process-wide, but the backend owns the process's torch work
            torch.set_num_threads(cfg.threads)
        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
        if self.tok.chat_template is None:
            raise ValueError(f"model {cfg.model!r} has no chat template; the hf backend needs a chat model")

    # ------------------------------------------------------------------ generation
    def generate(self, prompts: Sequence[Messages], sampling: Sampling) -> list[str]:
        from tqdm.auto import tqdm

        torch = self.torch
        if not prompts:
            return []
        encoded = encode_prompts(self.tok, prompts, self.cfg.max_model_len - sampling.max_new_tokens)
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(encoded)
        greedy = sampling.temperature <= 0
        gen_kwargs = dict(max_new_tokens=sampling.max_new_tokens, pad_token_id=self.tok.pad_token_id,
                          do_sample=not greedy)
        if greedy:
            gen_kwargs.update(temperature=None, top_p=None, top_k=None)
        else:
            gen_kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=None)
        if sampling.stop:
            gen_kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tok)
        bs = max(1, self.cfg.batch_size)
        new_tokens, t0 = 0, time.time()
        bar = tqdm(total=len(encoded), desc=f"generate[{self.cfg.model.split('/')[-1]}]", unit="prompt",
                   leave=False)
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(sampling.seed)
            for start in range(0, len(order), bs):
                idx = order[start:start + bs]
                batch = self.tok.pad({"input_ids": [encoded[i] for i in idx]}, return_tensors="pt")
                batch = {k: v.to(self.device) for k, v in batch.items()}
                out = self.model.generate(**batch, **gen_kwargs)
                gen = out[:, batch["input_ids"].shape[1]:]
                for row, i in enumerate(idx):
                    ids = gen[row].tolist()
                    n = len(ids)
                    for j, t in enumerate(ids):  # stop counting at the first end/pad token
                        if t in (self.tok.eos_token_id, self.tok.pad_token_id):
                            n = j
                            break
                    new_tokens += n
                    text = self.tok.decode(ids[:n], skip_special_tokens=True)
                    outputs[i] = trim_at_stop(text, sampling.stop).strip()
                bar.update(len(idx))
                bar.set_postfix(tok_s=f"{new_tokens / max(time.time() - t0, 1e-6):.1f}")
        bar.close()
        self.usage["requests"] += len(encoded)
        self.usage["prompt_tokens"] += sum(len(e) for e in encoded)
        self.usage["completion_tokens"] += new_tokens
        return outputs

    def close(self) -> None:
        self.model = None
        if self.device.startswith("cuda"):
            self.torch.cuda.empty_cache()
