"""Forced decoding (seq2seq logprob, Translator.score_pairs): the log-probability of given translations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from seq2seq.cli import main
from seq2seq.data.batches import EncodedCorpus
from seq2seq.training.loss import Objective
from seq2seq.translate import Translator

from tiny_models import SENTENCES, write_random_checkpoint  # tests/tiny_models.py

TARGETS = ["a dog runs in the park .", "two children play .", "the woman smiles .", ""]


@pytest.fixture(params=["bahdanau", "luong_general"])
def translator(request, small_tokenizer, tmp_path: Path) -> Translator:
    path = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=4, attention=request.param,
                                   input_feeding=request.param == "luong_general")
    return Translator.from_checkpoint(path)


def test_forced_decoding_scores_equal_the_teacher_forced_training_loss(translator: Translator) -> None:
    scores = translator.score_pairs(SENTENCES, TARGETS, batch_size=40)
    tokenizer = translator.tokenizer
    objective = Objective(translator.model, label_smoothing=0.0, teacher_forcing=1.0).eval()
    corpus = EncodedCorpus.from_ids(tokenizer.encode_src_batch(SENTENCES), tokenizer.encode_tgt_batch(TARGETS))
    with torch.no_grad():
        for index, score in enumerate(scores):
            batch = corpus.collate([index])
            loss, nll = objective(batch.src_ids, batch.src_lengths, batch.tgt_in_ids, batch.tgt_out_ids)
            assert loss == nll  # no label smoothing
            assert score.log_prob == pytest.approx(-nll.item(), rel=1e-5)
            assert score.num_tokens == batch.num_tgt_tokens
            assert score.mean_log_prob == pytest.approx(-nll.item() / batch.num_tgt_tokens, rel=1e-5)
            assert sum(score.token_log_probs) == pytest.approx(score.log_prob)
        whole = corpus.collate(list(range(len(SENTENCES))))
        total_nll = objective(whole.src_ids, whole.src_lengths, whole.tgt_in_ids, whole.tgt_out_ids)[1].item()
    assert sum(s.log_prob for s in scores) == pytest.approx(-total_nll, rel=1e-5)
    assert scores[3].num_tokens == 1  # an empty target: EOS alone


def test_logprob_command_prints_sum_mean_and_tokens(small_tokenizer, tmp_path: Path, capsys) -> None:
    checkpoint = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=4)
    src, tgt = tmp_path / "src.txt", tmp_path / "tgt.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    tgt.write_text("\n".join(TARGETS) + "\n", encoding="utf-8")
    expected = Translator.from_checkpoint(checkpoint).score_pairs(SENTENCES, TARGETS)
    assert main(["-q", "logprob", "-c", str(checkpoint), "--src", str(src), "--tgt", str(tgt), "--tokens"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SENTENCES)
    total, mean, tokens = lines[0].split("\t")
    assert float(total) == pytest.approx(expected[0].log_prob, abs=1e-4)
    assert float(mean) == pytest.approx(expected[0].mean_log_prob, abs=1e-4)
    assert tokens.split()[-1].startswith("</s>=")
    assert main(["-q", "logprob", "-c", str(checkpoint), "--src", str(src), "--tgt", str(tgt), "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["num_tokens"] for row in rows] == [s.num_tokens for s in expected]
    short = tmp_path / "short.txt"
    short.write_text("one line\n", encoding="utf-8")
    assert main(["-q", "logprob", "-c", str(checkpoint), "--src", str(src), "--tgt", str(short)]) == 2
    assert "short.txt" in capsys.readouterr().err
