"""Batched generation for ``ift predict`` with the project's generation helper, and the
score of each response under ``val/accuracy``'s answer rule."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch

from ift.core.generation import generate_responses
from ift.data import fit_checks
from ift.data.collate import lengths_mask, pad_sequences
from ift.predict.output import PredictionOutput
from ift.predict.policy import LoadedPolicy, PredictError
from ift.predict.prompts import PromptItem, PromptSet
from ift.rewards.answer import AnswerMatchReward, answers_match


@dataclasses.dataclass
class PredictSettings:
    """How ``ift predict`` generates (the command's options of the same names).

    Attributes:
        max_new_tokens: most tokens generated per response.
        temperature: 0 decodes greedily; above 0 samples at this temperature.
        top_p: nucleus sampling's probability mass (sampling only).
        num_samples: responses per prompt (more than 1 needs sampling).
        batch_size: rows (prompt x sample) generated together.
        seed: seed of the sampling; the same seed, settings and prompts give the same output.
        answer_trigger: how answers are read, as :class:`~ift.callbacks.AnswerAccuracy`'s: None for the
            liberal rule, a phrase or list of phrases for ReFT's rule.
        device: where to generate (``cpu``, ``cuda``, ``cuda:1``).
    """

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    num_samples: int = 1
    batch_size: int = 16
    seed: int = 0
    answer_trigger: Optional[Union[str, List[str]]] = None
    device: str = "cpu"

    def check(self) -> None:
        """Stop on settings that cannot be meant, naming the option."""
        for name in ("max_new_tokens", "num_samples", "batch_size"):
            if getattr(self, name) < 1:
                raise PredictError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise PredictError(f"--temperature must be 0 (greedy) or positive, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise PredictError(f"--top_p must be in (0, 1], got {self.top_p}")
        if self.num_samples > 1 and self.temperature == 0:
            raise PredictError(f"--num_samples {self.num_samples} with greedy decoding (--temperature 0) would write "
                               f"the same response {self.num_samples} times; set --temperature above 0 to sample")
        try:
            AnswerMatchReward(trigger=self.answer_trigger)
        except (TypeError, ValueError) as error:
            raise PredictError(f"--answer_trigger {self.answer_trigger!r}: {error}") from None

    @property
    def sampling(self) -> bool:
        return self.temperature > 0


@dataclasses.dataclass
class Prediction:
    """What one ``ift predict`` run did.

    Attributes:
        output: where the lines are (a path, or ``stdout``).
        prompts: prompts answered.
        responses: lines written (prompts x samples).
        scored: responses whose prompt has an answer.
        mean_score: the share of those that match it (``val/accuracy``), None without answers.
        unfinished: responses that hit ``max_new_tokens`` before EOS.
        skipped: records skipped, by reason.
        cut: prompts cut from the left to fit the model's context.
    """

    output: str
    prompts: int
    responses: int
    scored: int
    mean_score: Optional[float]
    unfinished: int
    skipped: Dict[str, int]
    cut: int

    def summary(self) -> str:
        """The one line printed at the end."""
        parts = [f"{self.responses} responses to {self.prompts} prompts"]
        if self.mean_score is not None:
            parts.append(f"mean score {self.mean_score:.4f} over {self.scored} with an answer")
        if self.unfinished:
            parts.append(f"{self.unfinished} stopped at max_new_tokens")
        if self.skipped:
            parts.append(f"{sum(self.skipped.values())} records skipped ({', '.join(f'{why}: {n}' for why, n in self.skipped.items())})")
        if self.cut:
            parts.append(f"{self.cut} prompts cut to fit the context")
        return f"ift predict: {'; '.join(parts)}; written to {self.output}"


def score_response(text: str, answer: str, rule: AnswerMatchReward) -> Tuple[Optional[float], bool]:
    """``(extracted, correct)``: the answer ``rule`` reads from ``text`` and whether it matches
    ``answer``, exactly as :meth:`~ift.callbacks.AnswerAccuracy.hits` (``val/accuracy``) decides."""
    extracted = rule.extract(text)
    return extracted, answers_match(extracted, answer)


def prompt_room(policy: torch.nn.Module, max_new_tokens: int) -> Optional[int]:
    """The most prompt tokens that leave room for ``max_new_tokens`` in the model's positions
    (None when the model does not say how many it has)."""
    return fit_checks.prompt_room(policy, max_new_tokens, option="--max_new_tokens", error=PredictError)


def _rows(items: Sequence[PromptItem], samples: int, batch_size: int) -> Iterator[List[Tuple[PromptItem, int]]]:
    rows = [(item, sample) for item in items for sample in range(samples)]
    for start in range(0, len(rows), batch_size):
        yield rows[start:start + batch_size]


@torch.no_grad()
def predict(loaded: LoadedPolicy, prompts: PromptSet, settings: PredictSettings, output: PredictionOutput) -> Prediction:
    """Generate ``settings.num_samples`` responses per prompt, write one line per response
    to the (opened) ``output`` and commit it; returns what was done."""
    settings.check()
    tokenizer, policy = loaded.tokenizer, loaded.policy.to(settings.device)
    rule = AnswerMatchReward(trigger=settings.answer_trigger)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if eos is None:
        raise PredictError(f"--policy {loaded.source}: the tokenizer has no EOS token, so no response could end; "
                           f"give a tokenizer with one (--tokenizer)")
    # One generator for the whole run: the same seed, prompts and settings give the same lines.
    torch.manual_seed(settings.seed)
    if settings.device.startswith("cuda"):
        torch.cuda.manual_seed_all(settings.seed)
    scored = hits = unfinished = 0
    for rows in _rows(prompts.items, settings.num_samples, settings.batch_size):
        ids = [item.prompt_ids for item, _ in rows]
        responses, _ = generate_responses(
            policy, pad_sequences(ids, pad, "left").to(settings.device), lengths_mask(ids, "left").to(settings.device),
            eos_token_id=eos, pad_token_id=pad, max_new_tokens=settings.max_new_tokens,
            do_sample=settings.sampling, temperature=settings.temperature if settings.sampling else 1.0,
            top_p=settings.top_p,
        )
        finished = (responses == eos).any(dim=-1).tolist()
        # Decoded as val/accuracy decodes: special tokens (EOS, padding) dropped.
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        lines = []
        for (item, sample), text, done in zip(rows, texts, finished):
            line: Dict[str, Any] = {"location": item.location, "sample": sample, "prompt": item.prompt,
                                    "response": text, "finished": bool(done)}
            unfinished += not done
            if item.reference is not None:
                line["reference"] = item.reference
            if item.answer is not None:
                extracted, correct = score_response(text, item.answer, rule)
                line.update(answer=item.answer, extracted=extracted, correct=correct, score=float(correct))
                scored, hits = scored + 1, hits + int(correct)
            lines.append(line)
        output.write(lines)
    where = output.commit()
    return Prediction(output=where, prompts=len(prompts.items), responses=output.lines, scored=scored,
                      mean_score=hits / scored if scored else None, unfinished=unfinished,
                      skipped=dict(prompts.skipped), cut=prompts.cut)
