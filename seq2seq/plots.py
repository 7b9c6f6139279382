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
    if tuple(matrix.shape) != (len(row_labels), len(col_labels)):
        raise ValueError(f"a heatmap of shape {tuple(matrix.shape)} needs {matrix.shape[0]} row and "
                         f"{matrix.shape[1]} column labels, got {len(row_labels)} and {len(col_labels)}")
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows, cols = len(row_labels), len(col_labels)
    figure, axes = plt.subplots(figsize=(min(2 + 0.35 * cols, 40), min(1.5 + 0.3 * rows, 40)))
    try:
        image = axes.imshow(matrix.detach().float().cpu().numpy(), aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax,
                            interpolation="nearest")
        _set_ticks(axes.set_xticks, axes.set_xticklabels, col_labels, rotation=90)
        _set_ticks(axes.set_yticks, axes.set_yticklabels, row_labels, rotation=0)
        axes.set_title(title)
        axes.set_xlabel(xlabel)
        axes.set_ylabel(ylabel)
        figure.colorbar(image, ax=axes)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path


def _set_ticks(set_positions, set_labels, labels: Sequence[str], rotation: int) -> None:
    every = max(1, -(-len(labels) // MAX_TICK_LABELS))
    positions = list(range(0, len(labels), every))
    set_positions(positions)
    set_labels([labels[i] for i in positions], rotation=rotation, fontsize=8)


def plot_attention(attention: Tensor, src_pieces: Sequence[str], tgt_pieces: Sequence[str], path: str | Path,
                   title: str = "") -> Path:
    """attention (T, S): one row per output piece (EOS included), one column per source piece."""
    return plot_heatmap(attention, tgt_pieces, src_pieces, path, title=title, xlabel="source", ylabel="output",
                        cmap="Greys", vmin=0.0, vmax=1.0)


def plot_gates(gates: Tensor, pieces: Sequence[str], path: str | Path, title: str = "") -> Path:
    """gates (T, H) in [0, 1], e.g. the update gate z per step and unit: one row per piece."""
    return plot_heatmap(gates, pieces, [str(unit) for unit in range(gates.size(1))], path, title=title,
                        xlabel="unit", ylabel="step", cmap="magma", vmin=0.0, vmax=1.0)


def plot_update_gates(panels: Sequence[tuple[str, Tensor]], tokens: Sequence[str], path: str | Path,
                      title: str = "", xlabel: str = "") -> Path:
    """Update gates over a sequence: per panel a unit-by-token heatmap, then every panel's mean per token.

    ``panels`` pairs a label (e.g. ``layer 0 forward``) with z (N, H) for the N ``tokens``.
    The title states PyTorch's convention, in which z near 1 keeps the old state.
    """
    plt = require_matplotlib()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    heights = [2.4] * len(panels) + [2.2]
    # A narrow second column holds the colour bars, so every panel shares the token axis.
    figure, axes = plt.subplots(len(panels) + 1, 2, squeeze=False,
                                gridspec_kw={"height_ratios": heights, "width_ratios": [40, 1]},
                                figsize=(min(4 + 0.4 * len(tokens), 40), sum(heights) + 1.4))
    try:
        for (ax, bar_ax), (label, update) in zip(axes, panels):
            image = ax.imshow(update.detach().float().cpu().numpy().T, aspect="auto", cmap="viridis", vmin=0.0,
                              vmax=1.0, interpolation="nearest")  # rows = units, columns = tokens
            ax.set_ylabel(f"{label}\nunit", fontsize=8)
            ax.set_xticks([])
            figure.colorbar(image, cax=bar_ax).set_label("z", fontsize=8)
        mean_axes = axes[-1, 0]
        axes[-1, 1].axis("off")
        for label, update in panels:
            mean_axes.plot(update.detach().float().mean(dim=-1).cpu().numpy(), marker="o", label=label)
        mean_axes.set_xlim(-0.5, len(tokens) - 0.5)
        mean_axes.set_ylim(0.0, 1.0)
        mean_axes.set_ylabel("mean z over units", fontsize=8)
        mean_axes.grid(alpha=0.3)
        mean_axes.legend(fontsize=7, loc="lower right")
        mean_axes.set_xlabel(xlabel)
        _set_ticks(mean_axes.set_xticks, mean_axes.set_xticklabels, tokens, rotation=90)
        figure.suptitle(f"{title}\nupdate gate z (PyTorch's GRU): z near 1 keeps the old state, "
                        f"z near 0 rewrites it with the candidate", fontsize=9)
        figure.tight_layout()
        figure.savefig(path, dpi=100)
    finally:
        plt.close(figure)
    return path
