"""LoRA SFT of one round: records -> adapter. The one module that touches peft and the Trainer.

Steps (top to bottom in ``train``): pick the round's records (policy + replay), shuffle them
with the seed, chat-template them with assistant-only labels, pack them into rows, then run
the transformers ``Trainer`` on flat padding-free batches with a loss computed only at
labelled positions. Checkpoints go to ``out_dir/checkpoints`` and a re-run resumes there.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from . import attention
from evalsuite.records import content_hash, write_json, write_jsonl

from .data import select_records
from .format import SkipRecord, encode
from .packing import FlatCollator, RowDataset, make_rows

log = logging.getLogger(__name__)

LLAMA_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    r: int = 16                    # adapter rank
    alpha: int = 32                # scaling numerator (alpha / r)
    # 0 like torchtune's LoRA recipes: the dropout masks are a measurable share of a CPU step
    # (train/README.md); set 0.05-0.1 for small data sets
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LLAMA_LINEAR))


@dataclass
class TrainConfig:
    # continue: train the previous round's adapter further on new data + replay (Infinity-Instruct
    # style; cheapest per round). restart: a fresh adapter on all accumulated data (DataEnvGym, LLM2LLM).
    policy: Literal["continue", "restart"] = "continue"
    replay: float = 0.25           # share of the training set drawn from earlier rounds under `continue`
    lora: LoraSettings = field(default_factory=LoraSettings)
    lr: float = 2e-4
    epochs: float = 1.0
    max_steps: int = -1            # > 0 overrides epochs
    batch_size: int = 2            # packed rows per step (each up to max_seq_len tokens); see train/README.md
    grad_accum: int = 1
    max_seq_len: int = 1024        # longer records are skipped and counted, never truncated
    pack: bool = True              # best-fit-decreasing packing; False: one record per row
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    seed: int = 0
    device: Literal["cpu", "cuda"] = "cpu"
    bf16: bool = False             # cuda only; fp32 on CPU, where bf16 matmuls are far slower
    gradient_checkpointing: bool = False  # trades speed for activation memory
    save_steps: int = 50
    logging_steps: int = 5
    lr_scheduler: Literal["linear", "cosine", "cosine_with_restarts", "polynomial", "constant",
                          "constant_with_warmup", "inverse_sqrt", "cosine_with_min_lr"] = "cosine"
    max_grad_norm: float = 1.0
    save_total_limit: int = 2      # checkpoints kept while training (all removed after success)
    # packed_sdpa: per-example attention over packed rows; sdpa builds an N*N mask; flash_attention_2 on GPU
    attn_implementation: Literal["packed_sdpa", "flash_attention_2", "sdpa", "eager"] = "packed_sdpa"
    eot_token: str = ""            # end-of-turn text trained with each reply; "" = tokenizer's eos
    threads: int = 0               # torch CPU threads (0 = torch default); 1 is far faster on a busy shared CPU
    # command that starts the training process in place of `python` (train_subprocess, the loop),
    # e.g. ["accelerate", "launch", "--num_processes", "4"]; [] = this Python
    launcher: list[str] = field(default_factory=list)

    NOT_FINGERPRINTED = ("launcher",)  # the loop reruns no training when only the launcher changes

    def __post_init__(self) -> None:
        """Static checks, run when the config is made (the loader reports them naming the key);
        whether a CUDA device exists is checked when training starts."""
        if self.bf16 and self.device == "cpu":
            raise ValueError("bf16: true needs device: cuda (bf16 matmuls on CPU are far slower than fp32)")
        if not 0.0 <= self.replay < 1.0:
            raise ValueError(f"replay: expected a share in [0, 1), got {self.replay!r}")
        if self.lora.r < 1:
            raise ValueError(f"lora.r: must be >= 1, got {self.lora.r}")
        for k in ("batch_size", "grad_accum", "max_seq_len", "save_steps", "logging_steps"):
            if getattr(self, k) < 1:
                raise ValueError(f"{k}: must be >= 1, got {getattr(self, k)}")


def _check_base(base: str) -> str:
    if base.startswith("embedded:"):
        raise ValueError(f"base {base!r}: train/ takes an HF path or id; resolve embedded models first "
                         "(evalsuite.models.resolve_model; the loop passes resolved paths)")
    return base


def build_model(cfg: TrainConfig, base: str, adapter_in: str | None = None):
    """The trainable PEFT model and a word on where its adapter started.

    ``continue`` with an ``adapter_in`` loads it trainable; otherwise a fresh LoRA (B = 0, so
    the model starts as the base) seeded by ``cfg.seed``.
    """
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM, set_seed

    attention.register()
    dtype = torch.bfloat16 if cfg.bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(_check_base(base), dtype=dtype,
                                                 attn_implementation=cfg.attn_implementation)
    model.config.use_cache = False  # a KV cache would also disable packed-sequence handling
    set_seed(cfg.seed)
    if cfg.policy == "continue" and adapter_in:
        model = PeftModel.from_pretrained(model, adapter_in, is_trainable=True)
        pc = model.peft_config["default"]
        for key, have in (("r", pc.r), ("alpha", pc.lora_alpha)):
            if have != getattr(cfg.lora, key):
                raise ValueError(f"lora.{key}: config says {getattr(cfg.lora, key)} but adapter_in {adapter_in} has "
                                 f"{have}; under policy continue they must match")
        return model, f"adapter_in:{adapter_in}"
    lora = LoraConfig(r=cfg.lora.r, lora_alpha=cfg.lora.alpha, lora_dropout=cfg.lora.dropout,
                      target_modules=list(cfg.lora.target_modules), task_type="CAUSAL_LM")
    init = "base" if not adapter_in else f"base (policy restart; adapter_in {adapter_in} not used)"
    return get_peft_model(model, lora), init


def _trainer_class():
    from transformers import Trainer

    class FlatSFTTrainer(Trainer):
        """Loss at labelled positions only: the (tokens x vocab) logits are never built for
        prompt tokens, which on CPU is a large share of the step's memory traffic."""

        loss_is_scaled_for_ga = True  # we divide by the token count of the whole accumulated step

        def training_step(self, model, inputs, num_items_in_batch=None):
            loss = super().training_step(model, inputs, num_items_in_batch)
            value = loss.item()
            sums = _loss_total(self)
            if sums.total is not None and math.isfinite(value):  # the Trainer skips nan/inf losses too
                sums.total += value
            return loss

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            shift = inputs.pop("shift_labels")[0]
            inputs.pop("labels", None)
            keep = (shift != -100).nonzero().flatten()
            out = model(**inputs, logits_to_keep=keep, use_cache=False)
            loss = F.cross_entropy(out.logits[0].float(), shift[keep], reduction="sum")
            denom = num_items_in_batch if num_items_in_batch is not None else keep.numel()
            loss = loss / denom
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size  # DDP averages gradients; the count is global
            return (loss, out) if return_outputs else loss

    return FlatSFTTrainer


