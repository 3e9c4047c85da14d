from pathlib import Path

import pytest

from loop.config import Config, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]
LOOP_CONFIGS = sorted(REPO.glob("configs/*.yaml")) + sorted(REPO.glob("configs/gpu/*.yaml"))


def test_there_are_shipped_configs():
    names = {p.name for p in LOOP_CONFIGS}
    assert {"default.yaml", "smoke.yaml"} <= names


@pytest.mark.parametrize("path", LOOP_CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path):
    import yaml

    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.rounds >= 1
    assert cfg.name == (yaml.safe_load(path.read_text()).get("name") or path.stem)
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "python -m loop run" in first, "a config starts with the command that runs it"


def test_overrides_are_typed(tmp_path):
    cfg = load_config(REPO / "configs/smoke.yaml", ["eval.limit=40", "train.lora.r=32", "teacher.batch_size=8",
                                                    "name=try", "tracking.wandb=disabled"])
    assert cfg.eval.limit == 40 and cfg.train.lora.r == 32 and cfg.name == "try"
    assert cfg.tracking.wandb == "disabled"


def test_unknown_key_names_the_key_and_suggests(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("train:\n  lora:\n    rr: 8\n")
    with pytest.raises(ConfigError, match=r"c.yaml: unknown key 'train.lora.rr' \(did you mean train.lora.r\?\)"):
        load_config(p)
    with pytest.raises(ConfigError, match="unknown key 'evall'"):
        load_config(None, ["evall.limit=3"])


def test_wrong_type_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train.lora.r: expected int, got str 'big'"):
        load_config(None, ["train.lora.r=big"])
    with pytest.raises(ConfigError, match=r"<defaults>: eval must be a mapping, got int"):
        load_config(None, ["eval=3"])


def test_name_defaults_to_the_file_stem(tmp_path):
    p = tmp_path / "my-run.yaml"
    p.write_text("rounds: 1\n")
    assert load_config(p).name == "my-run"
    assert load_config(p, ["name=other"]).name == "other"


@pytest.mark.parametrize("override, message", [
    ("train.policy=contnue", r"train.policy: must be one of \['continue', 'restart'\], got 'contnue' \(did you mean 'continue'\?\)"),
    ("teacher.backend=vlm", r"teacher.backend: must be one of .*got 'vlm' \(did you mean 'vllm'\?\)"),
    ("eval.device=gpu", r"eval.device: must be one of \['cpu', 'cuda'\]"),
    ("train.attn_implementation=flash", r"train.attn_implementation: must be one of"),
    ("tracking.wandb=of", r"tracking.wandb: must be one of"),
    ("train.bf16=true", r"train.bf16: true needs device: cuda"),
    ("train.replay=1.5", r"train.replay: expected a share in \[0, 1\)"),
])
def test_enumerated_and_checked_values_fail_at_load(override, message):
    """A typo stops the run when the config loads, before any stage (not in the training child)."""
    with pytest.raises(ConfigError, match=message):
        load_config(REPO / "configs/smoke.yaml", [override])


def test_broken_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nrounds: 2\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(p)


def test_malformed_override_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["no-equals-sign"])
