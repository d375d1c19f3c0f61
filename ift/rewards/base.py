"""The reward interface and a guard that runs any reward safely.

A reward scores a batch of rollouts at once::

    reward(prompts: list[str], responses: list[str], examples: list[dict]) -> list[float]

``examples`` are the data rows the prompts came from (gold ``answer``, test cases, ...),
one per prompt. Any callable with that signature works; :class:`Reward` is the optional
base class that documents it. :func:`score_safely` is what the PPO objective calls: a
reward that raises becomes a clear error (a bug in the reward); a nan/inf score, or a
whole batch whose reward did not return within the time limit, becomes a counted,
warned-about 0 and training goes on.

A hung reward cannot be stopped from Python: the thread that runs it keeps running in
the background (a daemon thread, so it does not keep the process alive) and holds
whatever it holds. Rewards that execute code or call services should put their own time
limit inside, e.g. run the code in a subprocess with a timeout
(:mod:`ift.rewards.code`); ``timeout_s`` is the safety net behind that.
"""

from __future__ import annotations

import math
import threading
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

RewardFn = Callable[[List[str], List[str], List[Dict[str, Any]]], Sequence[float]]


class Reward:
    """Base class of reward functions (a callable protocol).

    Subclasses implement :meth:`__call__`: given ``B`` prompts, the ``B`` generated
    responses (without the prompt, decoded, special tokens removed) and the ``B`` data
    rows they came from, return ``B`` finite floats, higher is better. A reward must not
    modify its inputs and should be deterministic. It runs on every rank under DDP on
    that rank's rollouts.

    A reward whose responses are episodes that end before the text does (an environment
    that ignores the moves after a terminal state) may also define
    ``response_ends(prompts, responses, examples) -> list[int | None]``: per response, how
    many leading characters are the episode (None: all). PPO then neither credits nor
    trains on the tokens after that point (``ift.objectives.ppo_rollout.cut_at_episode_ends``).
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A reward is held by its objective, which is pickled in the module's
        # hyper-parameters: allow it under torch.load's default weights_only=True.
        super().__init_subclass__(**kwargs)
        import torch

        torch.serialization.add_safe_globals([cls])

    def __call__(self, prompts: List[str], responses: List[str], examples: List[Dict[str, Any]]) -> List[float]:
        raise NotImplementedError(f"{type(self).__name__} must implement __call__(prompts, responses, examples)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def reward_name(reward: Any) -> str:
    """A readable name: the class name, or the function's name for plain functions."""
    if isinstance(reward, Reward) or not hasattr(reward, "__name__"):
        return type(reward).__name__
    return getattr(reward, "__qualname__", reward.__name__)


def _first_example_label(prompts: Sequence[str], examples: Sequence[Dict[str, Any]]) -> str:
    index = "0 of the batch"
    if examples and isinstance(examples[0], dict):
        for key in ("index", "idx", "id"):
            if key in examples[0]:
                index = f"0 of the batch (example {key}={examples[0][key]!r})"
                break
    prompt = prompts[0] if prompts else ""
    shown = prompt if len(prompt) <= 200 else prompt[:200] + "..."
    return f"first example: index {index}, prompt {shown!r}"


class RewardTimeoutError(TimeoutError):
    """A reward did not return in time (raised by :func:`score_safely` with ``on_timeout="raise"``)."""


class RewardTimeoutWarning(RuntimeWarning):
    """A reward did not return in time; its batch was scored 0 (:func:`score_safely`)."""


class RewardScores(NamedTuple):
    """What :func:`score_safely` returns."""

    #: ``B`` finite Python floats (0 for nan/inf scores, and for every item of a timed-out batch).
    scores: List[float]
    #: How many scores were nan/inf and replaced by 0.
    n_nan: int
    #: Whether the reward did not return within ``timeout_s`` (then every score is 0).
    timed_out: bool