def _loss_total_callback():
    from transformers import TrainerCallback
    from transformers.trainer_callback import ExportableState

    class LossTotal(TrainerCallback, ExportableState):
        """Sum of the step losses since step 0 (``FlatSFTTrainer.training_step`` adds to it), saved in
        each checkpoint's trainer_state.json and restored on resume: a resumed run reports the mean
        over all its steps, as an uninterrupted one does (the Trainer's own training_loss covers only
        the steps of its process)."""

        def __init__(self, total: float | None = None):
            self.total = self.at_start = total   # None: unknown (a checkpoint written without it)

        def on_train_begin(self, args, state, control, **kw):
            if state.global_step == 0:
                self.total = 0.0
            self.at_start = self.total           # the steps before a resume

        def state(self) -> dict:
            return {"args": {"total": self.total}, "attributes": {}}

    return LossTotal()


def _loss_total(trainer):
    # looked up each time: resuming replaces the callback with one rebuilt from the checkpoint
    return next(c for c in trainer.callback_handler.callbacks if type(c).__name__ == "LossTotal")


def _rate_callback(collator: FlatCollator):
    from transformers import TrainerCallback

    class TokenRate(TrainerCallback):
        """Adds tokens/s (this process) to every log line, so the progress output shows it."""

        def on_train_begin(self, args, state, control, **kw):
            self.t0, self.step0 = time.perf_counter(), state.global_step

        def on_log(self, args, state, control, logs=None, **kw):
            if logs is not None and "loss" in logs:
                n = collator.totals((state.global_step - self.step0) * args.gradient_accumulation_steps)[0]
                logs["tokens_per_s"] = round(n / (time.perf_counter() - self.t0), 1)

    return TokenRate()


