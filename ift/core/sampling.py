"""The sampling seam of rollout objectives: one small interface between an objective and the
engine that samples responses.

A :class:`Sampler` takes left-padded prompt ids, their mask and :class:`SamplingSettings`
(temperature, top-p, length limit, seed) and returns :class:`SampledTokens`: the new tokens
(pad after a row's first EOS), their log-probs when the engine reports them (None
otherwise) and whether each row finished with EOS. :meth:`Sampler.load_weights` hands the
engine the policy's current weights before a rollout; an engine that samples from the
policy module itself (:class:`HFSampler`) has nothing to do there.

:class:`HFSampler`, the default, is Hugging Face ``generate`` with the KV cache
(:func:`ift.core.generation.generate_responses`) on a private random stream seeded from
``settings.seed``: the global RNG is left untouched, so sampling is reproducible and
resumable. Another engine (vLLM, a server) is one subclass more, and a rollout objective
takes it through its ``sampler`` argument without any change to the objective.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional

import torch

from ift.core.generation import generate_responses


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample one batch of responses.

    Args:
        max_new_tokens: longest response.
        temperature: softmax temperature (> 0).
        top_p: nucleus sampling mass (1.0: off).
        seed: seed of this batch's private random stream; None draws from the global RNG.
        use_cache: decode with the KV cache (False only for benchmarks).
    """

    max_new_tokens: int = 32
    temperature: float = 1.0
    top_p: float = 1.0
    seed: Optional[int] = None
    use_cache: bool = True


@dataclass
class SampledTokens:
    """What a sampler returns for ``B`` prompts."""

    #: ``B x R`` long: the new tokens only, ``pad_token_id`` after a row's first EOS.
    ids: torch.Tensor
    #: ``B x R`` float32 log-probs of the sampled tokens under the engine's distribution, or
    #: None when the engine does not report them (rollout objectives recompute them anyway).
    logprobs: Optional[torch.Tensor]
    #: ``B`` bool: whether each row emitted EOS (False: it hit ``max_new_tokens``).
    finished: torch.Tensor


class Sampler:
    """Base of sampling engines (see the module docstring).

    Subclasses implement :meth:`sample`; :meth:`load_weights` is a no-op unless the engine
    keeps its own copy of the weights.
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # A sampler is held by its objective, which is pickled in the module's
        # hyper-parameters: allow it under torch.load's default weights_only=True.
        super().__init_subclass__(**kwargs)
        torch.serialization.add_safe_globals([cls])

    def load_weights(self, policy: torch.nn.Module) -> None:
        """Bring the engine up to date with ``policy``'s weights (called before every rollout)."""

    def close(self) -> None:
        """Release the engine (processes, memory, files); a no-op unless the engine holds any.
        ``FineTuneModule`` calls it when fit ends."""

    def sample(self, policy: torch.nn.Module, tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
               settings: SamplingSettings) -> SampledTokens:
        """Sample one response per row of ``prompt_ids`` (``B x P``, left-padded) with ``settings``."""
        raise NotImplementedError(f"{type(self).__name__} must implement sample(policy, tokenizer, ids, mask, settings)")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class HFSampler(Sampler):
    """Hugging Face ``generate`` on the policy module itself, with the KV cache (when
    ``settings.use_cache``), on a private random stream seeded with ``settings.seed``.

    It reports no log-probs (``generate`` would have to keep every step's scores).

    Args:
        greedy: decode greedily instead of sampling (comparisons between engines, evaluation).
    """

    def __init__(self, greedy: bool = False):
        self.greedy = bool(greedy)

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.__dict__.setdefault("greedy", False)  # pickled before the argument existed

    def __repr__(self) -> str:
        return "HFSampler(greedy=True)" if getattr(self, "greedy", False) else "HFSampler()"

    def sample(self, policy: torch.nn.Module, tokenizer: Any, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor,
               settings: SamplingSettings) -> SampledTokens:
        eos = tokenizer.eos_token_id
        with seeded_rng(settings.seed, prompt_ids.device):
            ids, _ = generate_responses(
                policy,
                prompt_ids,
                prompt_mask,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
                max_new_tokens=settings.max_new_tokens,
                do_sample=not getattr(self, "greedy", False),
                temperature=settings.temperature,
                top_p=settings.top_p,
                use_cache=settings.use_cache,
            )
        return SampledTokens(ids=ids, logprobs=None, finished=(ids == eos).any(-1))


@contextlib.contextmanager
def seeded_rng(seed: Optional[int], device: torch.device) -> Iterator[None]:
    """Run the body on a private RNG stream seeded with ``seed``; the global RNG state is left
    untouched. ``seed`` None runs the body on the global stream."""
    if seed is None:
        yield
        return
    devices: Optional[List[int]] = []
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def samplers_in(objective: Any) -> List[Sampler]:
    """Every :class:`Sampler` an objective holds, through recipes' stages and parts."""
    found: List[Sampler] = []
    seen = set()

    def walk(value: Any, depth: int) -> None:
        if id(value) in seen or depth > 6:
            return
        seen.add(id(value))
        if isinstance(value, Sampler):
            found.append(value)
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, depth + 1)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item, depth + 1)
        elif hasattr(value, "__dict__") and not isinstance(value, (torch.nn.Module, torch.Tensor, type)):
            for item in vars(value).values():
                walk(item, depth + 1)

    walk(objective, 0)
    return found


torch.serialization.add_safe_globals([Sampler, SamplingSettings])
