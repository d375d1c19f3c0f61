"""Figures of the Frozen Lake sanity check: policies as arrows on the map, learning curves.

Drawn with matplotlib's object API on an Agg canvas: no pyplot, no global backend change,
safe in headless training jobs and in callbacks.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ift.tasks.frozen_lake.distributions import action_distribution
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import ACTIONS
from ift.tasks.frozen_lake.metrics import mse_to_optimal

__all__ = ["plot_policies", "draw_policy"]

TILE_COLORS = {"F": "#dcebf7", "S": "#cfe8cf", "H": "#263238", "G": "#f5c242"}
ARROW_COLOR = "#1f4e79"
GREEDY_COLOR = "#c62828"
# Arrow direction on screen (x right, y down, since the map's row 0 is drawn at the top).
_DIRECTIONS = {0: (-1.0, 0.0), 1: (0.0, 1.0), 2: (1.0, 0.0), 3: (0.0, -1.0)}


def draw_policy(ax: Any, task: FrozenLakeTask, action_probs: Optional[Mapping[int, Any]], title: str = "") -> None:
    """Draw the map on ``ax`` (holes dark, start green, goal gold) and, for every state of
    ``action_probs``, one arrow per action whose length and opacity are its probability;
    the most probable action's arrow (ties included) is red."""
    for state in range(task.n_states):
        row, col = task.to_rowcol(state)
        tile = task.tile(state)
        ax.add_patch(Rectangle((col, row), 1, 1, facecolor=TILE_COLORS[tile], edgecolor="white", linewidth=1.5))
        if tile in "SG":
            ax.text(col + 0.1, row + 0.22, tile, fontsize=9, fontweight="bold", color="#333333")
        if tile == "G":
            ax.text(col + 0.5, row + 0.5, "★", fontsize=18, ha="center", va="center", color="#8d6e00")
    for state, probs in (action_probs or {}).items():
        probs = action_distribution(probs, state, title or "policy")
        row, col = task.to_rowcol(state)
        cx, cy = col + 0.5, row + 0.5
        # Red marks the most probable action(s), unless all four are equal.
        best = set(np.flatnonzero(probs >= probs.max() - 1e-6)) if np.ptp(probs) > 1e-6 else set()
        for action, p in enumerate(probs):
            if p < 0.01:
                continue
            dx, dy = _DIRECTIONS[action]
            length = 0.45 * float(p)
            ax.arrow(
                cx, cy, dx * length, dy * length,
                width=0.03, head_width=0.1, head_length=min(0.1, 0.6 * length), length_includes_head=True,
                color=GREEDY_COLOR if action in best else ARROW_COLOR,
                alpha=float(np.clip(0.15 + 0.85 * p, 0.0, 1.0)), linewidth=0,
            )
    ax.set_xlim(0, task.ncol)
    ax.set_ylim(task.nrow, 0)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def _curve_xy(values: Sequence[Any]) -> tuple:
    """``[v0, v1, ...]`` (x = index) or ``[(step, value), ...]``."""
    items = list(values)
    if items and isinstance(items[0], (tuple, list)) and len(items[0]) == 2:
        return [float(x) for x, _ in items], [float(y) for _, y in items]
    return list(range(len(items))), [float(y) for y in items]


def plot_policies(
    task: FrozenLakeTask,
    policies: Mapping[str, Mapping[int, Any]],
    pi_star: Optional[Mapping[int, Any]] = None,
    curves: Optional[Mapping[str, Sequence[Any]]] = None,
    path: str = "frozen_lake_policies.png",
    title: Optional[str] = None,
    max_columns: int = 4,
    dpi: int = 110,
) -> str:
    """Save a PNG with one panel for π\\* and one per policy (titled with its MSE to π\\*),
    plus, if ``curves`` is given, a panel of MSE to π\\* against the training step.

    Args:
        task: the task whose map is drawn.
        policies: {name (e.g. the objective): {state: probabilities over L, D, R, U}}.
        pi_star: the reference policy; default ``task.optimal_policy()``.
        curves: {name: MSE values, one per evaluation (x = index), or (step, value) pairs}.
        path: where to write the PNG (folders are created; written atomically).
        title: a title over the whole figure.
        max_columns: panels per row.
        dpi: resolution.

    Returns:
        ``path``.
    """
    pi_star = task.optimal_policy() if pi_star is None else pi_star
    panels = 1 + len(policies) + (1 if curves else 0)
    ncols = max(1, min(max_columns, panels))
    nrows = (panels + ncols - 1) // ncols
    fig = Figure(figsize=(3.3 * ncols, 3.5 * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(panels)]
    draw_policy(axes[0], task, pi_star, title="π* (value iteration)")
    for ax, (name, probs) in zip(axes[1:], policies.items()):
        draw_policy(ax, task, probs, title=f"{name}  MSE {mse_to_optimal(probs, pi_star):.4f}")
    if curves:
        ax = axes[-1]
        for name, values in curves.items():
            xs, ys = _curve_xy(values)
            ax.plot(xs, ys, label=name, linewidth=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel("MSE to π*")
        ax.set_title("learning curves", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    legend = f"arrows: {', '.join(ACTIONS)} probabilities (length, opacity); red = most probable"
    fig.text(0.5, 0.005, legend, ha="center", va="bottom", fontsize=8, color="#555555")
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.03, 1, 1))

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, tmp = tempfile.mkstemp(suffix=".png", dir=folder)
    os.close(handle)
    try:
        fig.savefig(tmp, format="png")
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; a picture is meant to be shared
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path