def _fingerprint(cfg: TrainConfig, base: str, adapter_in: str | None, records: list[dict]) -> str:
    return content_hash(dataclasses.asdict(cfg), base, adapter_in, records)


def _prepare_checkpoints(ckpt: Path, fp: str) -> str | None:
    """Last whole checkpoint to resume from, if ``ckpt`` holds one of this exact run; else start clean.

    A kill during a save leaves ``checkpoint-N`` without a readable trainer_state.json (the Trainer
    writes it last): such a folder is removed and the one before it resumed."""
    shutil.rmtree(_trash(ckpt), ignore_errors=True)   # a kill while removing them after success
    stamp = ckpt / "fingerprint.txt"
    if ckpt.exists() and (not stamp.exists() or stamp.read_text().strip() != fp):
        log.warning("%s holds checkpoints of a different run (config or data changed); removing them", ckpt)
        shutil.rmtree(ckpt)
    ckpt.mkdir(parents=True, exist_ok=True)
    stamp.write_text(fp + "\n")
    steps = sorted((int(p.name.split("-")[1]), p) for p in ckpt.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[1].isdigit())
    for _, path in reversed(steps):
        try:
            json.loads((path / "trainer_state.json").read_text())
            return str(path)
        except (OSError, ValueError):
            log.warning("%s was not completely written (killed while saving?); removing it", path)
            shutil.rmtree(path)
    return None


def _trash(ckpt: Path) -> Path:
    return ckpt.with_name(f".{ckpt.name}.removing")


