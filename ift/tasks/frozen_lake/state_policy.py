"""The IFT paper's Frozen Lake policy (§5.3): a two-layer fully connected network over grid
states, written as a small Hugging Face causal language model whose tokens are states.

**Tokens.** State ``k`` (Gymnasium's ``row * ncol + col``) is the character
``STATE_CHARS[k]``; with the project's character tokenizer :data:`STATE_TOKENIZER` (pad 0,
eos 1, bos 2, unk 3) its token id is ``4 + k``. A prompt is the start state, a response the
states a path visits (then EOS): the path ``RRRD`` on the default map is ``"0"`` → ``"1237"``.

**The network.** ``h = ReLU(W1 x + b1)``, ``a = W2 h + b2``: ``W1`` is an ``nn.Embedding``
(the first linear layer applied to a one-hot state), ``b1`` a separate parameter added after
the embedding, ``W2, b2`` the action head over Gymnasium's actions ``L, D, R, U``. Because
the first layer is linear in the one-hot state, IFT's embedding mix
``(1 - λ) E(x_t) + λ E(x̃_t)`` is the first layer applied to ``(1 - λ) s_t + λ s̃_t``: with
``x̃_t`` the model's greedy next state from ``x_{t-1}``, that is the paper's eq. 37.

**Logits over the vocabulary.** At a position holding state ``s``, the action logits go onto
the destinations of ``s``'s four moves (:meth:`FrozenLakeTask.step`); moves with the same
destination (border bumps) combine by logsumexp, so the probability of a next state is the
total probability of the actions that reach it. Every other token gets :data:`MASK_VALUE`
(finite, so entropies stay finite). At a hole, the goal or any token that is not a state of
the map (pad, eos, bos, unk), EOS gets 0 and everything else the mask: generation ends after
H or G. The destinations depend on the *true* token, so a pass on mixed embeddings (IFT's
pass 2) also needs ``true_input_ids``.

The model is Markov: position ``t`` reads only token ``t``, so it needs no attention, no
positions and no KV cache; generation feeds it the last token only.
"""

from __future__ import annotations

import string
from typing import List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PretrainedConfig, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from ift.core.constants import IGNORE_INDEX
from ift.core.constants import MASK_VALUE
from ift.tasks.frozen_lake.env import FrozenLakeTask
from ift.tasks.frozen_lake.maps import DEFAULT_MAP, MapSpec, parse_map

try:  # transformers >= 5: init functions that skip tensors from_pretrained already loaded
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - older transformers initialise before loading
    _init = None

MODEL_TYPE = "frozen_lake_state_mlp"
#: 64 characters, one per state (8x8 is the largest map): state ``k`` is ``STATE_CHARS[k]``.
STATE_CHARS = string.digits + string.ascii_lowercase + string.ascii_uppercase + "+-"
#: The character tokenizer over the states: specials pad 0, eos 1, bos 2, unk 3, state k = 4 + k.
STATE_TOKENIZER = "char:" + STATE_CHARS
FIRST_STATE_TOKEN_ID = 4
NUM_ACTIONS = 4
PAD_ID, EOS_ID, BOS_ID = 0, 1, 2


def state_text(states: Sequence[int]) -> str:
    """The text of a sequence of states, one character each (``[0, 1, 11]`` → ``"01b"``)."""
    out = []
    for state in states:
        state = int(state)
        if not 0 <= state < len(STATE_CHARS):
            raise ValueError(f"Frozen Lake state {state} has no character: states are 0..{len(STATE_CHARS) - 1}")
        out.append(STATE_CHARS[state])
    return "".join(out)


def states_from_text(text: str) -> List[int]:
    """The states written in ``text`` (inverse of :func:`state_text`)."""
    states = []
    for position, char in enumerate(text):
        index = STATE_CHARS.find(char)
        if index < 0:
            raise ValueError(
                f"Frozen Lake state text {text!r}: character {char!r} at position {position} is not a state; "
                f"states are written with STATE_CHARS ({STATE_CHARS!r}), state k as STATE_CHARS[k]"
            )
        states.append(index)
    return states


def state_token_id(state: int, first_state_token_id: int = FIRST_STATE_TOKEN_ID) -> int:
    """Token id of state ``state`` under :data:`STATE_TOKENIZER` (``4 + state``)."""
    state = int(state)
    if not 0 <= state < len(STATE_CHARS):
        raise ValueError(f"Frozen Lake state {state} has no token: states are 0..{len(STATE_CHARS) - 1}")
    return first_state_token_id + state


