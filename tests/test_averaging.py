"""seq2seq average: the mean of checkpoints' weights, refused for checkpoints of different models or tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seq2seq.averaging import average_checkpoints
from seq2seq.checkpoint import load_checkpoint, load_model
from seq2seq.cli import main
from seq2seq.config import TokenizerConfig
from seq2seq.data.tokenizer_training import train_tokenizer
from seq2seq.errors import CheckpointError
from seq2seq.translate import Translator

from tiny_models import SENTENCES, write_random_checkpoint  # tests/tiny_models.py


def test_average_of_two_checkpoints_is_the_mean_of_their_tensors(small_tokenizer, tmp_path: Path) -> None:
    first = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=1)
    second = write_random_checkpoint(tmp_path / "b.pt", small_tokenizer, seed=2)
    averaged = average_checkpoints([first, second])["model"]
    a, b = load_checkpoint(first)["model"], load_checkpoint(second)["model"]
    assert set(averaged) == set(a)
    for name in a:
        assert torch.allclose(averaged[name], (a[name] + b[name]) / 2, atol=1e-7), name
    assert not torch.equal(a["decoder.output.weight"], b["decoder.output.weight"])


def test_average_command_writes_a_normal_checkpoint(small_tokenizer, tmp_path: Path, capsys) -> None:
    paths = [write_random_checkpoint(tmp_path / f"m{seed}.pt", small_tokenizer, seed=seed) for seed in (1, 2, 3)]
    out = tmp_path / "avg.pt"
    assert main(["-q", "average", "-o", str(out), *map(str, paths)]) == 0
    loaded = load_model(out)
    weights = [load_checkpoint(p)["model"]["encoder.embedding.weight"] for p in paths]
    assert torch.allclose(loaded.model.state_dict()["encoder.embedding.weight"], sum(weights) / 3, atol=1e-6)
    assert len(Translator.from_checkpoint(out).translate(SENTENCES, beam_size=2)) == len(SENTENCES)


def test_average_last_n_takes_the_latest_kept_checkpoints_of_a_run(small_tokenizer, tmp_path: Path) -> None:
    kept = tmp_path / "run" / "checkpoints"
    kept.mkdir(parents=True)
    for step, seed in ((10, 1), (20, 2), (30, 3)):
        write_random_checkpoint(kept / f"step-{step:08d}.pt", small_tokenizer, seed=seed)
    out = tmp_path / "avg.pt"
    assert main(["-q", "average", "-o", str(out), "--last", "2", str(tmp_path / "run")]) == 0
    expected = average_checkpoints([kept / "step-00000020.pt", kept / "step-00000030.pt"])["model"]
    assert all(torch.equal(load_checkpoint(out)["model"][name], value) for name, value in expected.items())
    assert main(["-q", "average", "-o", str(out), "--last", "4", str(tmp_path / "run")]) == 2


def test_average_refuses_another_model_shape_naming_the_key_and_both_values(small_tokenizer, tmp_path: Path) -> None:
    first = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=1)
    other = write_random_checkpoint(tmp_path / "b.pt", small_tokenizer, seed=2, hidden_size=8, decoder_hidden_size=16)
    with pytest.raises(CheckpointError, match=r"model\.hidden_size \(16 in .*a\.pt, 8 in .*b\.pt\)"):
        average_checkpoints([first, other])


def test_average_refuses_another_tokenizer(small_tokenizer, small_pairs, tmp_path: Path) -> None:
    src, tgt = zip(*small_pairs)
    other_tokenizer = train_tokenizer(list(src), list(tgt), TokenizerConfig(vocab_size=small_tokenizer.src_vocab_size,
                                                                            type="unigram"))
    first = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=1)
    other = write_random_checkpoint(tmp_path / "b.pt", other_tokenizer, seed=1)
    with pytest.raises(CheckpointError, match="tokenizer differs"):
        average_checkpoints([first, other])
