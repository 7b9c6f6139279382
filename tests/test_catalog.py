"""Shipped configs by name, `seq2seq config show|list`, `seq2seq export-split` and `--version`."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import seq2seq
from seq2seq.cli import main
from seq2seq.catalog import CONFIG_DIR, describe_config, field_help, find_config, shipped_configs
from seq2seq.config import Config, config_from_dict, config_to_dict, load_config
from seq2seq.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seq2seq", *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_the_clone_configs_folder_is_the_shipped_one():
    # One copy of each config: configs/ in a clone links to the package's folder.
    assert (REPO_ROOT / "configs").resolve() == CONFIG_DIR
    assert set(shipped_configs()) >= {"quickstart", "tiny", "multi30k_de_en"}


def test_a_config_loads_the_same_by_name_by_file_name_and_by_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    by_path = load_config(CONFIG_DIR / "quickstart.yaml")
    assert load_config("quickstart") == load_config("quickstart.yaml") == by_path
    assert by_path.tokenizer.vocab_size == 600  # the file's value, not the default


def test_a_local_file_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text("train: {lr: 0.5}\n", encoding="utf-8")
    assert find_config("quickstart.yaml") == Path("quickstart.yaml")
    assert load_config("quickstart.yaml").train.lr == 0.5


def test_an_unknown_name_lists_the_shipped_configs():
    with pytest.raises(ConfigError, match=r"config file not found: nosuch.*shipped: .*quickstart"):
        load_config("nosuch")


def test_every_key_of_every_section_has_a_help_line():
    for section in dataclasses.fields(Config):
        helps = field_help(section.default_factory().__class__)
        missing = [name for name, text in helps.items() if text == "(undocumented)"]
        assert not missing, f"{section.name}: no comment for {missing}"
    assert field_help(type(Config().model))["attention"].startswith("none | bahdanau | luong_dot | luong_general")
    assert field_help(type(Config().train))["log_every"] == \
        "steps between log lines (the only host synchronisation of the loss)"


def test_config_show_prints_yaml_that_loads_back_to_the_same_config(tmp_path: Path):
    done = run_cli("config", "show", "quickstart", "--set", "train.lr=5e-4", "--set", "decode.beam_size=3")
    assert done.returncode == 0, done.stderr
    shown = tmp_path / "shown.yaml"
    shown.write_text(done.stdout, encoding="utf-8")
    expected = load_config("quickstart", ["train.lr=5e-4", "decode.beam_size=3"])
    assert load_config(shown) == expected
    assert done.stdout == describe_config(expected)
    # Every key is there, with a comment.
    keys = [line for line in done.stdout.splitlines() if line.startswith("  ")]
    assert len(keys) == sum(len(section) for section in config_to_dict(expected).values())
    assert all("  # " in line for line in keys)


def test_config_show_without_a_name_prints_the_defaults():
    done = run_cli("config", "show")
    assert config_from_dict(yaml.safe_load(done.stdout)) == Config()


def test_config_list_names_every_shipped_config_with_its_summary():
    done = run_cli("config", "list")
    assert done.returncode == 0
    names = [line.split()[0] for line in done.stdout.splitlines()]
    assert names == list(shipped_configs())
    assert "Multi30k German -> English" in done.stdout


def test_bad_override_in_config_show_is_an_error_naming_the_key():
    done = run_cli("config", "show", "tiny", "--set", "train.lr=-1")
    assert done.returncode == 2 and "train.lr must be positive" in done.stderr


def test_version_matches_the_package():
    done = run_cli("--version")
    assert done.stdout.strip() == f"seq2seq {seq2seq.__version__}"


def test_export_split_writes_the_aligned_split_and_the_script_is_the_same_command(tmp_path: Path):
    assert main(["export-split", "tiny", "--split", "dev", "--out", str(tmp_path / "cli" / "dev")]) == 0
    script = subprocess.run([sys.executable, str(REPO_ROOT / "scripts" / "export_split.py"), "tiny", "--split",
                             "dev", "--out", str(tmp_path / "script" / "dev")], capture_output=True, text=True)
    assert script.returncode == 0, script.stderr
    src = (tmp_path / "cli" / "dev.lex").read_text(encoding="utf-8").splitlines()
    tgt = (tmp_path / "cli" / "dev.en").read_text(encoding="utf-8").splitlines()
    assert len(src) == len(tgt) == load_config("tiny").data.synthetic_dev_size
    assert (tmp_path / "script" / "dev.en").read_bytes() == (tmp_path / "cli" / "dev.en").read_bytes()


def test_export_split_of_a_missing_split_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture):
    assert main(["export-split", "tiny", "--set", "data.synthetic_test_size=0", "--out", str(tmp_path / "t")]) == 2
    assert "no test split" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_public_api_is_listed_and_documented_with_an_example():
    assert dir(seq2seq) == sorted(seq2seq.__all__)
    for name in ("Translator", "Seq2Seq", "Config", "load_config", "train", "prepare"):
        assert ">>>" in getattr(seq2seq, name).__doc__, name
