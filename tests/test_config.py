"""The config: YAML plus --set overrides, typed coercion, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seq2seq.cli import main
from seq2seq.config import Config, config_from_dict, config_to_dict, load_config, replace_config, save_config
from seq2seq.errors import ConfigError
from seq2seq.model.seq2seq import Seq2Seq

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_without_a_file() -> None:
    assert load_config() == Config()


def test_yaml_values_and_overrides_are_merged_overrides_last(tmp_path: Path) -> None:
    path = _write(tmp_path, "model:\n  hidden_size: 32\n  dropout: 0.2\ntrain:\n  lr: 0.5\n")
    cfg = load_config(path, ["train.lr=1e-3", "model.num_layers=3"])
    assert cfg.model.hidden_size == 32
    assert cfg.model.dropout == 0.2
    assert cfg.model.num_layers == 3
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.decode == Config().decode  # untouched sections keep their defaults


def test_saved_config_loads_back_identical(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "multi30k_de_en.yaml", ["train.betas=0.8,0.99", "tokenizer.joint=false"])
    save_config(cfg, tmp_path / "resolved.yaml")
    assert load_config(tmp_path / "resolved.yaml") == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


@pytest.mark.parametrize(("override", "section", "key", "expected"), [
    ("train.lr=1e-3", "train", "lr", 0.001),  # YAML 1.1 reads 1e-3 as a string
    ("train.lr=2", "train", "lr", 2.0),  # an int where a float is declared
    ("train.batch_size=1024", "train", "batch_size", 1024),
    ("train.batch_size=2048.0", "train", "batch_size", 2048),
    ("model.bidirectional=false", "model", "bidirectional", False),
    ("model.bidirectional=yes", "model", "bidirectional", True),
    ("tokenizer.joint=off", "tokenizer", "joint", False),
    ("train.betas=[0.8, 0.9]", "train", "betas", [0.8, 0.9]),
    ("train.betas=0.7,0.95", "train", "betas", [0.7, 0.95]),
    ("train.betas=[1e-1, 5e-1]", "train", "betas", [0.1, 0.5]),
    ("data.src_lang=123", "data", "src_lang", "123"),
    ("data.dev=", "data", "dev", ""),
])
def test_override_values_are_coerced_to_the_declared_type(override: str, section: str, key: str,
                                                           expected: object) -> None:
    value = getattr(getattr(load_config(None, [override]), section), key)
    assert value == expected
    assert type(value) is type(expected)


def test_float_written_without_a_dot_in_yaml_is_read_as_a_number(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, "train:\n  lr: 5e-4\n  min_lr: 1E-6\n"))
    assert cfg.train.lr == pytest.approx(5e-4)
    assert cfg.train.min_lr == pytest.approx(1e-6)


def test_unknown_key_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key model\.hiden_size; did you mean model\.hidden_size\?"):
        load_config(None, ["model.hiden_size=64"])


def test_unknown_key_in_yaml_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown config key train\.max_epoch; did you mean train\.max_epochs\?"):
        load_config(_write(tmp_path, "train:\n  max_epoch: 3\n"))


def test_unknown_key_without_a_close_match_lists_the_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key train\.learning_rate; valid keys: .*train\.lr,"):
        load_config(None, ["train.learning_rate=0.1"])


def test_unknown_section_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match=r"unknown config section 'modle'; did you mean model\?"):
        load_config(None, ["modle.hidden_size=64"])


@pytest.mark.parametrize(("override", "message"), [
    ("train.batch_size=big", r"train\.batch_size must be an integer, got 'big'"),
    ("train.batch_size=1.5", r"train\.batch_size must be an integer, got 1\.5"),
    ("train.lr=fast", r"train\.lr must be a number, got 'fast'"),
    ("model.bidirectional=maybe", r"model\.bidirectional must be a boolean \(true/false\), got 'maybe'"),
    ("train.betas=[0.9, x]", r"train\.betas\[1\] must be a number, got 'x'"),
    ("model.attention=luong", r"model\.attention must be one of none, bahdanau, luong_dot, luong_general"),
    ("model.embedding_size=true", r"model\.embedding_size must be an integer, got True"),
])
def test_wrong_type_names_the_key_and_the_type(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_invalid_value_names_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.dropout must be in \[0, 1\) \(got 1\.5\)"):
        load_config(None, ["model.dropout=1.5"])


def test_word_dropout_is_checked_and_reaches_the_model() -> None:
    with pytest.raises(ConfigError, match=r"model\.word_dropout must be in \[0, 1\) \(got 1\.0\)"):
        load_config(None, ["model.word_dropout=1.0"])
    from seq2seq.model.seq2seq import Seq2Seq

    model = Seq2Seq.from_config(load_config("tiny", ["model.word_dropout=0.2"]).model, 50, 50)
    assert model.encoder.embedding_dropout.word_p == 0.2 and model.decoder.embedding_dropout.word_p == 0.2


def test_malformed_override_shows_the_expected_form() -> None:
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(None, ["lr=0.1"])


def test_missing_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found: .*nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(_write(tmp_path, "train: [unclosed\n"))
    with pytest.raises(ConfigError, match="must hold a mapping of sections"):
        load_config(_write(tmp_path, "- a list\n"))


def test_text_format_requires_a_train_prefix() -> None:
    with pytest.raises(ConfigError, match=r"data\.train is required for data\.format=text"):
        load_config(None, ["data.format=text"])


def test_replace_config_validates_again() -> None:
    cfg = replace_config(Config(), "train", lr=0.5)
    assert cfg.train.lr == 0.5
    with pytest.raises(ConfigError, match=r"train\.lr must be positive"):
        replace_config(cfg, "train", lr=0.0)


SHIPPED = sorted(path.name for path in CONFIGS.glob("*.yaml"))


def test_the_shipped_configs_are_found() -> None:
    # Guards the parametrisation below: an empty glob would silently test nothing.
    assert {"quickstart.yaml", "tiny.yaml", "multi30k_de_en.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_load_and_build_a_model_that_runs(name: str) -> None:
    cfg = load_config(CONFIGS / name)
    vocab = cfg.tokenizer.vocab_size  # a joint vocabulary of the configured size, as share_embeddings needs
    model = Seq2Seq.from_config(cfg.model, vocab, vocab).eval()
    src_ids, tgt_in_ids = torch.randint(4, vocab, (2, 5)), torch.randint(4, vocab, (2, 3))
    with torch.no_grad():
        logits = model(src_ids, torch.tensor([5, 2]), tgt_in_ids)
    assert logits.shape == (2, 3, vocab) and torch.isfinite(logits).all()


def test_the_gpu_config_trains_the_reference_model_in_larger_batches() -> None:
    # Same data, tokenizer and model, so its checkpoints and scores compare with the reference's;
    # only how it trains and how many tokens a batch holds differ.
    reference, gpu = (config_to_dict(load_config(CONFIGS / name))
                      for name in ("multi30k_de_en.yaml", "multi30k_de_en_gpu.yaml"))
    for section in ("data", "tokenizer", "model"):
        assert gpu[section] == reference[section], section
    assert gpu["train"]["batch_size"] == 4 * reference["train"]["batch_size"]
    assert gpu["train"]["lr"] > reference["train"]["lr"] and gpu["train"]["warmup_steps"] > 0
    changed = {key for key, value in gpu["decode"].items() if reference["decode"][key] != value}
    assert changed == {"batch_size"}


def test_cli_reports_a_config_error_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["prepare", str(CONFIGS / "tiny.yaml"), "--set", "train.lr=fast"])
    assert status == 2
    assert "train.lr must be a number, got 'fast'" in capsys.readouterr().err


def test_yaml_11_boolean_words_stay_strings_in_files_and_overrides(tmp_path):
    # YAML 1.1 would read `off` and `no` as False: `amp: off` must stay the choice "off",
    # and a language code "no" (Norwegian) must stay a string.
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  amp: off\ndata:\n  src_lang: no\n  tgt_lang: en\n", encoding="utf-8")
    from_file = load_config(path)
    from_override = load_config(None, ["train.amp=off", "data.src_lang=no"])
    assert from_file.train.amp == from_override.train.amp == "off"
    assert from_file.data.src_lang == from_override.data.src_lang == "no"
