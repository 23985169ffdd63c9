"""The plotting core both reports share: accuracy against average bit-width, and atomic PNGs.

One run draws its fixed-width curve and LAQ star (the paper's Figure 1); a sweep draws one
curve and star per group with error bars (Figures 1 and 3). Both go through ``draw_curve``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ser.io import atomic_path  # noqa: E402


def accuracy_axes(title: str | None = None, size: tuple[float, float] = (5, 3.5)):
    """A figure whose axes are test accuracy (%) against the average bit-width of Eq. 6."""
    fig, ax = plt.subplots(figsize=size)
    ax.set_xlabel("average bit-width (Eq. 6)")
    ax.set_ylabel("test accuracy (%)")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig, ax


def draw_curve(
    ax,
    label: str,
    color: str,
    bits: Sequence[float],
    accuracy: Sequence[float],
    accuracy_std: Sequence[float] | None = None,
    laq: tuple[float, float, float, float] | None = None,
) -> None:
    """Fixed-width points joined by a line, and LAQ as a star at (bits, accuracy ± their stds); accuracies in %."""
    if bits:
        ax.errorbar(
            bits, accuracy, yerr=accuracy_std, marker="o", color=color, capsize=2, label=f"{label} fixed".strip()
        )
    if laq is not None:
        laq_bits, laq_acc, bits_std, acc_std = laq
        ax.errorbar(
            [laq_bits],
            [laq_acc],
            xerr=[bits_std],
            yerr=[acc_std],
            marker="*",
            markersize=15,
            color=color,
            capsize=2,
            linestyle="none",
            label=f"{label} LAQ".strip(),
        )


def finish(fig, ax, legend_size: float | None = None) -> None:
    if ax.get_legend_handles_labels()[0]:  # a sweep with quant=none has no curves
        ax.legend(loc="lower right", fontsize=legend_size)
    fig.tight_layout()


def save_figure(figure, path: str | Path) -> None:
    """Write a PNG atomically: a reader never sees half a file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getvalue())
