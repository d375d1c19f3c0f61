"""Figures of the Frozen Lake sanity check: policies as arrows on the map (shaded by how often
sampled episodes visit each state), learning curves.

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
from ift.tasks.frozen_lake.exploration import EXPLORATION_EPISODES, optimal_policy_everywhere, sample_visits
from ift.tasks.frozen_lake.metrics import mse_to_optimal

__all__ = ["plot_policies", "draw_policy"]

TILE_COLORS = {"F": "#dcebf7", "S": "#cfe8cf", "H": "#263238", "G": "#f5c242"}
ARROW_COLOR = "#1f4e79"
GREEDY_COLOR = "#c62828"
VISIT_COLOR = "#7b1fa2"
# Identical curves (IFT with λ = 0, γ = 0 and SFT) must both stay visible: each curve gets
# its own dash pattern and marker as well as its colour.
_LINE_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "v", "D", "x", "+", "*")
# Arrow direction on screen (x right, y down, since the map's row 0 is drawn at the top).
_DIRECTIONS = {0: (-1.0, 0.0), 1: (0.0, 1.0), 2: (1.0, 0.0), 3: (0.0, -1.0)}


def draw_policy(ax: Any, task: FrozenLakeTask, action_probs: Optional[Mapping[int, Any]], title: str = "",
                visits: Optional[Mapping[int, int]] = None) -> None:
    """Draw the map on ``ax`` (holes dark, start green, goal gold) and, for every non-terminal
    state of ``action_probs``, one arrow per action whose length and opacity are its
    probability; the most probable action's arrow (ties included) is red. With ``visits``
    ({state: count}), each visited tile is shaded purple in proportion to its count."""
    top = max(visits.values()) if visits else 0
    for state in range(task.n_states):
        row, col = task.to_rowcol(state)
        tile = task.tile(state)
        ax.add_patch(Rectangle((col, row), 1, 1, facecolor=TILE_COLORS[tile], edgecolor="white", linewidth=1.5))
        if top and visits.get(state, 0):
            shade = 0.08 + 0.42 * visits[state] / top
            ax.add_patch(Rectangle((col + 0.04, row + 0.04), 0.92, 0.92, facecolor=VISIT_COLOR, alpha=shade,
                                   linewidth=0))
        if tile in "SG":
            ax.text(col + 0.1, row + 0.22, tile, fontsize=9, fontweight="bold", color="#333333")
        if tile == "G":
            ax.text(col + 0.5, row + 0.5, "★", fontsize=18, ha="center", va="center", color="#8d6e00")
    for state, probs in (action_probs or {}).items():
        if task.is_terminal(state):
            continue  # no decision is taken in a hole or at the goal
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
    curves_title: str = "learning curves",
) -> str:
    """Save a PNG with one panel for π\* and one per policy (titled with its MSE to π\* over
    every state, shaded by the visits of episodes sampled from it), plus, if ``curves`` is
    given, a panel of MSE to π\* against the training step with the legend beside it.

    Args:
        task: the task whose map is drawn.
        policies: {name (e.g. the objective and seed): {state: probabilities over L, D, R, U}}.
        pi_star: the reference policy drawn first; default π* on every state of the map.
        curves: {name: MSE values, one per evaluation (x = index), or (step, value) pairs}.
        path: where to write the PNG (folders are created; written atomically).
        title: a title over the whole figure.
        max_columns: panels per row.
        dpi: resolution.
        curves_title: the title of the curves panel (say what the curves average).

    Returns:
        ``path``.
    """
    everywhere = optimal_policy_everywhere(task)
    pi_star = everywhere if pi_star is None else pi_star
    panels = 1 + len(policies) + (1 if curves else 0)
    ncols = max(1, min(max_columns, panels))
    nrows = (panels + ncols - 1) // ncols
    side = max(3.3, 0.55 * max(task.nrow, task.ncol))  # legible arrows on 8x8 maps
    fig = Figure(figsize=(side * ncols, (side + 0.3) * nrows), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(panels)]
    draw_policy(axes[0], task, pi_star, title="π* (value iteration)")
    for ax, (name, probs) in zip(axes[1:], policies.items()):
        reference = {s: everywhere[s] for s in everywhere if s in probs}
        draw_policy(ax, task, probs, title=f"{name}\nMSE {mse_to_optimal(probs, reference):.4f}",
                    visits=sample_visits(task, probs))
    if curves:
        ax = axes[-1]
        for index, (name, values) in enumerate(curves.items()):
            xs, ys = _curve_xy(values)
            ax.plot(xs, ys, label=name, linewidth=1.4, linestyle=_LINE_STYLES[index % len(_LINE_STYLES)],
                    marker=_MARKERS[index % len(_MARKERS)], markersize=3, markevery=max(1, len(xs) // 8))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("MSE to π*")
        ax.set_title(curves_title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0, frameon=False)
    legend = (f"arrows: {', '.join(ACTIONS)} probabilities (length, opacity); red = most probable; "
              f"purple shade: visits of {EXPLORATION_EPISODES} sampled episodes")
    fig.text(0.5, 0.005, legend, ha="center", va="bottom", fontsize=8, color="#555555")
    if title:
        fig.suptitle(title, fontsize=11)
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
