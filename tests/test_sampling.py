"""Sampling: top-k 1 is greedy search, a seed fixes the samples, top-k / top-p truncate the distribution."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch

from seq2seq.cli import main
from seq2seq.config import DecodeConfig
from seq2seq.data.batches import pad_ids
from seq2seq.errors import ConfigError
from seq2seq.search import greedy_search, sample_search
from seq2seq.search.sampling import draw
from seq2seq.translate import Translator

from tiny_models import SENTENCES, write_random_checkpoint  # tests/tiny_models.py


@pytest.fixture
def translator(small_tokenizer, tmp_path: Path) -> Translator:
    return Translator.from_checkpoint(write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=3))


def sampled(translator: Translator, **options) -> list[list[list[int]]]:
    decode = dataclasses.replace(translator.config.decode, sampling=True, **options)
    return [[t.tgt_ids for t in line.nbest] for line in translator.translate_lines(enumerate(SENTENCES, 1), decode)]


def test_sampling_with_top_k_1_is_greedy_search(translator: Translator) -> None:
    src_ids, src_lengths = pad_ids(translator.tokenizer.encode_src_batch(SENTENCES))
    options = dataclasses.replace(translator.config.decode, sampling=True, top_k=1, nbest=2, temperature=3.0)
    with torch.no_grad():
        greedy = greedy_search(translator.model, src_ids, src_lengths, options)
        samples = sample_search(translator.model, src_ids, src_lengths, options, torch.Generator().manual_seed(5))
    for best, drawn in zip(greedy, samples):
        assert [h.tgt_ids for h in drawn] == [best.tgt_ids, best.tgt_ids]
        assert drawn[0].log_prob == pytest.approx(best.log_prob, abs=1e-5)
        assert drawn[0].score == pytest.approx(best.score, abs=1e-5)


def test_a_fixed_seed_gives_the_same_samples_and_another_seed_others(translator: Translator) -> None:
    first = sampled(translator, nbest=3, seed=7)
    assert first == sampled(translator, nbest=3, seed=7)
    assert first != sampled(translator, nbest=3, seed=8)
    assert all(len(samples) == 3 for samples in first)
    assert any(len({tuple(s) for s in samples}) > 1 for samples in first)  # samples of a sentence differ


def test_top_k_and_top_p_keep_only_the_most_probable_tokens() -> None:
    log_probs = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).expand(2000, 4)
    generator = torch.Generator().manual_seed(0)
    top_k = draw(log_probs, DecodeConfig(sampling=True, top_k=2), generator)
    assert set(top_k.tolist()) == {0, 1}
    top_p = draw(log_probs, DecodeConfig(sampling=True, top_p=0.9), generator)  # 0.5 + 0.3 < 0.9: three tokens
    assert set(top_p.tolist()) == {0, 1, 2}
    everything = draw(log_probs, DecodeConfig(sampling=True), generator)
    assert set(everything.tolist()) == {0, 1, 2, 3}
    assert abs((everything == 0).float().mean().item() - 0.5) < 0.05


def test_sampling_options_are_checked_with_the_key_named() -> None:
    with pytest.raises(ConfigError, match="decode.top_p"):
        DecodeConfig(sampling=True, top_p=0.0)
    with pytest.raises(ConfigError, match="decode.temperature"):
        DecodeConfig(sampling=True, temperature=0.0)
    assert DecodeConfig(sampling=True, beam_size=1, nbest=4).nbest == 4  # samples are not bounded by the beam


def test_translate_sampling_flags_give_n_samples_per_line(small_tokenizer, tmp_path: Path) -> None:
    checkpoint = write_random_checkpoint(tmp_path / "a.pt", small_tokenizer, seed=3)
    src = tmp_path / "src.txt"
    src.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    outputs = []
    for name in ("one.txt", "two.txt"):
        assert main(["-q", "translate", "-c", str(checkpoint), "-i", str(src), "-o", str(tmp_path / name),
                     "--sampling", "--nbest", "3", "--top-p", "0.95", "--temperature", "0.8", "--seed", "11"]) == 0
        outputs.append((tmp_path / name).read_text(encoding="utf-8"))
    assert outputs[0] == outputs[1]
    # Untrained models emit byte pieces, newlines among them: count the score<TAB> line starts instead.
    assert len(re.findall(r"^-?\d+\.\d{4}\t", outputs[0], flags=re.M)) == 3 * len(SENTENCES)
