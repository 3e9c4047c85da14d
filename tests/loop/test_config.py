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
    cfg = load_config(path)
    assert isinstance(cfg, Config) and cfg.rounds >= 1
    assert cfg.name == path.stem or cfg.name
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
    with pytest.raises(ConfigError, match=r"eval: must be a mapping|eval must be a mapping"):
        load_config(None, ["eval=3"])


def test_broken_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\nrounds: 2\ntrain: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(p)


def test_malformed_override_is_an_error():
    with pytest.raises(ConfigError, match="key.sub=value"):
        load_config(None, ["no-equals-sign"])
