"""The reward interface and a guard that runs any reward safely.

A reward scores a batch of rollouts at once::

    reward(prompts: list[str], responses: list[str], examples: list[dict]) -> list[float]

``examples`` are the data rows the prompts came from (gold ``answer``, test cases, ...),
one per prompt. Any callable with that signature works; :class:`Reward` is the optional
base class that documents it. :func:`score_safely` is what the PPO objective calls: a
reward that raises becomes a clear error (a bug in the reward); a nan/inf score, or a
whole batch whose reward did not return within the time limit, becomes a counted,
warned-about 0 and training goes on.

With a time limit the reward runs in a daemon thread (:mod:`ift.rewards.stoppable_call`);
a call that overruns it is stopped, a busy ``while True: pass`` included, so it neither
holds the GIL for the rest of the run nor keeps the process from exiting. Only a call
stuck inside native code (a long sleep, a blocking read, a C extension) cannot be stopped
until that native call returns; the warning says so and counts such calls. Rewards that
execute code or call services should still put their own time limit inside, e.g. run the
code in a subprocess with a timeout (:mod:`ift.rewards.code`); ``timeout_s`` is the safety
net behind that.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ift.rewards.stoppable_call import STOP_GRACE_S, DeadlinePassed, call_with_deadline

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
    trains on the tokens after that point (``ift.objectives.rollout_steps.cut_at_episode_ends``).
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


def _example_label(prompts: Sequence[str], examples: Sequence[Dict[str, Any]], i: int = 0) -> str:
    """Where item ``i`` of a batch came from: its index, its example's id if any, its prompt."""
    index = f"{i} of the batch"
    if i < len(examples) and isinstance(examples[i], dict):
        for key in ("index", "idx", "id"):
            if key in examples[i]:
                index = f"{i} of the batch (example {key}={examples[i][key]!r})"
                break
    prompt = prompts[i] if i < len(prompts) else ""
    shown = prompt if len(prompt) <= 200 else prompt[:200] + "..."
    return f"index {index}, prompt {shown!r}"


def _first_example_label(prompts: Sequence[str], examples: Sequence[Dict[str, Any]]) -> str:
    return f"first example: {_example_label(prompts, examples, 0)}"


#: How to give a slow reward more time, in the words of the command line and the config.
RAISE_LIMIT_HINT = (
    "If the reward is only slow (e.g. a reward-model forward on a large batch on CPU), raise "
    "the limit: --model.objective.init_args.reward_timeout_s=600 (in a config: reward_timeout_s "
    "in the PPO objective's init_args; null waits for ever). If it hangs, give it its own time "
    "limit (run code in a subprocess with a timeout, as ift.rewards.code does)."
)


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


def _timeout_message(name: str, timeout_s: float, n: int, where: str, late: DeadlinePassed, outcome: str) -> str:
    """What happened (did the call stop?), what it cost (``outcome``) and how to fix it."""
    said = f"Reward {name} did not return within {timeout_s:g} s for a batch of {n} responses ({where})"
    if late.stopped:
        said += "; the call was stopped."
    else:
        said += (
            f", and it could NOT be stopped within {STOP_GRACE_S:g} s: it is inside native code "
            "(a long sleep, a blocking read or lock wait, a C extension) that Python cannot interrupt, "
            "or it catches BaseException and carries on. "
            "It keeps running in a background daemon thread (it does not keep the process from exiting) "
            f"and stops as soon as that native call returns; {late.still_running} reward call(s) that "
            "could not be stopped are still running in this process."
        )
    return f"{said} {outcome}{RAISE_LIMIT_HINT}"


