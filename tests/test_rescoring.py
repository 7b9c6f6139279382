"""Right-to-left models (tokenizer.target_order) and reranking n-best lists with them (seq2seq.rescoring)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import pytest

from seq2seq.cli import main
from seq2seq.config import config_from_dict
from seq2seq.data import prepare
from seq2seq.data.tokenizer import Tokenizer
from seq2seq.errors import CheckpointError, ConfigError
from seq2seq.rescoring import Rescorer
from seq2seq.search import length_penalty
from seq2seq.translate import Translator, translate_and_rerank

from tiny_models import SENTENCES, write_random_checkpoint  # tests/tiny_models.py


@pytest.fixture(scope="module")
def r2l_tokenizer(small_tokenizer: Tokenizer) -> Tokenizer:
    return small_tokenizer.in_order(right_to_left=True)


def test_a_right_to_left_tokenizer_reverses_the_target_pieces_and_decodes_them_back(
        small_tokenizer: Tokenizer, r2l_tokenizer: Tokenizer, small_pairs: list[tuple[str, str]]) -> None:
    sources, targets = zip(*small_pairs)
    for source, target in small_pairs:
        forward = small_tokenizer.encode_tgt(target)
        assert r2l_tokenizer.encode_tgt(target) == forward[::-1]
        assert r2l_tokenizer.decode_tgt(r2l_tokenizer.encode_tgt(target)) == small_tokenizer.decode_tgt(forward)
        assert r2l_tokenizer.encode_src(source) == small_tokenizer.encode_src(source)  # sources keep their order
    batch = r2l_tokenizer.encode_tgt_batch(list(targets))
    assert batch == [r2l_tokenizer.encode_tgt(t) for t in targets]
    assert r2l_tokenizer.decode_tgt_batch(batch) == [small_tokenizer.decode_tgt(small_tokenizer.encode_tgt(t))
                                                     for t in targets]
    sampled = r2l_tokenizer.sample_tgt(targets[0], alpha=0.5, nbest=-1)
    assert r2l_tokenizer.decode_tgt(sampled) == small_tokenizer.decode_tgt(small_tokenizer.encode_tgt(targets[0]))


def test_the_target_order_is_part_of_the_fingerprint_and_of_the_saved_state(
        small_tokenizer: Tokenizer, r2l_tokenizer: Tokenizer, tmp_path: Path) -> None:
    assert r2l_tokenizer.fingerprint() != small_tokenizer.fingerprint()
    assert small_tokenizer.in_order(False) is small_tokenizer
    assert "right_to_left" not in small_tokenizer.to_state()  # left-to-right checkpoints are written as before
    restored = Tokenizer.from_state(r2l_tokenizer.to_state())
    assert restored.right_to_left and restored.fingerprint() == r2l_tokenizer.fingerprint()
    r2l_tokenizer.save(tmp_path / "tok")
    assert Tokenizer.load(tmp_path / "tok").target_order == "right_to_left"
    with pytest.raises(CheckpointError, match="right_to_left"):
        Tokenizer.from_state({**r2l_tokenizer.to_state(), "right_to_left": "yes"})


def test_prepare_encodes_the_targets_right_to_left_in_a_cache_entry_of_their_own(tiny_config, tiny_data) -> None:
    reversed_cfg = dataclasses.replace(
        tiny_config, tokenizer=dataclasses.replace(tiny_config.tokenizer, target_order="right_to_left"))
    data = prepare(reversed_cfg, verbose=False)
    assert data.tokenizer.right_to_left and not tiny_data.tokenizer.right_to_left
    assert data.cache_dir != tiny_data.cache_dir
    for index in range(5):
        assert list(data.train.tgt_ids[index]) == list(tiny_data.train.tgt_ids[index])[::-1]
        assert list(data.train.src_ids[index]) == list(tiny_data.train.src_ids[index])
    assert prepare(tiny_config, verbose=False).cache_dir == tiny_data.cache_dir  # the other entry is untouched


def test_fine_tuning_a_model_in_the_other_order_is_refused_naming_the_key(tiny_config, tiny_data) -> None:
    with pytest.raises(ConfigError, match="tokenizer.target_order=right_to_left"):
        prepare(tiny_config, verbose=False, tokenizer=tiny_data.tokenizer.in_order(True))


def test_an_ensemble_refuses_to_mix_target_orders(small_tokenizer, r2l_tokenizer, tmp_path: Path) -> None:
    forward = write_random_checkpoint(tmp_path / "l2r.pt", small_tokenizer, seed=1)
    backward = write_random_checkpoint(tmp_path / "r2l.pt", r2l_tokenizer, seed=2)
    with pytest.raises(CheckpointError, match="target_order.*--rescore"):
        Translator.from_checkpoints([forward, backward])


def test_a_right_to_left_model_translates_into_ordinary_text(small_tokenizer, r2l_tokenizer, tmp_path: Path) -> None:
    translator = Translator.from_checkpoint(write_random_checkpoint(tmp_path / "r2l.pt", r2l_tokenizer, seed=2))
    options = dataclasses.replace(translator.config.decode, beam_size=3, nbest=3)
    for line in translator.translate_lines(enumerate(SENTENCES, 1), options):
        for translation in line.nbest:
            assert translation.text == small_tokenizer.decode_tgt(translation.tgt_ids[::-1])


@pytest.fixture
def three_models(small_tokenizer, r2l_tokenizer, tmp_path: Path) -> tuple[Path, Path, Path]:
    """A left-to-right model, another one, and a right-to-left one, all of one SentencePiece model."""
    return (write_random_checkpoint(tmp_path / "main.pt", small_tokenizer, seed=1),
            write_random_checkpoint(tmp_path / "other.pt", small_tokenizer, seed=3),
            write_random_checkpoint(tmp_path / "r2l.pt", r2l_tokenizer, seed=2))


def _beam(translator: Translator) -> list:
    options = dataclasses.replace(translator.config.decode, beam_size=3, nbest=3)
    return list(translator.translate_lines(enumerate(SENTENCES, 1), options))


@pytest.mark.parametrize("weight", [0.3, 1.0])
def test_reranking_orders_the_beam_by_the_weighted_log_probabilities(three_models, weight: float) -> None:
    main_model, backward = Translator.from_checkpoint(three_models[0]), Translator.from_checkpoint(three_models[2])
    options = dataclasses.replace(main_model.config.decode, beam_size=3, nbest=3)
    beams = _beam(main_model)
    reranked = list(Rescorer(backward, weight).rerank(beams, options))
    changed = 0
    for line, after in zip(beams, reranked):
        scores = backward.score_pairs([line.src_text] * len(line.nbest), [t.text for t in line.nbest])
        expected = [((1 - weight) * t.log_prob + weight * s.log_prob) / length_penalty(len(t.tgt_ids) + 1,
                                                                                       options.length_penalty)
                    for t, s in zip(line.nbest, scores)]
        order = sorted(range(len(expected)), key=lambda i: -expected[i])
        assert [t.text for t in after.nbest] == [line.nbest[i].text for i in order]
        assert [t.score for t in after.nbest] == pytest.approx(sorted(expected, reverse=True), abs=1e-4)
        changed += order[0] != 0
    if weight == 1.0:  # with the rescorer alone deciding, a random one must disagree somewhere
        assert changed > 0, "the random right-to-left model agreed with the main one everywhere: a weak test"


def test_rescoring_refuses_what_it_cannot_do(three_models) -> None:
    translator = Translator.from_checkpoint(three_models[0])
    with pytest.raises(ConfigError, match="rescore-weight"):
        Rescorer(translator, weight=0.0)
    rescorer = Rescorer(translator, weight=0.5)
    with pytest.raises(ConfigError, match="--beam-size 2"):
        rescorer.search_options(dataclasses.replace(translator.config.decode, beam_size=1, nbest=1))
    with pytest.raises(ConfigError, match="--nbest 2"):
        rescorer.search_options(dataclasses.replace(translator.config.decode, sampling=True, nbest=1))
    assert rescorer.search_options(dataclasses.replace(translator.config.decode, beam_size=4, nbest=1)).nbest == 4


def test_an_empty_line_passes_through_reranking(three_models) -> None:
    translator = Translator.from_checkpoint(three_models[0])
    rescorer = Rescorer(Translator.from_checkpoint(three_models[2]), weight=0.5)
    lines = list(translate_and_rerank(translator, rescorer, enumerate(["", SENTENCES[0]], 1),
                                      translator.config.decode))
    assert lines[0].best == "" and lines[1].best


def test_translate_and_evaluate_rerank_with_rescore(three_models, tmp_path: Path, capsys, caplog) -> None:
    source, reference = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    reference.write_text("\n".join(SENTENCES) + "\n", encoding="utf-8")
    main_path, _, backward_path = map(str, three_models)
    output = tmp_path / "out.txt"
    main(["translate", "-c", main_path, "--rescore", backward_path, "--rescore-weight", "1", "--beam-size", "3",
          "--device", "cpu", "-i", str(source), "-o", str(output)])
    main_model, backward = Translator.from_checkpoint(main_path), Translator.from_checkpoint(backward_path)
    expected = [line.best for line in Rescorer(backward, 1.0).rerank(
        _beam(main_model), dataclasses.replace(main_model.config.decode, beam_size=3))]
    assert output.read_text(encoding="utf-8").splitlines() == expected
    capsys.readouterr()
    with caplog.at_level(logging.INFO, logger="seq2seq.evaluate"):
        main(["evaluate", "-c", main_path, "--rescore", backward_path, "--rescore", backward_path, "--beam-size", "3",
              "--device", "cpu", "--src", str(source), "--ref", str(reference), "--json"])
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["rescore"] == f"{backward_path}, {backward_path}" and report["rescore_weight"] == 0.5
    assert f"translated {len(SENTENCES)} sentences and reranked with 2 model(s) in" in caplog.text
    assert main(["evaluate", "-c", main_path, "--rescore", backward_path, "--beam-size", "1", "--device", "cpu",
                 "--src", str(source), "--ref", str(reference)]) == 2
    assert "--beam-size 2" in capsys.readouterr().err


def test_the_target_order_is_a_checked_config_key() -> None:
    assert config_from_dict({"tokenizer": {"target_order": "right_to_left"}}).tokenizer.target_order == "right_to_left"
    with pytest.raises(ConfigError, match="tokenizer.target_order"):
        config_from_dict({"tokenizer": {"target_order": "backwards"}})