class FrozenLakeStateConfig(PretrainedConfig):
    """Config of :class:`FrozenLakeStatePolicy`.

    Args:
        map: the map (anything :func:`~ift.tasks.frozen_lake.maps.parse_map` accepts); kept as
            its rows joined by ``,``. Default: the project's ``DEFAULT_MAP``.
        hidden_size: width of the hidden layer (PPO's value head reads it).
        first_state_token_id: token id of state 0 (4 with :data:`STATE_TOKENIZER`).
        vocab_size: size of the vocabulary (at least ``first_state_token_id`` + the states).
        initializer_range: standard deviation of the normal initial weights of both layers.
        pad_token_id, eos_token_id, bos_token_id: the tokenizer's specials (``build_policy``
            fills them from the tokenizer).
    """

    model_type = MODEL_TYPE

    def __init__(
        self,
        map: Optional[MapSpec] = None,
        hidden_size: int = 64,
        first_state_token_id: int = FIRST_STATE_TOKEN_ID,
        vocab_size: int = FIRST_STATE_TOKEN_ID + len(STATE_CHARS),
        initializer_range: float = 0.1,
        pad_token_id: Optional[int] = PAD_ID,
        eos_token_id: Optional[int] = EOS_ID,
        bos_token_id: Optional[int] = BOS_ID,
        **kwargs,
    ):
        self.map = ",".join(parse_map(map if map is not None else list(DEFAULT_MAP)))
        self.hidden_size = int(hidden_size)
        self.first_state_token_id = int(first_state_token_id)
        self.vocab_size = int(vocab_size)
        self.initializer_range = float(initializer_range)
        # Nothing to tie: the output is over actions, not over the vocabulary.
        kwargs["tie_word_embeddings"] = False
        super().__init__(pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=bos_token_id, **kwargs)


def transition_tables(config: FrozenLakeStateConfig) -> Tuple[List[List[int]], List[bool]]:
    """``(next_token, terminal)`` for every token id: the token of each action's destination
    (``V x 4``) and whether the token ends an episode (holes, the goal, non-state tokens)."""
    task = FrozenLakeTask(config.map)
    first, vocab = config.first_state_token_id, config.vocab_size
    eos = config.eos_token_id
    if config.hidden_size < 1:
        raise ValueError(f"FrozenLakeStateConfig: hidden_size must be >= 1, got {config.hidden_size}")
    if task.n_states > len(STATE_CHARS):
        raise ValueError(f"FrozenLakeStateConfig: the map has {task.n_states} states, at most {len(STATE_CHARS)} fit")
    if first < 0 or first + task.n_states > vocab:
        raise ValueError(
            f"FrozenLakeStateConfig: states need token ids {first}..{first + task.n_states - 1} but vocab_size is "
            f"{vocab}; use the tokenizer {STATE_TOKENIZER!r} (vocab_size {FIRST_STATE_TOKEN_ID + len(STATE_CHARS)})"
        )
    if not isinstance(eos, int) or not 0 <= eos < vocab or first <= eos < first + task.n_states:
        raise ValueError(f"FrozenLakeStateConfig: eos_token_id {eos!r} must be a token id outside the states")
    next_token = [[token] * NUM_ACTIONS for token in range(vocab)]
    terminal = [True] * vocab
    for state in range(task.n_states):
        token = first + state
        terminal[token] = task.is_terminal(state)
        next_token[token] = [first + task.step(state, action)[0] for action in range(NUM_ACTIONS)]
    return next_token, terminal


class StateMoves(nn.Module):
    """The map's dynamics as buffers (recomputed from the config, never saved):
    ``next_token`` (``V x 4``) and ``terminal`` (``V``)."""

    def __init__(self, config: FrozenLakeStateConfig):
        super().__init__()
        self.config = config
        next_token, terminal = transition_tables(config)
        self.register_buffer("next_token", torch.tensor(next_token, dtype=torch.long), persistent=False)
        self.register_buffer("terminal", torch.tensor(terminal, dtype=torch.bool), persistent=False)

    @torch.no_grad()
    def reset(self) -> None:
        """Fill the buffers again (``from_pretrained`` leaves non-persistent buffers empty)."""
        next_token, terminal = transition_tables(self.config)
        self.next_token.copy_(torch.tensor(next_token, dtype=torch.long))
        self.terminal.copy_(torch.tensor(terminal, dtype=torch.bool))


