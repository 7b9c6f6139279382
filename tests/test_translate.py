"""The Translator API and the streaming helpers of ``seq2seq translate``, on a tiny random checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq import Translator
from seq2seq.checkpoint import build_checkpoint, save_checkpoint
from seq2seq.config import config_from_dict
from seq2seq.errors import ConfigError, Seq2SeqError
from seq2seq.model.seq2seq import Seq2Seq
from seq2seq.data.batches import length_sorted_batches
from seq2seq.textio import atomic_output
from seq2seq.translate import TranslatedLine, Translation, format_translation

MAX_SOURCE_TOKENS = 40


def build_tiny_checkpoint(path: Path, tokenizer: Any, attention: str = "bahdanau", seed: int = 0) -> Path:
    """A random (untrained) tiny Seq2Seq with ``tokenizer``, saved as a real checkpoint at ``path``."""
    cfg = config_from_dict({
        "data": {"max_length": MAX_SOURCE_TOKENS},
        "model": {"embedding_size": 8, "hidden_size": 8, "num_layers": 1, "decoder_hidden_size": 12,
                  "attention": attention, "dropout": 0.0},
        "decode": {"beam_size": 2, "max_length_a": 0.25, "max_length_b": 4, "batch_size": 60},
    })
    torch.manual_seed(seed)
    model = Seq2Seq.from_config(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    save_checkpoint(build_checkpoint(cfg, model.state_dict(), tokenizer.to_state()), path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, small_tokenizer) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", small_tokenizer)


@pytest.fixture(scope="module")
def translator(checkpoint: Path) -> Translator:
    return Translator.from_checkpoint(checkpoint, device="cpu")


SENTENCES = ["ein Hund läuft im Park .", "", "die Frau lächelt .", "zwei Kinder spielen im Garten mit dem Hund ."]


def test_translator_returns_one_string_per_sentence_and_exposes_the_model(translator: Translator):
    outputs = translator.translate(SENTENCES, beam_size=2)
    assert len(outputs) == len(SENTENCES) and all(isinstance(text, str) for text in outputs)
    assert outputs[1] == ""
    assert isinstance(translator.model, Seq2Seq) and not translator.model.training
    assert translator.tokenizer.tgt_vocab_size == translator.model.tgt_vocab_size
    assert translator.config.data.max_length == MAX_SOURCE_TOKENS


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
    assert len(translator.tokenizer.encode_src(long_line)) > MAX_SOURCE_TOKENS
    with caplog.at_level(logging.WARNING, logger="seq2seq.translate"):
        lines = list(translator.translate_lines([(1, "die Frau lächelt ."), (2, long_line)], name="input.txt"))
    assert len(lines[1].src_ids) == MAX_SOURCE_TOKENS
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


def test_attention_plot_is_refused_for_a_model_without_attention(tmp_path: Path, small_tokenizer):
    from seq2seq.translate import check_can_plot_attention

    path = build_tiny_checkpoint(tmp_path / "plain.pt", small_tokenizer, attention="none")
    with pytest.raises(Seq2SeqError, match="attention=none"):
        check_can_plot_attention(Translator.from_checkpoint(path), path)


def test_plots_name_the_install_command_when_matplotlib_is_missing(monkeypatch, tmp_path: Path):
    from seq2seq.plots import plot_attention

    monkeypatch.setitem(__import__("sys").modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(Seq2SeqError, match=r"pip install 'seq2seq\[plot\]'"):
        plot_attention(torch.ones(2, 3) / 3, ["a", "b", "c"], ["x", "</s>"], tmp_path / "a.png")


def test_update_gate_plot_has_one_panel_per_layer(tmp_path: Path):
    pytest.importorskip("matplotlib")
    from seq2seq.plots import plot_update_gates

    panels = [("layer 0 forward", torch.rand(4, 6)), ("layer 0 backward", torch.rand(4, 6))]
    path = plot_update_gates(panels, ["▁ein", "▁Hund", "▁.", "</s>"], tmp_path / "gates.png", title="encoder")
    assert path.read_bytes().startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="column labels"):
        plot_update_gates(panels, ["▁ein"], tmp_path / "bad.png")