def _call_with_timeout(reward: Any, args: tuple, timeout_s: float, name: str, where: str) -> Any:
    outcome: Dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = reward(*args)
        except BaseException as exc:  # re-raised in the caller's thread
            outcome["error"] = exc

    thread = threading.Thread(target=target, name=f"reward-{name}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RewardTimeoutError(
            f"Reward {name} did not return within {timeout_s:g} s for a batch of {len(args[0])} "
            f"responses ({where}). It keeps running in a background thread (Python cannot stop a "
            "thread). Make the reward faster (e.g. run code in a subprocess with its own timeout, "
            "as ift.rewards.code does) or raise reward_timeout_s."
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def score_safely(
    reward: RewardFn,
    prompts: Sequence[str],
    responses: Sequence[str],
    examples: Sequence[Dict[str, Any]],
    timeout_s: Optional[float] = None,
    on_timeout: str = "zero",
) -> RewardScores:
    """Run ``reward`` on one batch and check what it returns.

    Args:
        reward: any ``(prompts, responses, examples) -> B floats`` callable.
        prompts, responses, examples: ``B`` each.
        timeout_s: if set, run the reward in a thread and give up after this many seconds.
        on_timeout: ``"zero"`` (default): a batch that timed out scores 0 for every item,
            with a :class:`RewardTimeoutWarning`; ``"raise"``: raise :class:`RewardTimeoutError`.
            Either way the hung call keeps running in its background thread.

    Returns:
        :class:`RewardScores` ``(scores, n_nan, timed_out)``: ``B`` Python floats, with
        every nan/inf replaced by 0; how many were replaced (a warning is issued when any
        were); whether the batch timed out.

    Raises:
        ValueError: inputs of different lengths, or a result of the wrong length.
        TypeError: a result that is not a sequence of numbers.
        RuntimeError: the reward raised (chained to the original exception); the message
            names the reward and the batch's first example. A reward that raises is a bug
            in the reward, not a transient fault: it is never scored 0.
        RewardTimeoutError: (a TimeoutError) only with ``on_timeout="raise"``.
    """
    if on_timeout not in ("zero", "raise"):
        raise ValueError(f"score_safely: on_timeout must be 'zero' or 'raise', got {on_timeout!r}")
    name = reward_name(reward)
    n = len(prompts)
    if len(responses) != n or len(examples) != n:
        raise ValueError(
            f"score_safely({name}): got {n} prompts, {len(responses)} responses and "
            f"{len(examples)} examples; they must be equally many (one each per rollout)"
        )
    args = (list(prompts), list(responses), list(examples))
    where = _first_example_label(prompts, examples)
    try:
        raw = _call_reward(reward, args, timeout_s, name, where)
    except RewardTimeoutError as timeout:
        if on_timeout == "raise":
            raise
        warnings.warn(f"{timeout} Every response of this batch was scored 0.", RewardTimeoutWarning, stacklevel=2)
        return RewardScores([0.0] * n, 0, True)
    scores, n_nan = _finite_scores(_score_list(raw, name, n), name)
    if n_nan:
        warnings.warn(
            f"Reward {name} returned {n_nan} non-finite score(s) (nan/inf) in a batch of {n}; "
            f"they were replaced by 0 ({where})",
            RuntimeWarning,
            stacklevel=2,
        )
    return RewardScores(scores, n_nan, False)


def _call_reward(reward: Any, args: tuple, timeout_s: Optional[float], name: str, where: str) -> Any:
    """The reward's raw result; a timeout passes through, any other exception becomes a
    RuntimeError that names the reward and the batch's first example."""
    try:
        if timeout_s is None:
            return reward(*args)
        return _call_with_timeout(reward, args, timeout_s, name, where)
    except RewardTimeoutError:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"Reward {name} raised {type(exc).__name__}: {exc} while scoring a batch of {len(args[0])} "
            f"responses ({where}). Call the reward directly on this example to debug it; "
            "check that every example carries the fields the reward reads (e.g. 'answer') "
            "and that it accepts (prompts: list[str], responses: list[str], examples: list[dict])."
        ) from exc


def _score_list(raw: Any, name: str, n: int) -> Sequence[Any]:
    """``raw`` as a sequence of ``n`` items (tensors and arrays flattened to a list)."""
    if hasattr(raw, "tolist") and not isinstance(raw, (list, tuple)):  # torch / numpy
        raw = raw.reshape(-1).tolist() if hasattr(raw, "reshape") else raw.tolist()
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__"):
        raise TypeError(f"Reward {name} must return a list of {n} floats, got {type(raw).__name__}")
    if len(raw) != n:
        raise ValueError(
            f"Reward {name} returned {len(raw)} scores for a batch of {n} responses; it must "
            "return exactly one float per response, in order"
        )
    return raw


def _finite_scores(raw: Sequence[Any], name: str) -> Tuple[List[float], int]:
    """``(scores, n_nan)``: every item as a float, nan/inf replaced by 0, and how many were."""
    scores: List[float] = []
    n_nan = 0
    for i, value in enumerate(raw):
        try:
            score = float(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"Reward {name} returned {value!r} (a {type(value).__name__}) at position {i}; "
                "every score must be a number"
            ) from exc
        if not math.isfinite(score):
            n_nan += 1
            score = 0.0
        scores.append(score)
    return scores, n_nan
