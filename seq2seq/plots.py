"""Heatmaps of attention weights and GRU gates, written as PNG files.

matplotlib is an optional dependency (``pip install 'seq2seq[plot]'``): it is imported
only when a plot is asked for, with the non-interactive Agg backend so that plotting
works on machines without a display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from torch import Tensor

from .errors import Seq2SeqError

# Beyond this many labels on an axis the tick labels overlap into a black bar; show every n-th instead.
MAX_TICK_LABELS = 60


def require_matplotlib() -> ModuleType:
    """matplotlib.pyplot on the Agg backend; a clear error when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        raise Seq2SeqError("plotting needs matplotlib, which is not installed; "
                           "install it with `pip install 'seq2seq[plot]'`") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_heatmap(matrix: Tensor, row_labels: Sequence[str], col_labels: Sequence[str], path: str | Path, *,
                 title: str = "", xlabel: str = "", ylabel: str = "", cmap: str = "viridis",
                 vmin: float | None = None, vmax: float | None = None) -> Path:
    """Write matrix (R, C) as a heatmap PNG with labelled rows and columns; returns the path."""
    _check_labels(matrix, row_labels, col_labels)
    plt = require_matplotlib()
    rows, cols = len(row_labels), len(col_labels)
    figure, axes = plt.subplots(figsize=(_width(cols), min(1.5 + 0.3 * rows, 40)))
    try:
        _draw(figure, axes, matrix, row_labels, col_labels, cmap=cmap, vmin=vmin, vmax=vmax)
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        return _save(figure, path)
    finally:
        plt.close(figure)


def plot_attention(attention: Tensor, src_pieces: Sequence[str], tgt_pieces: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """attention (T, S): one row per output piece (EOS included), one column per source piece."""
    return plot_heatmap(attention, tgt_pieces, src_pieces, path, title=title, xlabel="source", ylabel="output",
                        cmap="Greys", vmin=0.0, vmax=1.0)


def plot_update_gates(panels: Sequence[tuple[str, Tensor]], pieces: Sequence[str], path: str | Path,
                      title: str = "", xlabel: str = "") -> Path:
    """One panel per (label, z) with z (N, H) in [0, 1]: the update gate of each unit (rows) at each piece (columns).

    PyTorch's z weights the *old* state, so bright (near 1) means the unit keeps its memory there.
    """
    if not panels:
        raise ValueError("plot_update_gates needs at least one panel")
    plt = require_matplotlib()
    units = max(gates.size(1) for _, gates in panels)
    figure, all_axes = plt.subplots(len(panels), 1, squeeze=False,
                                    figsize=(_width(len(pieces)), min(1.0 + len(panels) * (1.0 + 0.04 * units), 60)))
    try:
        for axes, (label, gates) in zip(all_axes[:, 0], panels):
            _check_labels(gates, pieces, range(gates.size(1)))
            _draw(figure, axes, gates.t(), [str(u) for u in range(gates.size(1))], pieces, cmap="magma",
                  vmin=0.0, vmax=1.0)
            axes.set_ylabel(f"{label}\nunit")
        all_axes[0, 0].set_title(title)
        all_axes[-1, 0].set_xlabel(xlabel)
        return _save(figure, path)
    finally:
        plt.close(figure)


def _check_labels(matrix: Tensor, row_labels: Sequence, col_labels: Sequence) -> None:
    if tuple(matrix.shape) != (len(row_labels), len(col_labels)):
        raise ValueError(f"a heatmap of shape {tuple(matrix.shape)} needs {matrix.shape[0]} row and "
                         f"{matrix.shape[1]} column labels, got {len(row_labels)} and {len(col_labels)}")


def _width(cols: int) -> float:
    return min(2.5 + 0.35 * cols, 40)


def _draw(figure, axes, matrix: Tensor, row_labels: Sequence[str], col_labels: Sequence[str], *, cmap: str,
          vmin: float | None, vmax: float | None) -> None:
    """matrix (R, C) on ``axes``, with tick labels (thinned out when too many) and a colour bar."""
    image = axes.imshow(matrix.detach().float().cpu().numpy(), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                        interpolation="nearest")
    _set_ticks(axes.set_xticks, axes.set_xticklabels, col_labels, rotation=90)
    _set_ticks(axes.set_yticks, axes.set_yticklabels, row_labels, rotation=0)
    figure.colorbar(image, ax=axes)


def _set_ticks(set_positions, set_labels, labels: Sequence[str], rotation: int) -> None:
    every = max(1, -(-len(labels) // MAX_TICK_LABELS))
    positions = list(range(0, len(labels), every))
    set_positions(positions)
    set_labels([labels[i] for i in positions], rotation=rotation, fontsize=8)


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def plot_update_gate_means(panels: Sequence[tuple[str, Tensor]], pieces: Sequence[str], path: str | Path,
                           title: str = "", xlabel: str = "") -> Path:
    """One line per (label, z), z (N, H): the update gate averaged over units at each of the N pieces.

    Dips are where a layer rewrites most of its state; the y axis is fixed to [0, 1] so that
    figures of different sentences and layers compare.
    """
    if not panels:
        raise ValueError("plot_update_gate_means needs at least one panel")
    plt = require_matplotlib()
    figure, axes = plt.subplots(figsize=(_width(len(pieces)), 3.6))
    try:
        for label, gates in panels:
            _check_labels(gates, pieces, range(gates.size(1)))
            axes.plot(gates.detach().float().mean(dim=-1).cpu().numpy(), marker="o", label=label)
        axes.set_xlim(-0.5, len(pieces) - 0.5)
        axes.set_ylim(0.0, 1.0)
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7, loc="lower right")
        _set_ticks(axes.set_xticks, axes.set_xticklabels, pieces, rotation=90)
        axes.set_title(title, fontsize=9)
        axes.set_xlabel(xlabel)
        axes.set_ylabel("mean z over units")
        return _save(figure, path)
    finally:
        plt.close(figure)
