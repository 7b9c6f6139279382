"""The PNG heatmaps of plots.py: what each figure holds (panels, labels, values), read from the figure as it is saved."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from seq2seq.errors import Seq2SeqError

PIECES = ["▁ein", "▁Hund", "▁.", "</s>"]


@pytest.fixture
def saved_figures(monkeypatch: pytest.MonkeyPatch) -> list:
    """Every matplotlib figure a plot saves, in order: a PNG alone does not say how many panels it has."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    figures = []
    real_savefig = Figure.savefig

    def savefig(self: Figure, *args, **kwargs):
        figures.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def _gate_panels(count: int) -> list[tuple[str, torch.Tensor]]:
    """``count`` update-gate panels (label, z (4 pieces, 6 units)) with values in [0, 1]."""
    generator = torch.Generator().manual_seed(0)
    return [(f"layer {k // 2} {('forward', 'backward')[k % 2]}", torch.rand(len(PIECES), 6, generator=generator))
            for k in range(count)]


def test_update_gate_plot_has_one_panel_per_layer(tmp_path: Path, saved_figures: list) -> None:
    from seq2seq.plots import plot_update_gates

    panels = _gate_panels(3)
    path = plot_update_gates(panels, PIECES, tmp_path / "gates.png", title="encoder")
    assert path.read_bytes().startswith(b"\x89PNG")
    [figure] = saved_figures
    drawn = [axes for axes in figure.axes if axes.images]  # the colour bars are axes without an image
    assert len(drawn) == len(panels)
    for axes, (label, gates) in zip(drawn, panels):
        assert axes.get_ylabel() == f"{label}\nunit"
        # Units down, pieces across: the panel shows z transposed.
        np.testing.assert_allclose(np.asarray(axes.images[0].get_array()), gates.t().numpy())
        assert [tick.get_text() for tick in axes.get_xticklabels()] == PIECES
    assert drawn[0].get_title() == "encoder"
    with pytest.raises(ValueError, match="column labels"):
        plot_update_gates(panels, PIECES[:1], tmp_path / "bad.png")


def test_update_gate_mean_plot_has_one_line_per_layer(tmp_path: Path, saved_figures: list) -> None:
    from seq2seq.plots import plot_update_gate_means

    panels = _gate_panels(3)
    plot_update_gate_means(panels, PIECES, tmp_path / "means.png")
    [figure] = saved_figures
    [axes] = figure.axes
    lines = axes.get_lines()
    assert [line.get_label() for line in lines] == [label for label, _ in panels]
    for line, (_, gates) in zip(lines, panels):
        np.testing.assert_allclose(line.get_ydata(), gates.mean(dim=-1).numpy(), rtol=1e-6)
    assert axes.get_ylim() == (0.0, 1.0)


def test_attention_heatmap_has_a_row_per_output_piece_and_a_column_per_source_piece(tmp_path: Path,
                                                                                   saved_figures: list) -> None:
    from seq2seq.plots import plot_attention

    attention = torch.softmax(torch.randn(3, len(PIECES), generator=torch.Generator().manual_seed(1)), dim=-1)
    plot_attention(attention, PIECES, ["a", "dog", "</s>"], tmp_path / "attention.png")
    [figure] = saved_figures
    [axes] = [axes for axes in figure.axes if axes.images]
    np.testing.assert_allclose(np.asarray(axes.images[0].get_array()), attention.numpy())
    assert [tick.get_text() for tick in axes.get_yticklabels()] == ["a", "dog", "</s>"]
    assert [tick.get_text() for tick in axes.get_xticklabels()] == PIECES


def test_plots_name_the_install_command_when_matplotlib_is_missing(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    from seq2seq.plots import plot_attention

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    with pytest.raises(Seq2SeqError, match=r"pip install 'seq2seq\[plot\]'"):
        plot_attention(torch.ones(2, 3) / 3, ["a", "b", "c"], ["x", "</s>"], tmp_path / "a.png")
