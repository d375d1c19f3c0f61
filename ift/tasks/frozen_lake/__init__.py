"""The Frozen Lake sanity check of the IFT paper (§5.3): a tiny language model learns to walk
a deterministic Frozen Lake map with every objective, and is compared with the optimal
policy π* from value iteration.

One job per file:

* ``maps``: tiles, actions and map text (parsing, validation);
* ``env``: :class:`FrozenLakeTask` (dynamics, π*, trajectories, prompts, episodes);
* ``distributions``: action distributions over ``L, D, R, U`` (conversion, checks);
* ``metrics``: MSE to π*, total variation, moved states, the greedy episode, and
  :func:`evaluate` (all of them, for a ``{state: probs}`` policy or a language model);
* ``exploration``: π* on every state, episodes sampled from a policy, explored states;
* ``queries``: where a language model is asked for its action distribution;
* ``policies``: the two policies (the paper's state MLP, the character transformer);
* ``lm_policy``: a language model read as a policy through its action tokens;
* ``data``: :class:`FrozenLakeDataModule` (what each objective sees);
* ``reward``: the environment's reward (:func:`frozen_lake_reward`, :class:`FrozenLakeReward`);

The comparison itself (the callback that evaluates a policy while it trains, plots, the
``ift fit`` config of each objective, results, the claims and ``ift frozen-lake``) is lab
code: :mod:`ift.lab.frozen_lake`.

In YAML the classes are named ``ift.tasks.frozen_lake.FrozenLakeDataModule`` and
``ift.tasks.frozen_lake.FrozenLakeReward``.
"""

from ift.tasks.frozen_lake.data import FrozenLakeDataModule
from ift.tasks.frozen_lake.distributions import action_probs_from_logits
from ift.tasks.frozen_lake.env import DEFAULT_GAMMA, TIE_TOLERANCE, Episode, FrozenLakeTask
from ift.tasks.frozen_lake.lm_policy import action_token_ids, lm_action_probs, lm_policy
from ift.tasks.frozen_lake.maps import (
    ACTIONS,
    DEFAULT_MAP,
    DOWN,
    LEFT,
    RIGHT,
    UP,
    VOCAB,
    MapError,
    map_from_prompt,
    parse_map,
    validate_map,
)
from ift.tasks.frozen_lake.exploration import explored_mse, explored_states, optimal_policy_everywhere, sample_visits
from ift.tasks.frozen_lake.metrics import (
    EXPLORED_THRESHOLD,
    evaluate,
    greedy_episode,
    mean_total_variation,
    moved_states,
    mse_to_optimal,
    total_variation,
)
from ift.tasks.frozen_lake.reward import FrozenLakeReward, frozen_lake_reward
from ift.tasks.frozen_lake.state_policy import (
    STATE_CHARS,
    STATE_TOKENIZER,
    FrozenLakeStateConfig,
    FrozenLakeStatePolicy,
    state_text,
    state_token_id,
    states_from_text,
)

__all__ = [
    "ACTIONS",
    "DEFAULT_GAMMA",
    "DEFAULT_MAP",
    "DOWN",
    "EXPLORED_THRESHOLD",
    "Episode",
    "FrozenLakeDataModule",
    "FrozenLakeReward",
    "FrozenLakeStateConfig",
    "FrozenLakeStatePolicy",
    "FrozenLakeTask",
    "LEFT",
    "MapError",
    "RIGHT",
    "STATE_CHARS",
    "STATE_TOKENIZER",
    "TIE_TOLERANCE",
    "UP",
    "VOCAB",
    "action_probs_from_logits",
    "action_token_ids",
    "evaluate",
    "explored_states",
    "explored_mse",
    "moved_states",
    "optimal_policy_everywhere",
    "sample_visits",
    "frozen_lake_reward",
    "greedy_episode",
    "lm_action_probs",
    "lm_policy",
    "map_from_prompt",
    "mean_total_variation",
    "mse_to_optimal",
    "parse_map",
    "state_text",
    "state_token_id",
    "states_from_text",
    "total_variation",
    "validate_map",
]
