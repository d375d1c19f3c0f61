"""``ift predict``: responses of a trained policy to a file of prompts, scored where the
prompts have answers.

* :mod:`ift.predict.policy`: the policy and tokenizer, from an ``ift fit`` checkpoint, an
  :class:`~ift.callbacks.ExportPretrained` folder, a preset or a hub id;
* :mod:`ift.predict.prompts`: the prompts, read and encoded by the data layer (``file:line``
  errors, skipped examples counted);
* :mod:`ift.predict.output`: the JSONL output, checked writable before anything is generated
  and complete once it has its name;
* :mod:`ift.predict.generate`: batched generation and scoring;
* :mod:`ift.predict.command`: the command line.
"""

from ift.predict.generate import PredictSettings, Prediction, predict, score_response
from ift.predict.policy import LoadedPolicy, PredictError, load_policy
from ift.predict.prompts import PromptItem, PromptSet, read_prompts

__all__ = ["LoadedPolicy", "Prediction", "PredictError", "PredictSettings", "PromptItem", "PromptSet", "load_policy",
           "predict", "read_prompts", "score_response"]
