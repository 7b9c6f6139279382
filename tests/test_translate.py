"""The Translator API and the streaming helpers of ``seq2seq translate``, on a tiny random checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from seq2seq import Translator
from seq2seq.errors import ConfigError, Seq2SeqError
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.data.batches import length_sorted_batches
from seq2seq.writing import atomic_output
from seq2seq.translate import TranslatedLine, Translation, format_translation


@pytest.fixture(scope="module")
def translator(tiny_checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(tiny_checkpoint, device="cpu")


SENTENCES = ["ein Hund läuft im Park .", "", "die Frau lächelt .", "zwei Kinder spielen im Garten mit dem Hund ."]


def test_translator_returns_one_string_per_sentence_and_exposes_the_model(translator: Translator):
    outputs = translator.translate(SENTENCES, beam_size=2)
    assert len(outputs) == len(SENTENCES) and all(isinstance(text, str) for text in outputs)
    assert outputs[1] == ""
    assert isinstance(translator.model, Seq2Seq) and not translator.model.training
    assert translator.tokenizer.tgt_vocab_size == translator.model.tgt_vocab_size
    assert translator.config.data.max_length == 40  # the checkpoint's data section (conftest.TINY_CHECKPOINT)


def test_translation_is_independent_of_batch_and_chunk(translator: Translator):
    together = translator.translate(SENTENCES, beam_size=3)
    alone = [translator.translate([sentence], beam_size=3)[0] for sentence in SENTENCES]
    assert together == alone
    options = translator.decode_options({"beam_size": 3, "batch_size": 1})  # one sentence per batch
    chunked = translator.translate_lines(enumerate(SENTENCES * 2, start=1), options, chunk_lines=3)
    assert [line.best for line in chunked] == together * 2


def test_translation_text_is_the_decoded_best_hypothesis(translator: Translator):
    options = translator.decode_options({"beam_size": 3, "nbest": 3})
    [line] = translator.translate_lines([(1, SENTENCES[0])], options)
    assert len(line.nbest) == 3
    assert [t.score for t in line.nbest] == sorted((t.score for t in line.nbest), reverse=True)
    assert line.best == translator.tokenizer.decode_tgt(line.nbest[0].tgt_ids)
    assert len(line.nbest[0].tgt_ids) <= int(0.25 * len(line.src_ids) + 4)  # decode.max_length_a/b of the checkpoint


def test_an_over_long_line_is_truncated_with_a_warning_naming_it(translator: Translator, caplog):
    long_line = " ".join(["ein Hund läuft im Park ."] * 6)
    max_length = translator.config.data.max_length
    assert len(translator.tokenizer.encode_src(long_line)) > max_length
    with caplog.at_level(logging.WARNING, logger="seq2seq.translate"):
        lines = list(translator.translate_lines([(1, "die Frau lächelt ."), (2, long_line)], name="input.txt"))
    assert len(lines[1].src_ids) == max_length
    assert "input.txt, line 2" in caplog.text and "line 1" not in caplog.text


def test_decode_options_apply_overrides_and_reject_bad_ones(translator: Translator):
    assert translator.decode_options({}).beam_size == 2  # the checkpoint's decode section
    assert translator.decode_options({"beam_size": 5, "nbest": 4}).nbest == 4
    with pytest.raises(ConfigError, match="decode.nbest"):
        translator.decode_options({"beam_size": 2, "nbest": 3})
    with pytest.raises(ConfigError, match="beam_width"):
        translator.decode_options({"beam_width": 3})


def test_length_sorted_batches_cover_every_non_empty_sentence_once_within_the_token_budget():
    lengths = [5, 0, 9, 1, 9, 30, 2, 2, 7]
    batches = length_sorted_batches(lengths, max_tokens=20)
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == [i for i, n in enumerate(lengths) if n > 0]
    for batch in batches:
        assert len(batch) * max(lengths[i] for i in batch) <= 20 or len(batch) == 1
        assert [lengths[i] for i in batch] == sorted((lengths[i] for i in batch), reverse=True)


def test_nbest_format_gives_exactly_n_tab_separated_lines():
    line = TranslatedLine(number=1, src_text="x", src_ids=[5],
                          nbest=[Translation(text="a b", score=-0.5, tgt_ids=[7, 8])])
    assert format_translation(line, 1) == ["a b"]
    assert format_translation(line, 3) == ["-0.5000\ta b", "-inf\t", "-inf\t"]


def test_atomic_output_leaves_the_old_file_on_error(tmp_path: Path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as handle:
            handle.write("half")
            raise RuntimeError("boom")
    assert target.read_text() == "old\n" and list(tmp_path.iterdir()) == [target]
    with atomic_output(target) as handle:
        handle.write("new\n")
    assert target.read_text() == "new\n"


def test_attention_plot_writes_a_png_per_line(translator: Translator, tmp_path: Path):
    pytest.importorskip("matplotlib")
    from seq2seq.translate import write_attention_plot

    lines = list(translator.translate_lines(enumerate(SENTENCES[:3], start=1), return_attention=True))
    attention = lines[0].nbest[0].attention
    assert attention.shape == (len(lines[0].nbest[0].tgt_ids) + 1, len(lines[0].src_ids))
    written = [write_attention_plot(translator, line, tmp_path) for line in lines]
    assert written[1] is None  # the empty line has nothing to plot
    assert sorted(p.name for p in tmp_path.iterdir()) == ["line-000001.png", "line-000003.png"]
    assert (tmp_path / "line-000001.png").read_bytes().startswith(b"\x89PNG")


def test_attention_plot_is_refused_for_a_model_without_attention(make_checkpoint):
    from seq2seq.translate import check_can_plot_attention

    path = make_checkpoint(model={"attention": "none"})
    with pytest.raises(Seq2SeqError, match="attention=none"):
        check_can_plot_attention(Translator.from_checkpoint(path), path)