class FrozenLakeStatePolicy(PreTrainedModel, GenerationMixin):
    """Two-layer fully connected policy over Frozen Lake states, as a causal LM over state
    tokens (see the module docstring): embedding + bias, ReLU, a linear action head, and
    logits over the vocabulary that put each action's logit on its destination state.

    ``forward`` takes the usual keywords (``attention_mask``, ``position_ids`` and the cache
    are accepted and ignored: every position reads its own token only) plus
    ``true_input_ids``: the true tokens of a pass on ``inputs_embeds``, which decide the
    destinations.
    """

    config_class = FrozenLakeStateConfig
    base_model_prefix = "frozen_lake"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _supports_cache_class = False  # no KV cache: the model reads the last token only
    _no_split_modules: List[str] = []

    def __init__(self, config: FrozenLakeStateConfig):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.embed_bias = nn.Parameter(torch.zeros(config.hidden_size))
        self.action_head = nn.Linear(config.hidden_size, NUM_ACTIONS)
        self.moves = StateMoves(config)
        self.post_init()

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # generate() would otherwise build a DynamicCache the model never fills.
        return False

    def _init_weights(self, module: nn.Module) -> None:
        """Normal weights (std ``initializer_range``), zero biases, the map's buffers. The
        transformers>=5 init functions skip what ``from_pretrained`` loaded."""
        std = self.config.initializer_range
        normal, zeros = (_init.normal_, _init.zeros_) if _init is not None else (nn.init.normal_, nn.init.zeros_)
        if isinstance(module, nn.Embedding):
            normal(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear):
            normal(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                zeros(module.bias)
        elif isinstance(module, StateMoves):
            module.reset()
        elif isinstance(module, FrozenLakeStatePolicy):
            zeros(module.embed_bias)

    def get_input_embeddings(self) -> nn.Module:
        return self.embed

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.embed = value

    def get_output_embeddings(self) -> None:
        # The head is over actions, not over the vocabulary: nothing to tie, resize or mask.
        return None

    # ----- the policy ---------------------------------------------------------------
    def hidden(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The hidden layer ``ReLU(embedding + b1)`` of (possibly mixed) embeddings."""
        return torch.relu(embeddings + self.embed_bias)

    def action_logits(self, state_token_ids: torch.Tensor) -> torch.Tensor:
        """``... x 4`` float32 action logits (L, D, R, U) at the given state tokens."""
        return self.action_head(self.hidden(self.embed(state_token_ids))).float()

    def action_probs(self, state_token_ids: torch.Tensor) -> torch.Tensor:
        """``... x 4`` action probabilities (L, D, R, U) at the given state tokens."""
        return self.action_logits(state_token_ids).softmax(-1)

    def next_token_logits(self, action_logits: torch.Tensor, state_ids: torch.Tensor) -> torch.Tensor:
        """``... x V`` float32 logits over the vocabulary from ``... x 4`` action logits at
        states ``state_ids`` (see the module docstring)."""
        vocab = self.config.vocab_size
        reached = nn.functional.one_hot(self.moves.next_token[state_ids], vocab).bool()  # ... x 4 x V
        # logsumexp over the actions reaching each token; MASK_VALUE stands in for "none" so
        # that no -inf enters logsumexp (whose gradient is nan when every input is -inf).
        spread = torch.where(reached, action_logits.float().unsqueeze(-1), MASK_VALUE)
        logits = torch.where(reached.any(-2), torch.logsumexp(spread, dim=-2), MASK_VALUE)
        ended = torch.full((vocab,), MASK_VALUE, device=logits.device)
        ended[self.config.eos_token_id] = 0.0
        return torch.where(self.moves.terminal[state_ids].unsqueeze(-1), ended, logits)

    def forward(
        self,
        input_ids: Optional[torch.LongTensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        position_ids: Optional[torch.LongTensor] = None,
        inputs_embeds: Optional[torch.Tensor] = None,
        past_key_values=None,
        use_cache: Optional[bool] = None,
        output_hidden_states: Optional[bool] = None,
        return_dict: Optional[bool] = None,
        logits_to_keep: Union[int, torch.Tensor] = 0,
        true_input_ids: Optional[torch.LongTensor] = None,
        labels: Optional[torch.LongTensor] = None,
        **kwargs,
    ) -> Union[CausalLMOutputWithPast, tuple]:
        """``B x T x V`` float32 next-token logits; ``hidden_states = (embeddings, hidden)``
        with ``output_hidden_states``; the shifted token NLL as ``loss`` with ``labels``."""
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("FrozenLakeStatePolicy: give exactly one of input_ids and inputs_embeds")
        if inputs_embeds is None:
            states, embeddings = input_ids, self.embed(input_ids)
        else:
            if true_input_ids is None:
                raise ValueError(
                    "FrozenLakeStatePolicy: inputs_embeds need true_input_ids, the true state tokens that decide "
                    "which states each position can move to; pass forward(inputs_embeds=..., true_input_ids=...)"
                )
            if tuple(true_input_ids.shape) != tuple(inputs_embeds.shape[:2]):
                raise ValueError(
                    f"FrozenLakeStatePolicy: true_input_ids {tuple(true_input_ids.shape)} must match inputs_embeds' "
                    f"batch and length {tuple(inputs_embeds.shape[:2])}"
                )
            states, embeddings = true_input_ids, inputs_embeds
        hidden = self.hidden(embeddings)
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.next_token_logits(self.action_head(hidden[:, keep]).float(), states[:, keep])
        loss = None
        if labels is not None:
            if labels.shape != states.shape or logits.shape[1] != labels.shape[1]:
                raise ValueError("FrozenLakeStatePolicy: labels need every position's logits (logits_to_keep=0)")
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=IGNORE_INDEX
            )
        wants_hidden = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        output = CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=None, hidden_states=(embeddings, hidden) if wants_hidden else None
        )
        use_dict = return_dict if return_dict is not None else getattr(self.config, "return_dict", True)
        return output if use_dict else output.to_tuple()

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, **kwargs):
        """Only the last token: the next state depends on the current one alone, so this is
        exact with or without ``use_cache`` (there is no cache to keep)."""
        return {"input_ids": input_ids[:, -1:]}


AutoConfig.register(MODEL_TYPE, FrozenLakeStateConfig, exist_ok=True)
AutoModelForCausalLM.register(FrozenLakeStateConfig, FrozenLakeStatePolicy, exist_ok=True)
