"""The Frozen Lake environment of the IFT paper's sanity check (§5.3): dynamics, π*, paths, text.

A deterministic (not slippery) Gymnasium FrozenLake (the dynamics equal Gymnasium's transition
table, ``tests/test_frozen_lake_maps.py``). States are Gymnasium's ``row * ncol + col``. The map
text is described in :mod:`ift.tasks.frozen_lake.maps`; for the character transformer the
prompt is the map rows joined by ``/`` and closed by ``:`` and the response the action string
(``L``, ``D``, ``R``, ``U``: Gymnasium's actions 0-3); the state policy writes paths as states
(:mod:`ift.tasks.frozen_lake.state_policy`). How a language model is read as a policy is in
:mod:`ift.tasks.frozen_lake.lm_policy` and :mod:`ift.tasks.frozen_lake.queries`.

**The reference policy π\*.** Value iteration on the known dynamics (reward 1 on entering
``G``, 0 otherwise, episodes end in ``H`` and ``G``, discount ``gamma`` = 0.99 by default)
gives ``Q*``. Then, for every state ``s``: ``A*(s) = {a : Q*(s, a) >= max_b Q*(s, b) - 1e-9}``
and ``π*(a | s) = 1 / |A*(s)|`` on ``A*(s)``, else 0. Because of the discount, ``A*(s)`` is
exactly the set of actions that begin a shortest path from ``s`` to ``G`` (moves into holes or
walls are never optimal); from a state that cannot reach ``G`` π\* is uniform.

**Data of the paper.** SFT and IFT see only the optimal trajectory; DPO and ORPO the pair
optimal = chosen, :meth:`FrozenLakeTask.rejected_trajectory` = rejected; PPO only the
environment's reward (:meth:`FrozenLakeTask.score`, :mod:`ift.tasks.frozen_lake.reward`).

**Executing a response** (:meth:`FrozenLakeTask.run`): actions are applied in order until
the agent enters a hole or the goal or the string ends; later characters are ignored. A
character that is not one of ``LDRU`` ends the episode at once as a failure (reward 0,
``outcome="invalid"``). Moving into the border leaves the agent in place and counts as a step.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from ift.tasks.frozen_lake.distributions import probs_at_texts
from ift.tasks.frozen_lake.maps import (
    ACTION_INDEX,
    ACTIONS,
    DEFAULT_MAP,
    MAP_SEPARATOR,
    MOVES,
    PROMPT_END,
    MapSpec,
    map_from_prompt,
    parse_map,
)

DEFAULT_GAMMA = 0.99
TIE_TOLERANCE = 1e-9


@dataclass(frozen=True)
class Episode:
    """The result of executing an action string (see :meth:`FrozenLakeTask.run`).

    Attributes:
        success: the agent entered ``G``.
        steps: actions executed (border bumps count; ignored trailing characters do not).
        final_state: the state the agent ended in (a hole or the goal if it entered one).
        reward: 1.0 on success, else 0.0 (Gymnasium's reward).
        path: the visited states, start included (``len(path) == steps + 1``).
        outcome: ``"goal"``, ``"hole"``, ``"end"`` (string ran out on the ice),
            ``"invalid"`` (a character not in ``LDRU``) or ``"truncated"`` (``max_steps``).
    """

    success: bool
    steps: int
    final_state: int
    reward: float
    path: Tuple[int, ...]
    outcome: str = "end"


class FrozenLakeTask:
    """Deterministic Frozen Lake on one map, with π\\*, trajectories, prompts and metrics.

    Args:
        map_spec: the map (anything :func:`parse_map` accepts); default :data:`DEFAULT_MAP`.
        gamma: discount of the value iteration that defines π\\* (0 < gamma < 1).
    """

    def __init__(self, map_spec: MapSpec = DEFAULT_MAP, gamma: float = DEFAULT_GAMMA):
        if not 0.0 < gamma < 1.0:
            raise ValueError(
                f"FrozenLakeTask: gamma must be in (0, 1) so that shorter paths are strictly better, got {gamma}"
            )
        self.rows: Tuple[str, ...] = tuple(parse_map(map_spec))
        self.gamma = float(gamma)
        self.nrow, self.ncol = len(self.rows), len(self.rows[0])
        self.n_states = self.nrow * self.ncol
        flat = "".join(self.rows)
        self.start_state = flat.index("S")
        self.goal_state = flat.index("G")
        self._tiles = flat
        self._q: Optional[np.ndarray] = None
        self._prefixes: Optional[Dict[int, str]] = None

    def __repr__(self) -> str:
        return f"FrozenLakeTask({MAP_SEPARATOR.join(self.rows)!r}, gamma={self.gamma})"

    # ----- geometry -----------------------------------------------------------------
    def to_state(self, row: int, col: int) -> int:
        """Gymnasium's state index of a tile."""
        return row * self.ncol + col

    def to_rowcol(self, state: int) -> Tuple[int, int]:
        """(row, col) of a state index."""
        return divmod(int(state), self.ncol)

    def tile(self, state: int) -> str:
        """The tile letter (``S``, ``F``, ``H``, ``G``) of a state."""
        return self._tiles[state]

    def is_terminal(self, state: int) -> bool:
        """Holes and the goal end an episode."""
        return self._tiles[state] in "HG"

    # ----- dynamics -----------------------------------------------------------------
    def step(self, state: int, action: Union[int, str]) -> Tuple[int, float, bool]:
        """``(next_state, reward, terminated)`` of one move, as Gymnasium's non-slippery table.

        ``action`` is an index 0..3 or a token ``L``/``D``/``R``/``U``. Moving into the border
        leaves the agent in place. Stepping from a hole or the goal stays there with reward 0.
        """
        index = self._action_index(action)
        if self.is_terminal(state):
            return int(state), 0.0, True
        row, col = self.to_rowcol(state)
        dr, dc = MOVES[index]
        row = min(max(row + dr, 0), self.nrow - 1)
        col = min(max(col + dc, 0), self.ncol - 1)
        nxt = self.to_state(row, col)
        return nxt, (1.0 if nxt == self.goal_state else 0.0), self.is_terminal(nxt)

    @staticmethod
    def _action_index(action: Union[int, str]) -> int:
        if isinstance(action, str):
            if action not in ACTION_INDEX:
                raise ValueError(f"Frozen Lake action {action!r} is not one of {list(ACTIONS)}")
            return ACTION_INDEX[action]
        index = int(action)
        if not 0 <= index < 4:
            raise ValueError(f"Frozen Lake action index {action} is not in 0..3 ({ACTIONS})")
        return index

    def run(self, actions: Union[str, Sequence[int]], max_steps: Optional[int] = None) -> Episode:
        """Execute ``actions`` from ``S`` until a hole, the goal or the end of the string.

        An invalid character ends the episode as a failure (``outcome="invalid"``); characters
        after the end of the episode are ignored. With ``max_steps`` the episode stops after
        that many moves (``outcome="truncated"`` if it had not ended).
        """
        state, path, outcome = self.start_state, [self.start_state], "end"
        for item in actions:
            if max_steps is not None and len(path) - 1 >= max_steps:
                outcome = "truncated"
                break
            if isinstance(item, str):
                if item not in ACTION_INDEX:
                    outcome = "invalid"
                    break
                index = ACTION_INDEX[item]
            else:
                index = self._action_index(item)
            state, _, terminated = self.step(state, index)
            path.append(state)
            if terminated:
                outcome = "goal" if state == self.goal_state else "hole"
                break
        success = outcome == "goal"
        return Episode(success, len(path) - 1, state, 1.0 if success else 0.0, tuple(path), outcome)

    # ----- graph search -------------------------------------------------------------
    def _successors(self, state: int) -> List[Tuple[int, int]]:
        """(action, next_state) pairs that move the agent (border bumps left out)."""
        out = []
        for action in range(4):
            nxt, _, _ = self.step(state, action)
            if nxt != state:
                out.append((action, nxt))
        return out

    def _bfs_path(self, start: int, banned: frozenset = frozenset()) -> Optional[str]:
        """Shortest action string from ``start`` to G avoiding ``banned`` states (ties: L<D<R<U)."""
        parent: Dict[int, Tuple[int, int]] = {}
        seen, queue = {start}, deque([start])
        while queue:
            state = queue.popleft()
            if state == self.goal_state:
                actions = []
                while state != start:
                    state, action = parent[state]
                    actions.append(ACTIONS[action])
                return "".join(reversed(actions))
            if self.is_terminal(state):
                continue
            for action, nxt in self._successors(state):
                if nxt not in seen and nxt not in banned:
                    seen.add(nxt)
                    parent[nxt] = (state, action)
                    queue.append(nxt)
        return None

    def reachable_states(self) -> List[int]:
        """Non-terminal states reachable from ``S`` (sorted; ``S`` included)."""
        return sorted(self.state_prefixes())

    def state_prefixes(self) -> Dict[int, str]:
        """{state: shortest action prefix from ``S`` reaching it} for every reachable
        non-terminal state, in breadth-first order (ties: L < D < R < U at each step).
        The LM's action distribution at ``s`` is read after ``prompt() + prefix``."""
        if self._prefixes is None:
            prefixes = {self.start_state: ""}
            queue = deque([self.start_state])
            while queue:
                state = queue.popleft()
                for action, nxt in self._successors(state):
                    if nxt not in prefixes and not self.is_terminal(nxt):
                        prefixes[nxt] = prefixes[state] + ACTIONS[action]
                        queue.append(nxt)
            self._prefixes = prefixes
        return dict(self._prefixes)

    def num_shortest_paths(self) -> int:
        """How many distinct shortest action strings lead from ``S`` to ``G``."""
        dist, count = {self.start_state: 0}, {self.start_state: 1}
        queue = deque([self.start_state])
        while queue:
            state = queue.popleft()
            if self.is_terminal(state):
                continue
            for _, nxt in self._successors(state):
                if nxt not in dist:
                    dist[nxt], count[nxt] = dist[state] + 1, count[state]
                    queue.append(nxt)
                elif dist[nxt] == dist[state] + 1:
                    count[nxt] += count[state]
        return count.get(self.goal_state, 0)

    # ----- optimal behaviour --------------------------------------------------------
    def q_values(self) -> np.ndarray:
        """``Q*[s, a]`` (shape ``[n_states, 4]``) by value iteration; 0 on terminal states."""
        if self._q is None:
            transitions = [[self.step(s, a) for a in range(4)] for s in range(self.n_states)]
            values = np.zeros(self.n_states)
            q = np.zeros((self.n_states, 4))
            for _ in range(10 * self.n_states + 1000):
                for s in range(self.n_states):
                    if self.is_terminal(s):
                        continue
                    for a, (nxt, reward, terminated) in enumerate(transitions[s]):
                        q[s, a] = reward + (0.0 if terminated else self.gamma * values[nxt])
                new_values = q.max(axis=1)
                change = np.max(np.abs(new_values - values))
                values = new_values
                if change < 1e-13:
                    break
            self._q = q
        return self._q.copy()

    def state_values(self) -> np.ndarray:
        """``V*[s] = max_a Q*[s, a]`` (``gamma ** (d - 1)`` for a state at distance d from G)."""
        return self.q_values().max(axis=1)

    def optimal_actions(self, state: int) -> Tuple[int, ...]:
        """``A*(s)``: actions within :data:`TIE_TOLERANCE` of the best Q-value."""
        q = self.q_values()[state]
        return tuple(int(a) for a in np.flatnonzero(q >= q.max() - TIE_TOLERANCE))

    def optimal_policy(self) -> Dict[int, np.ndarray]:
        """π\\*: {reachable non-terminal state: probabilities over L, D, R, U}, uniform over
        the optimal actions ``A*(s)`` (see the module docstring)."""
        policy = {}
        for state in self.reachable_states():
            probs = np.zeros(4)
            best = self.optimal_actions(state)
            probs[list(best)] = 1.0 / len(best)
            policy[state] = probs
        return policy

    def optimal_trajectory(self, require_unique: bool = True) -> str:
        """The action string of the shortest path from ``S`` to ``G``.

        With ``require_unique`` (default) a map with several shortest paths is an error,
        since the paper's check needs exactly one; otherwise the first in L<D<R<U order.
        """
        count = self.num_shortest_paths()
        if require_unique and count != 1:
            raise ValueError(
                f"Frozen Lake map {MAP_SEPARATOR.join(self.rows)!r} has {count} shortest paths from S to G; the "
                f"sanity check needs exactly one: add holes to break the ties, use DEFAULT_MAP "
                f"({MAP_SEPARATOR.join(DEFAULT_MAP)!r}), or pass require_unique=False"
            )
        path = self._bfs_path(self.start_state)
        assert path is not None  # validate_map guarantees that G is reachable
        return path

    def suboptimal_trajectory(self) -> str:
        """A clearly longer path that still reaches ``G``.

        Definition: the shortest path from ``S`` to ``G`` that visits none of the optimal
        path's intermediate states (a different route, not a detour that rejoins it). If
        there is none, the shortest path whose first move differs from the optimal first
        move and never comes back to ``S``. Ties are broken in L < D < R < U order.
        Raises ``ValueError`` if neither exists (e.g. a corridor map).
        """
        optimal = self.optimal_trajectory(require_unique=False)
        visited = self.run(optimal).path
        path = self._bfs_path(self.start_state, banned=frozenset(visited[1:-1]))
        if path is not None:
            return path
        candidates = []
        for action, nxt in self._successors(self.start_state):
            if ACTIONS[action] == optimal[0] or self.tile(nxt) == "H":
                continue
            rest = "" if nxt == self.goal_state else self._bfs_path(nxt, banned=frozenset({self.start_state}))
            if rest is not None:
                candidates.append(ACTIONS[action] + rest)
        if not candidates:
            raise ValueError(
                f"Frozen Lake map {MAP_SEPARATOR.join(self.rows)!r} has no sub-optimal path to G (every way to G "
                f"starts with the optimal move and shares its route); open another route by turning H tiles into F"
            )
        return min(candidates, key=lambda text: (len(text), [ACTIONS.index(c) for c in text]))

    def rejected_trajectory(self) -> str:
        """The rejected response of DPO and ORPO: :meth:`away_trajectory` (never optimal at any
        state it passes), or, on a map where every move out of ``S`` is optimal,
        :meth:`suboptimal_trajectory` (a longer path to ``G``, mostly optimal moves)."""
        try:
            return self.away_trajectory()
        except ValueError:
            return self.suboptimal_trajectory()

    def away_trajectory(self) -> str:
        """A rejected path whose every move is NOT optimal where it is taken (never in ``A*(s)``).

        Why not a path to ``G``: on a grid every step between two ice tiles changes the distance
        to ``G`` by exactly one (neighbours differ in chessboard colour, so in the parity of
        their distance), and the optimal moves are the ones that shorten it. A
        path that reaches ``G`` with ``k`` lengthening moves and ``b`` border bumps therefore
        has ``d(S) + k`` optimal moves against ``k + b`` non-optimal ones: unless it bumps the
        border ``d(S)`` times, most of its moves are π\\*'s own, whatever the map, and DPO pushes
        them down (:meth:`suboptimal_trajectory` on the wall map: 6 of 7).

        Definition: from ``S``, only moves that lead further from ``G`` (to a state of lower
        ``V*``, so no state repeats), optionally closed by a step into a hole; the longest such
        path, then one that ends in a hole, then the first in L < D < R < U order. It fails
        (reward 0, or ends on the ice) and shares only ``S`` with the optimal path.
        Raises ``ValueError`` if every move from ``S`` that moves it is optimal.
        """
        values = self.state_values()
        best: Dict[int, Tuple[int, int, str]] = {}  # state -> (-moves, hole last? 0 : 1, text)

        def longest(state: int) -> Tuple[int, int, str]:
            if state not in best:
                options = [(0, 1, "")]
                for action, nxt in self._successors(state):
                    if action in self.optimal_actions(state):
                        continue
                    if self.tile(nxt) == "H":
                        options.append((-1, 0, ACTIONS[action]))
                    elif not self.is_terminal(nxt) and values[nxt] < values[state] - TIE_TOLERANCE:
                        moves, hole, text = longest(nxt)
                        options.append((moves - 1, hole, ACTIONS[action] + text))
                best[state] = min(options, key=lambda o: (o[0], o[1], [ACTIONS.index(c) for c in o[2]]))
            return best[state]

        path = longest(self.start_state)[2]
        if not path:
            raise ValueError(
                f"Frozen Lake map {MAP_SEPARATOR.join(self.rows)!r}: every move from S is optimal or a bump, "
                f"so no rejected path can be non-optimal at every state; add room behind S"
            )
        return path

    # ----- text for the language model ----------------------------------------------
    def prompt(self) -> str:
        """The map rows joined by ``/`` and closed by ``:``, e.g. ``"SFFF/FFHF/FFHG/FFFF:"``."""
        return MAP_SEPARATOR.join(self.rows) + PROMPT_END

    @classmethod
    def from_prompt(cls, prompt: str, gamma: float = DEFAULT_GAMMA) -> "FrozenLakeTask":
        """The task whose :meth:`prompt` is ``prompt``."""
        return cls(map_from_prompt(prompt), gamma=gamma)

    def response_for(self, actions: Union[str, Sequence[int]]) -> str:
        """The response text of an action sequence (indices or tokens), e.g. ``"RRRDD"``."""
        return "".join(ACTIONS[self._action_index(a)] for a in actions)

    def query_texts(self) -> Dict[int, str]:
        """{state: ``prompt() + state_prefixes()[state]``}: where the LM's policy is read."""
        prompt = self.prompt()
        return {state: prompt + prefix for state, prefix in self.state_prefixes().items()}

    def collect_action_probs(self, next_action_probs: Callable[[List[str]], Any]) -> Dict[int, np.ndarray]:
        """{state: probabilities over L, D, R, U} from a batched function.

        ``next_action_probs(texts)`` must return an array ``[len(texts), 4]``: for each text,
        the LM's next-token probabilities of ``L``, ``D``, ``R``, ``U`` (e.g. the output of
        :func:`action_probs_from_logits`). Rows are renormalised to sum to 1.
        """
        return probs_at_texts(self.query_texts(), next_action_probs, "collect_action_probs")

    def sft_example(self) -> Dict[str, str]:
        """The only training example of SFT and IFT: ``{"prompt", "response"}`` (optimal)."""
        return {"prompt": self.prompt(), "response": self.optimal_trajectory()}

    def preference_example(self) -> Dict[str, str]:
        """A preference pair with a rejected path that still reaches ``G``: ``response`` = optimal,
        ``rejected`` = :meth:`suboptimal_trajectory`. DPO and ORPO train on
        :meth:`rejected_trajectory` instead (``FrozenLakeDataModule``), which is never optimal."""
        return {
            "prompt": self.prompt(),
            "response": self.optimal_trajectory(),
            "rejected": self.suboptimal_trajectory(),
        }

    def score(self, response: str) -> float:
        """The environment's reward of a response: 1.0 if it reaches ``G``, else 0.0."""
        return self.run(response).reward


    def uniform_policy(self) -> Dict[int, np.ndarray]:
        """{reachable non-terminal state: [0.25] * 4}."""
        return {s: np.full(4, 0.25) for s in self.reachable_states()}
