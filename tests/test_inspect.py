"""``seq2seq inspect`` on tiny random checkpoints: the reported differences are real and the GRU facts hold."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from seq2seq.checkpoint import LoadedModel, load_model
from seq2seq.cli import main
from seq2seq.ids import PAD_ID
from seq2seq.inspection import inspect_sentence, report_to_dict
from seq2seq.inspection.checks import TOLERANCE
from seq2seq.search import greedy_search

SENTENCE = "ein Hund läuft im Park ."
MODELS = {
    "bi": {"bidirectional": True, "num_layers": 2, "attention": "bahdanau"},
    "uni": {"bidirectional": False, "num_layers": 2, "attention": "luong_general"},
    "plain": {"bidirectional": True, "num_layers": 1, "attention": "none", "context_every_step": True},
}


@pytest.fixture(scope="module")
def checkpoints(make_checkpoint) -> dict[str, Path]:
    """Random (untrained) tiny checkpoints, one per model shape: inspection needs no training."""
    return {name: make_checkpoint(model={"hidden_size": 6, "decoder_hidden_size": 10, **model},
                                  decode={"max_length_a": 0.5})
            for name, model in MODELS.items()}


def _inspect_json(capsys: pytest.CaptureFixture, checkpoint: Path, *sentences: str) -> list[dict[str, Any]]:
    assert main(["-q", "inspect", "-c", str(checkpoint), "--json", *sentences]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


# The facts that are equalities; every other check claims a difference.
EQUALITIES = {"forward_final_is_output_last", "h_n_last_is_output_last", "backward_final_is_output_first",
              "padded_output_true_last_is_h_n", "padded_h_n_equals_alone", "joined_is_h_n_per_layer",
              "transparent_encoder", "transparent_decoder"}


def _differences(loaded: LoadedModel, sentence: str) -> dict[str, float]:
    """The max |difference| of each GRU fact, recomputed from ``encode`` with h_n's rows indexed directly.

    h_n (L*D, B, H) holds layer k, direction d in row k*D + d; the top layer's rows are the last D.
    """
    model = loaded.model
    src_ids = loaded.tokenizer.encode_src(sentence)
    length, hidden, directions = len(src_ids), model.encoder.hidden_size, 2 if model.bidirectional else 1
    top = (model.num_layers - 1) * directions

    def diff(a: torch.Tensor, b: torch.Tensor) -> float:
        return (a - b).abs().max().item()

    with torch.no_grad():
        alone = model.encode(torch.tensor([src_ids]), torch.tensor([length]))
        # The sentence padded beside a longer one (its reversal, three times).
        padded = model.encode(torch.tensor([src_ids + [PAD_ID] * (2 * length), src_ids[::-1] * 3]),
                              torch.tensor([length, 3 * length]))
        joined = model.join_h_n(alone.h_n)
    h_n, output = alone.h_n[:, 0], alone.output[0]  # (L*D, H), (S, D*H)
    found = {
        "forward_final_is_output_last": diff(h_n[top], output[length - 1, :hidden]),
        # Padding holds zeros in output, so its difference to the state is the state's largest entry.
        "padded_output_last_is_not_h_n": h_n[top].abs().max().item(),
        "padded_output_true_last_is_h_n": diff(padded.output[0, length - 1, :hidden], padded.h_n[top, 0]),
        "padded_h_n_equals_alone": diff(padded.h_n[:, 0], h_n),
        "joined_is_h_n_per_layer": max(diff(joined[k, 0], torch.cat([h_n[k * directions + d]
                                                                     for d in range(directions)]))
                                       for k in range(model.num_layers)),
    }
    if directions == 1:
        found["h_n_last_is_output_last"] = diff(h_n[-1], output[-1])
    else:
        found["backward_final_is_output_first"] = diff(h_n[top + 1], output[0, hidden:])
        found["backward_final_is_not_output_last"] = diff(h_n[top + 1], output[length - 1, hidden:])
    return found


@pytest.mark.parametrize("name", ["bi", "uni", "plain"])
def test_every_check_reports_the_difference_recomputed_here_and_holds(capsys, checkpoints, name: str) -> None:
    [report] = _inspect_json(capsys, checkpoints[name], SENTENCE)
    expected = _differences(load_model(checkpoints[name]), SENTENCE)
    assert set(report["checks"]) == {*expected, "transparent_encoder", "transparent_decoder"}
    for check_name, check in report["checks"].items():
        assert check["holds"], f"{check_name}: {check}"
        assert check["expect"] == ("equal" if check_name in EQUALITIES else "differ"), check_name
        if check_name in expected:
            assert check["max_abs_diff"] == pytest.approx(expected[check_name], rel=1e-5, abs=1e-6), check_name
            # The recomputed differences agree with the facts: ~0 for an equality, clearly not for the others.
            assert (expected[check_name] <= TOLERANCE) == (check_name in EQUALITIES), check_name
        else:  # test_gates.py checks the transparent GRU itself against nn.GRU
            assert check["max_abs_diff"] <= TOLERANCE, check_name


def test_checks_fail_on_a_model_whose_states_break_the_facts(checkpoints, monkeypatch) -> None:
    # Shift the encoder output the report reads (and the joined state), and the output of the padded batch:
    # every equality read from them must then fail, by exactly the shift.
    loaded = load_model(checkpoints["bi"])
    model = loaded.model
    introspect, encode = model.introspect, model.encode

    def shifted_introspect(*args, **kwargs):
        seen = introspect(*args, **kwargs)
        return dataclasses.replace(seen, output=seen.output + 1.0, joined=seen.joined + 1.0)

    def shifted_batch_encode(src_ids: torch.Tensor, src_lengths: torch.Tensor):
        enc = encode(src_ids, src_lengths)
        return dataclasses.replace(enc, output=enc.output + 1.0) if src_ids.size(0) > 1 else enc

    monkeypatch.setattr(model, "introspect", shifted_introspect)
    monkeypatch.setattr(model, "encode", shifted_batch_encode)
    checks = {check.name: check for check in inspect_sentence(loaded, SENTENCE).report.checks}
    for name in ("forward_final_is_output_last", "backward_final_is_output_first", "joined_is_h_n_per_layer",
                 "padded_output_true_last_is_h_n"):
        assert not checks[name].holds, name
        assert checks[name].max_abs_diff == pytest.approx(1.0, abs=1e-5), name
    assert checks["padded_h_n_equals_alone"].holds  # h_n was left alone


def test_bidirectional_report_reads_h_n_view_and_the_backward_state_at_the_first_token(capsys, checkpoints) -> None:
    [report] = _inspect_json(capsys, checkpoints["bi"], SENTENCE)
    loaded = load_model(checkpoints["bi"])
    src_ids = loaded.tokenizer.encode_src(SENTENCE)
    with torch.no_grad():
        enc = loaded.model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
    length, hidden = len(src_ids), 6
    assert report["output_shape"] == [1, length, 2 * hidden]
    assert report["h_n_shape"] == [4, 1, hidden]
    rows = [(row["index"], row["layer"], row["direction"]) for row in report["states"]]
    assert rows == [(0, 0, "forward"), (1, 0, "backward"), (2, 1, "forward"), (3, 1, "backward")]
    for row in report["states"]:
        assert row["norm"] == pytest.approx(enc.h_n[row["index"]].norm().item(), rel=1e-5)
    assert report["states"][3]["in_output"].startswith(f"output[0, 0, {hidden}:]")
    assert report["states"][2]["in_output"].startswith(f"output[0, {length - 1}, :{hidden}]")
    # The reported difference is the real one: the backward final state is not at the last position.
    top_backward = enc.h_n.view(2, 2, 1, hidden)[-1, 1]
    expected = (top_backward - enc.output[:, -1, hidden:]).abs().max().item()
    assert report["checks"]["backward_final_is_not_output_last"]["max_abs_diff"] == pytest.approx(expected, rel=1e-5)
    # Padded inside a batch, output[:, -1] holds zeros, so its difference to h_n is the state's largest entry.
    top_forward = enc.h_n.view(2, 2, 1, hidden)[-1, 0]
    assert report["checks"]["padded_output_last_is_not_h_n"]["max_abs_diff"] == pytest.approx(
        top_forward.abs().max().item(), rel=1e-5)


def test_unidirectional_report_has_no_backward_rows_and_checks_h_n_last(capsys, checkpoints) -> None:
    [report] = _inspect_json(capsys, checkpoints["uni"], SENTENCE)
    assert [row["direction"] for row in report["states"]] == ["forward", "forward"]
    assert report["states"][0]["in_output"] is None  # the lower layer is in h_n only
    assert "h_n_last_is_output_last" in report["checks"]
    assert not any("backward" in name for name in report["checks"])
    assert {(g["side"], g["layer"], g["direction"]) for g in report["gates"]} == {
        ("encoder", 0, "forward"), ("encoder", 1, "forward"), ("decoder", 0, "forward"), ("decoder", 1, "forward")}


def test_translation_and_attention_are_those_of_greedy_search(checkpoints) -> None:
    loaded = load_model(checkpoints["bi"])
    inspection = inspect_sentence(loaded, SENTENCE)
    src_ids = loaded.tokenizer.encode_src(SENTENCE)
    with torch.no_grad():
        [hypothesis] = greedy_search(loaded.model, torch.tensor([src_ids]), torch.tensor([len(src_ids)]),
                                     loaded.config.decode, return_attention=True)
    report = inspection.report
    assert report.translation == loaded.tokenizer.decode_tgt(hypothesis.tgt_ids)
    assert [token.piece for token in report.target] == loaded.tokenizer.tgt_pieces([*hypothesis.tgt_ids, 3])
    for t, token in enumerate(report.target):
        best = int(hypothesis.attention[t].argmax())
        assert token.attends_to[0].position == best
        assert token.attends_to[0].value == pytest.approx(hypothesis.attention[t, best].item())
        assert token.attends_to[0].value >= token.attends_to[-1].value


def test_gate_summaries_cover_every_token_and_name_the_lowest(checkpoints) -> None:
    loaded = load_model(checkpoints["bi"])
    inspection = inspect_sentence(loaded, SENTENCE)
    report = inspection.report
    steps = len(report.target)  # the decoder reads BOS, then each output token but the final EOS
    for summary in report.gates:
        expected_tokens = report.src_pieces if summary.side == "encoder" else inspection.decoder_tokens
        assert summary.tokens == expected_tokens
        assert len(summary.mean_update) == (len(report.src_pieces) if summary.side == "encoder" else steps)
        assert all(0.0 < value < 1.0 for value in summary.mean_update)
        lowest = summary.lowest[0]
        assert lowest.value == pytest.approx(min(summary.mean_update))
        assert summary.tokens[lowest.position] == lowest.piece
    panel = inspection.encoder_gates[0]
    assert panel.update.shape == (len(report.src_pieces), 6)
    assert report_to_dict(report)["gates"][0]["mean_update"] == pytest.approx(panel.update.mean(dim=-1).tolist())


def test_text_report_answers_the_questions(capsys, checkpoints) -> None:
    assert main(["-q", "inspect", "-c", str(checkpoints["bi"]), SENTENCE]) == 0
    text = capsys.readouterr().out
    assert "h_n[3] = layer 1 backward" in text
    assert "h_n[-1] is the top layer's backward state" in text
    assert "decoder start (bridge: linear)" in text
    assert "translation (greedy):" in text
    assert "encoder layer 0 backward" in text and "decoder layer 1 forward" in text
    assert "[ok  ]" in text and "FAIL" not in text


def test_plot_writes_attention_and_update_gate_pngs(checkpoints, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    source = tmp_path / "sentences.txt"
    source.write_text("die Frau lächelt .\n", encoding="utf-8")
    assert main(["-q", "inspect", "-c", str(checkpoints["bi"]), "-i", str(source), "--plot", str(tmp_path / "a")]) == 0
    assert main(["-q", "inspect", "-c", str(checkpoints["plain"]), SENTENCE, "--plot", str(tmp_path / "b")]) == 0
    written_a = sorted(path.name for path in (tmp_path / "a").iterdir())
    assert written_a == ["sentence-001-attention.png", "sentence-001-update-decoder-mean.png",
                         "sentence-001-update-decoder.png", "sentence-001-update-encoder-mean.png",
                         "sentence-001-update-encoder.png"]
    written_b = sorted(path.name for path in (tmp_path / "b").iterdir())
    assert "sentence-001-attention.png" not in written_b and len(written_b) == 4  # the model has no attention
    for path in (tmp_path / "a").iterdir():
        assert path.read_bytes().startswith(b"\x89PNG")


def test_no_sentence_is_an_error_saying_how_to_give_one(capsys, checkpoints) -> None:
    assert main(["inspect", "-c", str(checkpoints["bi"])]) == 2
    assert "-i FILE" in capsys.readouterr().err


def test_blank_lines_of_an_input_file_are_skipped_not_fatal(capsys, checkpoints, tmp_path: Path) -> None:
    source = tmp_path / "sentences.txt"
    source.write_text(f"{SENTENCE}\n\n  \nzwei Hunde .\n", encoding="utf-8")
    assert main(["-q", "inspect", "-c", str(checkpoints["bi"]), "-i", str(source), "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [report["source"] for report in reports] == [f"{source}, line 1", f"{source}, line 4"]


def test_a_missing_checkpoint_is_an_error(capsys, tmp_path: Path) -> None:
    assert main(["inspect", "-c", str(tmp_path / "missing.pt"), SENTENCE]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
