"""The SFT-vs-RL code study (arXiv 2406.10305's three findings) on the atomic/synthetic code task.

``settings`` holds the two scales (:data:`TINY`, :data:`SMOLLM2`), ``arms`` trains one job of
a finding, ``measure`` computes greedy pass@1, sampled pass@k and pass-rate curves, ``report``
prints the tables and draws the curves. ``benchmarks/code_sft_rl_study.py`` runs it;
docs/code_study.md has the results.
"""

from ift.lab.code_study.settings import SCALES, SMOLLM2, TINY, CodeStudySettings

__all__ = ["CodeStudySettings", "SCALES", "SMOLLM2", "TINY"]