def train(cfg: TrainConfig, data: list[Path], base: str, out_dir: Path,
          adapter_in: str | None = None, history: Sequence[Path] = (), callbacks: Sequence = ()) -> dict:
    """Train one round's adapter; see train/README.md for the files written. Returns metrics."""
    from transformers import AutoTokenizer, TrainingArguments

    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda requested but torch sees no CUDA device")
    if cfg.threads > 0:  # process-wide; train() owns its (sub)process
        torch.set_num_threads(cfg.threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    # 1. the round's records, in a seeded order (input order of files does not leak into training)
    records, counts = select_records([Path(p) for p in data], [Path(p) for p in history],
                                     cfg.policy, cfg.replay, cfg.seed)
    records.sort(key=lambda r: r["id"])
    random.Random(cfg.seed).shuffle(records)

    # 2. chat template + assistant-only labels; untrainable records are counted, not changed
    tok = AutoTokenizer.from_pretrained(_check_base(base))
    kept, examples, skipped = [], [], {}
    for rec in records:
        try:
            examples.append(encode(tok, rec, cfg.max_seq_len, cfg.eot_token or None))
            kept.append(rec)
        except SkipRecord as e:
            skipped.setdefault(e.reason, []).append(rec["id"])
    for reason, ids in skipped.items():
        log.warning("skipped %d record(s) (%s), e.g. %s", len(ids), reason, ids[:3])
    if not examples:
        raise ValueError(f"no trainable records in {[str(p) for p in data]} (skipped: "
                         f"{ {k: len(v) for k, v in skipped.items()} })")

    # 3. packing; train_set.jsonl is exactly what is trained, in training order
    rows = make_rows(examples, cfg.max_seq_len, cfg.pack, cfg.seed)
    dataset = RowDataset(examples, rows)
    ordered = [kept[j] for row in rows for j in row]
    write_jsonl(out_dir / "train_set.jsonl", ordered)
    write_json(out_dir / "train_config.json", dataclasses.asdict(cfg))

    # 4. model + Trainer; resume from this run's last checkpoint if a previous attempt was killed
    ckpt = out_dir / "checkpoints"
    resume = _prepare_checkpoints(ckpt, _fingerprint(cfg, base, adapter_in, ordered))
    model, init = build_model(cfg, base, adapter_in)
    collator = FlatCollator()
    args = TrainingArguments(
        output_dir=str(ckpt), per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        learning_rate=cfg.lr, lr_scheduler_type=cfg.lr_scheduler, warmup_steps=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm, optim="adamw_torch",
        seed=cfg.seed, data_seed=cfg.seed, train_sampling_strategy="sequential",
        use_cpu=cfg.device == "cpu", bf16=cfg.bf16,
        activation_checkpointing=cfg.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=cfg.logging_steps, report_to="none", remove_unused_columns=False,
        restore_callback_states_from_checkpoint=True,  # LossTotal's sum
        dataloader_num_workers=0, disable_tqdm=False)
    trainer = _trainer_class()(model=model, args=args, train_dataset=dataset, data_collator=collator,
                               callbacks=[_rate_callback(collator), _loss_total_callback(), *callbacks])
    if resume:
        log.info("resuming from %s", resume)
    step0 = int(Path(resume).name.split("-")[-1]) if resume else 0
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    train_s = time.perf_counter() - t0

    # 5. outputs
    steps = trainer.state.global_step
    # over all steps, resumed or not: the Trainer's mean covers the steps after step0 only
    before = _loss_total(trainer).at_start
    train_loss = result.training_loss if not step0 or before is None else \
        (before + result.training_loss * (steps - step0)) / steps
    if trainer.state.log_history and "train_loss" in trainer.state.log_history[-1]:
        trainer.state.log_history[-1]["train_loss"] = train_loss
    model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
    trainer.state.save_to_json(str(out_dir / "trainer_state.json"))
    batches = steps * cfg.grad_accum
    per_epoch = -(-len(rows) // cfg.batch_size)
    here = collator.totals((steps - step0) * cfg.grad_accum)
    tokens_seen = sum(dataset.row_tokens(r) for b in range(batches)
                      for r in range((b % per_epoch) * cfg.batch_size,
                                     min(((b % per_epoch) + 1) * cfg.batch_size, len(rows))))
    metrics = {
        "train_loss": train_loss,
        "loss_curve": [{"step": h["step"], "loss": h["loss"]} for h in trainer.state.log_history if "loss" in h],
        "tokens_seen": tokens_seen,
        "tokens_this_process": here[0], "trained_tokens_this_process": here[1],
        "tokens_per_s": here[0] / train_s if train_s > 0 else 0.0,  # whole train() call, checkpointing included
        "pad_share": 0.0,  # padding-free batches: no pad token is ever computed
        "pack_fill": sum(dataset.row_tokens(i) for i in range(len(rows))) / (len(rows) * cfg.max_seq_len),
        "steps": steps, "rows": len(rows), "wall_s": time.perf_counter() - t_start, "train_s": train_s,
        "n_records": len(ordered), "skipped": {k: len(v) for k, v in skipped.items()},
        "skipped_ids": skipped, "init": init, "resumed_from": resume, **counts,
    }
    write_json(out_dir / "metrics.json", metrics)
    # renamed first: a kill while removing them must not leave half-deleted checkpoints to resume from
    os.replace(ckpt, _trash(ckpt))
    shutil.rmtree(_trash(ckpt), ignore_errors=True)
    return metrics


def export(base: str, adapter: str, out: Path) -> Path:
    """Merge ``adapter`` into ``base`` and save a standalone HF folder (safetensors + tokenizer)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = Path(out)
    model = AutoModelForCausalLM.from_pretrained(_check_base(base), dtype="auto")
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    merged.save_pretrained(str(out), safe_serialization=True)
    AutoTokenizer.from_pretrained(base).save_pretrained(str(out))
    return out