def score_safely(
    reward: RewardFn,
    prompts: Sequence[str],
    responses: Sequence[str],
    examples: Sequence[Dict[str, Any]],
    timeout_s: Optional[float] = None,
    on_timeout: str = "zero",
    keep_non_finite: bool = False,
) -> RewardScores:
    """Run ``reward`` on one batch and check what it returns.

    Args:
        reward: any ``(prompts, responses, examples) -> B floats`` callable.
        prompts, responses, examples: ``B`` each.
        timeout_s: if set, run the reward in a daemon thread and give up after this many
            seconds; the call is then stopped (:func:`~ift.rewards.stoppable_call.call_with_deadline`:
            Python code stops at once, a call stuck in native code when that returns).
            None: call it directly and wait for it.
        on_timeout: ``"zero"`` (default): a batch that timed out scores 0 for every item,
            with a :class:`RewardTimeoutWarning`; ``"raise"``: raise :class:`RewardTimeoutError`.
            Either message names the reward, says whether the call could be stopped and
            how to raise the limit.
        keep_non_finite: leave nan/inf scores as they are (still counted and warned about)
            instead of replacing them by 0: an objective that leaves unscorable responses
            out of a group baseline needs to know which they were.

    Returns:
        :class:`RewardScores` ``(scores, n_nan, timed_out)``: ``B`` Python floats, with
        every nan/inf replaced by 0; how many were replaced (a warning is issued when any
        were); whether the batch timed out.

    Raises:
        ValueError: inputs of different lengths, or a result of the wrong length.
        TypeError: a result that is not an ordered sequence of numbers.
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
    except DeadlinePassed as late:
        assert timeout_s is not None  # only a timed call has a deadline
        if on_timeout == "raise":
            raise RewardTimeoutError(_timeout_message(name, timeout_s, n, where, late, "")) from None
        message = _timeout_message(name, timeout_s, n, where, late, "Every response of this batch was scored 0. ")
        warnings.warn(message, RewardTimeoutWarning, stacklevel=2)
        return RewardScores([0.0] * n, 0, True)
    scores, non_finite = _finite_scores(_score_list(raw, name, n, where), name, prompts, examples, keep_non_finite)
    if non_finite:
        shown = ", ".join(str(i) for i in non_finite[:5]) + (", ..." if len(non_finite) > 5 else "")
        warnings.warn(
            f"Reward {name} returned {len(non_finite)} non-finite score(s) (nan/inf) in a batch of {n}, "
            f"at position(s) {shown}; {'they were left out' if keep_non_finite else 'they were replaced by 0'} (first of them: "
            f"{_example_label(prompts, examples, non_finite[0])}). Make the reward return a finite "
            "float for every response (e.g. its lowest score for one it cannot judge).",
            RuntimeWarning,
            stacklevel=2,
        )
    return RewardScores(scores, len(non_finite), False)


def _call_reward(reward: Any, args: tuple, timeout_s: Optional[float], name: str, where: str) -> Any:
    """The reward's raw result; a timeout (:class:`DeadlinePassed`) passes through, any other
    exception becomes a RuntimeError that names the reward and the batch's first example."""
    try:
        if timeout_s is None:
            return reward(*args)
        return call_with_deadline(reward, args, timeout_s, thread_name=f"reward-{name}")
    except DeadlinePassed:
        raise
    except Exception as exc:
        raise RuntimeError(
            f"Reward {name} raised {type(exc).__name__}: {exc} while scoring a batch of {len(args[0])} "
            f"responses ({where}). Call the reward directly on this example to debug it; "
            "check that every example carries the fields the reward reads (e.g. 'answer') "
            "and that it accepts (prompts: list[str], responses: list[str], examples: list[dict])."
        ) from exc


_RETURN_HINT = "one float per response, in the order of the responses (a list, tuple, 1-D tensor or array)"


def _score_list(raw: Any, name: str, n: int, where: str) -> Sequence[Any]:
    """``raw`` as a sequence of ``n`` items (tensors and arrays flattened to a list)."""
    shape = ""
    if hasattr(raw, "tolist") and not isinstance(raw, (list, tuple)):  # torch / numpy
        if hasattr(raw, "shape"):
            shape = f" (a {type(raw).__name__} of shape {tuple(raw.shape)})"
        raw = raw.reshape(-1).tolist() if hasattr(raw, "reshape") else raw.tolist()
    if raw is None:
        raise TypeError(f"Reward {name} returned None for a batch of {n} responses; does its __call__ "
                        f"lack a return statement? It must return {_RETURN_HINT}")
    if isinstance(raw, (dict, set, frozenset)) or (hasattr(raw, "keys") and hasattr(raw, "values")):
        # A mapping or a set has a length but no order that matches the responses'.
        raise TypeError(f"Reward {name} returned a {type(raw).__name__}, which has no order; it must return "
                        f"{_RETURN_HINT}")
    if isinstance(raw, (str, bytes)) or not hasattr(raw, "__len__") or not hasattr(raw, "__getitem__"):
        raise TypeError(f"Reward {name} must return a list of {n} floats, got {type(raw).__name__}; "
                        f"return {_RETURN_HINT}")
    if len(raw) != n:
        raise ValueError(
            f"Reward {name} returned {len(raw)} scores{shape} for a batch of {n} responses ({where}); "
            f"it must return exactly {_RETURN_HINT}"
        )
    return raw


def _finite_scores(raw: Sequence[Any], name: str, prompts: Sequence[str],
                   examples: Sequence[Dict[str, Any]], keep_non_finite: bool = False) -> Tuple[List[float], List[int]]:
    """``(scores, non_finite)``: every item as a float, nan/inf replaced by 0 (unless
    ``keep_non_finite``), and their positions."""
    scores: List[float] = []
    non_finite: List[int] = []
    for i, value in enumerate(raw):
        problem = None
        if isinstance(value, (str, bytes)):  # float("0.5") would pass: text is a bug in the reward
            problem = "text, not a number"
        else:
            try:
                score = float(value)
            except (TypeError, ValueError) as exc:
                problem = f"not a number ({exc})"
        if problem is not None:
            raise TypeError(
                f"Reward {name} returned {value!r} (a {type(value).__name__}) at position {i} "
                f"({_example_label(prompts, examples, i)}): {problem}; every score must be one "
                "int or float (or a one-element tensor)"
            )
        if not math.isfinite(score):
            non_finite.append(i)
            score = score if keep_non_finite else 0.0
        scores.append(score)
    return scores, non_finite
