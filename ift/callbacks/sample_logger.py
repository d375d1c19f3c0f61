"""Log generated samples every N steps to whichever loggers the Trainer has."""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, Optional

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

from ift.callbacks.paths import run_dir
from ift.data.collate import Collator
from ift.core.generation import generate_responses

log = logging.getLogger(__name__)
COLUMNS = ["step", "prompt", "response", "reference"]


def markdown_table(columns: List[str], rows: List[List[Any]]) -> str:
    """A Markdown table; ``|`` and newlines inside cells are escaped."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


class SampleLogger(Callback):
    """Generate responses to a few fixed prompts every ``every_n_steps`` optimizer steps (and
    at the end of fit) and log them as a table:

    * W&B: a ``wandb.Table`` under ``key`` (all rows so far, with their step);
    * TensorBoard: a Markdown table in the Text tab;
    * CSV and other loggers: appended to ``samples.md`` in the run's folder.

    Args:
        every_n_steps: optimizer steps between two samplings.
        num_samples: how many prompts (the first of the split, or of ``prompts``).
        split: data split to take prompts from (``val``, ``train``, ``test``); falls back to
            ``train`` when the data module has no such split.
        prompts: explicit prompt texts instead of data (rendered with the data module's
            chat template when it uses one).
        max_new_tokens: longest generated response.
        do_sample: sample instead of greedy decoding.
        temperature: sampling temperature.
        key: name of the table.
        at_fit_end: also log once when fit ends.
    """

    def __init__(
        self,
        every_n_steps: int = 100,
        num_samples: int = 4,
        split: str = "val",
        prompts: Optional[List[str]] = None,
        max_new_tokens: int = 64,
        do_sample: bool = False,
        temperature: float = 1.0,
        key: str = "samples",
        at_fit_end: bool = True,
    ):
        if every_n_steps < 1 or num_samples < 1:
            raise ValueError("SampleLogger: every_n_steps and num_samples must be >= 1")
        self.every_n_steps = every_n_steps
        self.num_samples = num_samples
        self.split = split
        self.prompts = prompts
        self.max_new_tokens = max_new_tokens
        self.do_sample = do_sample
        self.temperature = temperature
        self.key = key
        self.at_fit_end = at_fit_end
        self.rows: List[List[Any]] = []
        self._batch: Optional[Dict[str, Any]] = None
        self._logged_step = -1

    # ------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        # Several optimizer steps may happen in one batch (PPO): compare intervals, not residues.
        if step > 0 and step // self.every_n_steps > max(self._logged_step, 0) // self.every_n_steps:
            self.log_samples(trainer, pl_module)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.at_fit_end and trainer.global_step != self._logged_step:
            self.log_samples(trainer, pl_module)

    # ------------------------------------------------------------------ work
    def prompt_batch(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Optional[Dict[str, Any]]:
        """The fixed prompts, collated (left-padded ``prompt_input_ids``), or None if there are none."""
        if self._batch is not None:
            return self._batch
        tokenizer = pl_module.tokenizer
        datamodule = getattr(trainer, "datamodule", None)
        if self.prompts:
            from ift.data.encoding import encode_prompt, render_prompt

            chat = bool(getattr(datamodule, "use_chat_template", False))
            features = [
                {"prompt_ids": encode_prompt(tokenizer, render_prompt(tokenizer, text, chat), chat), "prompt": text}
                for text in self.prompts[: self.num_samples]
            ]
        else:
            datasets = getattr(datamodule, "datasets", None) or {}
            dataset = datasets.get(self.split) or datasets.get("train")
            if not dataset:
                log.warning("SampleLogger: no prompts (pass prompts=... or use an ift data module); not logging samples")
                return None
            features = [dataset[i] for i in range(min(self.num_samples, len(dataset)))]
        self._batch = Collator(tokenizer.pad_token_id)(features)
        return self._batch

    @torch.no_grad()
    def generate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> List[List[Any]]:
        batch = self.prompt_batch(trainer, pl_module)
        if batch is None:
            return []
        tokenizer = pl_module.tokenizer
        prompt_ids = batch["prompt_input_ids"].to(pl_module.device)
        responses, _ = generate_responses(
            pl_module.policy,
            prompt_ids,
            batch["prompt_attention_mask"].to(pl_module.device),
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            max_new_tokens=self.max_new_tokens,
            do_sample=self.do_sample,
            temperature=self.temperature,
        )
        texts = tokenizer.batch_decode(responses, skip_special_tokens=True)
        prompts = batch.get("prompt") or tokenizer.batch_decode(prompt_ids, skip_special_tokens=True)
        references = batch.get("answer") or batch.get("response") or [""] * len(texts)
        return [[trainer.global_step, p, r, "" if ref is None else ref] for p, r, ref in zip(prompts, texts, references)]

    def log_samples(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        new_rows = self.generate(trainer, pl_module)
        self._logged_step = trainer.global_step
        if not new_rows:
            return
        self.rows += new_rows
        directory = None
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                if trainer.is_global_zero:
                    logger.log_table(key=self.key, columns=COLUMNS, data=self.rows, step=trainer.global_step)
            elif isinstance(logger, TensorBoardLogger):
                if trainer.is_global_zero:
                    logger.experiment.add_text(self.key, markdown_table(COLUMNS, new_rows), trainer.global_step)
            elif directory is None:
                directory = run_dir(trainer)  # every rank calls it (it may broadcast)
                if trainer.is_global_zero:
                    os.makedirs(directory, exist_ok=True)
                    with open(os.path.join(directory, f"{self.key}.md"), "a", encoding="utf-8") as handle:
                        handle.write(f"\n### step {trainer.global_step}\n\n" + markdown_table(COLUMNS, new_rows))
