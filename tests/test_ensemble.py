"""Ensemble decoding: the mean of the members' log-probabilities at each step, in greedy and beam search."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from seq2seq.cli import main
from seq2seq.config import TokenizerConfig
from seq2seq.data.batches import pad_ids
from seq2seq.data.tokenizer_training import train_tokenizer
from seq2seq.ensemble import Ensemble
from seq2seq.errors import CheckpointError
from seq2seq.ids import BOS_ID, EOS_ID, PAD_ID
from seq2seq.search import greedy_search
from seq2seq.translate import Translator

from tiny_models import SENTENCES, write_random_checkpoint  # tests/tiny_models.py


@pytest.fixture
def two_models(small_tokenizer, tmp_path: Path) -> tuple[Path, Path]:
    """Two different models of one tokenizer: Bahdanau attention, and no attention at all."""
    return (write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=1),
            write_random_checkpoint(tmp_path / "b.pt", small_tokenizer, seed=2, attention="none"))


@pytest.mark.parametrize("beam_size", [1, 3])
def test_an_ensemble_of_a_model_with_itself_translates_exactly_like_the_model(two_models, beam_size: int) -> None:
    single = Translator.from_checkpoint(two_models[0])
    doubled = Translator.from_checkpoints([two_models[0], two_models[0]])
    assert isinstance(doubled.model, Ensemble)
    options = dataclasses.replace(single.config.decode, beam_size=beam_size, nbest=beam_size)
    alone = list(single.translate_lines(enumerate(SENTENCES, 1), options, return_attention=True))
    together = list(doubled.translate_lines(enumerate(SENTENCES, 1), options, return_attention=True))
    for line, ensembled in zip(alone, together):
        assert [t.tgt_ids for t in line.nbest] == [t.tgt_ids for t in ensembled.nbest]
        assert [t.score for t in line.nbest] == [t.score for t in ensembled.nbest]
        assert torch.equal(line.nbest[0].attention, ensembled.nbest[0].attention)


def test_an_ensemble_of_two_models_takes_the_argmax_of_their_mean_log_probabilities(two_models) -> None:
    first, second = (Translator.from_checkpoint(path).model for path in two_models)
    src_ids, src_lengths = pad_ids(Translator.from_checkpoint(two_models[0]).tokenizer.encode_src_batch(SENTENCES))
    options = dataclasses.replace(Translator.from_checkpoint(two_models[0]).config.decode, beam_size=1)
    with torch.no_grad():
        hypotheses = greedy_search(Ensemble([first, second]), src_ids, src_lengths, options)
    disagreements = 0
    for row, hypothesis in enumerate(hypotheses):
        output = [*hypothesis.tgt_ids, EOS_ID]
        # Direct computation: teacher-force each model on the ensemble's own output, average, take the argmax.
        tgt_in = torch.tensor([[BOS_ID, *output[:-1]]])
        src = src_ids[row:row + 1, :int(src_lengths[row])]
        with torch.no_grad():
            log_probs = [torch.log_softmax(model(src, src_lengths[row:row + 1], tgt_in)[0], dim=-1)
                         for model in (first, second)]
        mean = (log_probs[0] + log_probs[1]) / 2
        mean[:, [PAD_ID, BOS_ID]] = float("-inf")  # what search never emits
        limit_reached = len(output) - 1 == int(options.max_length_a * int(src_lengths[row]) + options.max_length_b)
        expected = mean.argmax(dim=-1).tolist()
        assert expected[:-1] == output[:-1]
        assert limit_reached or expected[-1] == EOS_ID
        assert hypothesis.log_prob == pytest.approx(float(mean.gather(1, torch.tensor([output]).T).sum()), abs=1e-4)
        first_alone = log_probs[0].clone()
        first_alone[:, [PAD_ID, BOS_ID]] = float("-inf")
        disagreements += int((first_alone.argmax(dim=-1) != mean.argmax(dim=-1)).sum())
    assert disagreements > 0  # the second model did change choices: the test tells mean from first-only


def test_beam_search_over_an_ensemble_returns_finished_hypotheses_best_first(two_models) -> None:
    ensemble = Translator.from_checkpoints(list(two_models))
    options = dataclasses.replace(ensemble.config.decode, beam_size=3, nbest=3)
    for line in ensemble.translate_lines(enumerate(SENTENCES, 1), options):
        scores = [t.score for t in line.nbest]
        assert scores == sorted(scores, reverse=True) and len(scores) == 3


def test_an_ensemble_refuses_models_of_another_tokenizer_naming_the_files(small_tokenizer, small_pairs,
                                                                           tmp_path: Path, capsys) -> None:
    src, tgt = zip(*small_pairs)
    other = train_tokenizer(list(src), list(tgt), TokenizerConfig(vocab_size=300, type="unigram"))
    a = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=1)
    b = write_random_checkpoint(tmp_path / "b.pt", other, seed=1)
    with pytest.raises(CheckpointError, match=r"a\.pt and .*b\.pt: the tokenizer differs"):
        Translator.from_checkpoints([a, b])
    assert main(["translate", "-c", str(a), "-c", str(b), "-i", str(tmp_path / "x")]) == 2


def test_translate_and_evaluate_take_repeated_checkpoints(two_models, tmp_path: Path, capsys) -> None:
    src = tmp_path / "src.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    out = tmp_path / "out.txt"
    args = ["-c", str(two_models[0]), "-c", str(two_models[1]), "--beam-size", "2", "--device", "cpu"]
    assert main(["-q", "translate", *args, "-i", str(src), "-o", str(out)]) == 0
    expected = Translator.from_checkpoints(list(two_models)).translate(SENTENCES, beam_size=2)
    assert out.read_text(encoding="utf-8").splitlines() == expected
    assert main(["-q", "evaluate", *args, "--src", str(src), "--ref", str(src), "--json"]) == 0
    assert str(two_models[1]) in capsys.readouterr().out
