"""Model folders: `seq2seq export` -> `Translator.from_pretrained` / `translate -m`, the hub cache, the upload."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq import Translator
from seq2seq.cli import main
from seq2seq.checkpoint import build_checkpoint, save_checkpoint
from seq2seq.config import TokenizerConfig, config_from_dict
from seq2seq.data.tokenizer_training import train_tokenizer
from seq2seq.errors import CheckpointError, Seq2SeqError
from seq2seq.hub import export_model, push_to_hub, read_scores
from seq2seq.model.seq2seq import Seq2Seq

SENTENCES = ["ein Hund läuft im Park .", "", "die Frau lächelt .", "zwei Kinder spielen im Garten mit dem Hund ."]


def _checkpoint(path: Path, tokenizer: Any, **model: Any) -> Path:
    """A random tiny model saved as a checkpoint, with a train.log beside it as `seq2seq train` writes one."""
    cfg = config_from_dict({
        "tokenizer": {"joint": tokenizer.joint},
        "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 2, "decoder_hidden_size": 12,
                  "dropout": 0.0, **model},
        "decode": {"beam_size": 3, "max_length_a": 0.5, "max_length_b": 4},
    })
    torch.manual_seed(3)
    net = Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(build_checkpoint(cfg, net.state_dict(), tokenizer.to_state()), path)
    (path.parent / "train.log").write_text(
        "2026-01-01 10:00:00 command: seq2seq train tiny --set train.lr=1e-3\n"
        "2026-01-01 10:01:00 validation at step 10 | dev nll 4.0 | ppl = exp(nll) 54.6 | BLEU 12.50 | chrF 30.00\n"
        "2026-01-01 10:02:00 validation at step 20 | dev nll 3.0 | ppl = exp(nll) 20.1 | BLEU 17.25 | chrF 35.00\n"
        "2026-01-01 10:03:00 validation at step 30 | dev nll 3.1 | ppl = exp(nll) 22.2 | BLEU 16.00 | chrF 34.00\n",
        encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def separate_tokenizer(small_pairs):
    src, tgt = zip(*small_pairs)
    return train_tokenizer(list(src), list(tgt), TokenizerConfig(type="bpe", vocab_size=300, joint=False))


@pytest.mark.parametrize("kind", ["joint, tied and shared embeddings", "separate vocabularies, Luong"])
def test_exported_folder_translates_exactly_as_the_checkpoint(kind: str, tmp_path: Path, small_tokenizer,
                                                               separate_tokenizer):
    if kind.startswith("joint"):
        ckpt = _checkpoint(tmp_path / "run" / "best.pt", small_tokenizer, tied_embeddings=True,
                           share_embeddings=True)
    else:
        ckpt = _checkpoint(tmp_path / "run" / "best.pt", separate_tokenizer, attention="luong_general")
    folder = export_model(ckpt, tmp_path / "model")
    names = {p.name for p in folder.iterdir()}
    assert {"model.safetensors", "config.yaml", "src.model", "tokenizer.json", "README.md"} <= names
    assert ("tgt.model" in names) == kind.startswith("separate")
    original = Translator.from_checkpoint(ckpt)
    loaded = Translator.from_pretrained(folder)
    assert loaded.config == original.config
    for name, tensor in original.model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name
    for beam_size in (1, 3):
        assert loaded.translate(SENTENCES, beam_size=beam_size) == original.translate(SENTENCES, beam_size=beam_size)


def test_loading_a_model_folder_unpickles_nothing(tmp_path: Path, small_tokenizer, monkeypatch: pytest.MonkeyPatch):
    folder = export_model(_checkpoint(tmp_path / "run" / "best.pt", small_tokenizer), tmp_path / "model")

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a model folder must load without unpickling")

    for module, name in ((torch, "load"), (pickle, "load"), (pickle, "loads"), (pickle, "Unpickler")):
        monkeypatch.setattr(module, name, refuse)
    assert Translator.from_pretrained(folder).translate(SENTENCES[:1])


def test_the_model_card_says_how_the_model_was_made(tmp_path: Path, small_tokenizer):
    scores = tmp_path / "scores.json"
    scores.write_text('{"bleu": 21.5, "chrf": 40.25, "ter": 60.0, "src": "test.de", "bleu_signature": "nrefs:1", '
                      '"decode": {"beam_size": 5}}\n', encoding="utf-8")
    folder = export_model(_checkpoint(tmp_path / "run" / "best.pt", small_tokenizer), tmp_path / "model",
                          scores=read_scores([str(scores)]))
    card = (folder / "README.md").read_text(encoding="utf-8")
    assert card.startswith("---\nlibrary_name: seq2seq\n")
    assert "seq2seq train tiny --set train.lr=1e-3" in card  # the command from train.log
    assert "Best dev BLEU during training (greedy): 17.25, at step 20." in card
    assert "| test.de | 5 | 21.50 | 40.25 | 60.00 |" in card
    assert "built-in synthetic task" in card


def test_export_refuses_a_non_empty_folder_and_leaves_it_untouched(tmp_path: Path, small_tokenizer):
    ckpt = _checkpoint(tmp_path / "run" / "best.pt", small_tokenizer)
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "notes.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(Seq2SeqError, match="not empty"):
        export_model(ckpt, tmp_path / "model")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["notes.txt"]
    export_model(ckpt, tmp_path / "model", overwrite=True)
    assert not (tmp_path / "model" / "notes.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "run"]  # no staging folder left behind


def test_a_folder_that_is_not_a_model_folder_is_a_clear_error(tmp_path: Path):
    (tmp_path / "config.yaml").write_text("model: {}\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match="model.safetensors is missing"):
        Translator.from_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="neither a model folder nor a hub id"):
        Translator.from_pretrained(tmp_path / "no" / "such" / "folder")


def test_a_hub_id_loads_from_the_hub_cache_offline(tmp_path: Path, small_tokenizer):
    # The layout huggingface_hub keeps downloads in: models--USER--NAME/{refs/main, snapshots/COMMIT/...}.
    ckpt = _checkpoint(tmp_path / "run" / "best.pt", small_tokenizer)
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hub" / "models--someone--tiny-gru"
    export_model(ckpt, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    loaded = Translator.from_pretrained("someone/tiny-gru", cache_dir=tmp_path / "hub")
    assert loaded.translate(SENTENCES) == Translator.from_checkpoint(ckpt).translate(SENTENCES)
    with pytest.raises(CheckpointError, match="could not be fetched from the Hugging Face Hub"):
        Translator.from_pretrained("someone/not-cached", cache_dir=tmp_path / "hub")


def test_push_to_hub_creates_the_repository_and_uploads_the_folder(tmp_path: Path, small_tokenizer,
                                                                     monkeypatch: pytest.MonkeyPatch):
    import huggingface_hub

    calls: list[tuple[str, dict[str, Any]]] = []

    class RecordingApi:
        """Stands in for HfApi: records the two calls instead of talking to the network."""

        def create_repo(self, **kwargs: Any) -> None:
            calls.append(("create_repo", kwargs))

        def upload_folder(self, **kwargs: Any) -> str:
            calls.append(("upload_folder", kwargs))
            return "https://huggingface.co/someone/tiny-gru/commit/abc"

    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    folder = export_model(_checkpoint(tmp_path / "run" / "best.pt", small_tokenizer), tmp_path / "model")
    assert push_to_hub(folder, "someone/tiny-gru", private=True).endswith("/commit/abc")
    assert [name for name, _ in calls] == ["create_repo", "upload_folder"]
    assert calls[0][1]["repo_id"] == "someone/tiny-gru" and calls[0][1]["private"] is True
    assert calls[0][1]["exist_ok"] is True
    assert Path(calls[1][1]["folder_path"]) == folder and calls[1][1]["repo_id"] == "someone/tiny-gru"


def test_export_and_translate_m_on_the_command_line(tmp_path: Path, small_tokenizer):
    ckpt = _checkpoint(tmp_path / "run" / "best.pt", small_tokenizer)
    text = "\n".join(SENTENCES) + "\n"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "seq2seq", *args], input=text, capture_output=True,
                              text=True, timeout=120)

    assert main(["export", str(ckpt), str(tmp_path / "model")]) == 0
    by_folder = run("translate", "-m", str(tmp_path / "model"))
    assert by_folder.returncode == 0, by_folder.stderr
    assert by_folder.stdout.splitlines() == Translator.from_checkpoint(ckpt).translate(SENTENCES)
    both = run("translate", "-m", str(tmp_path / "model"), "-c", str(ckpt))
    assert both.returncode == 2 and "not allowed with" in both.stderr
