"""SFT and RL on code, measured: the three findings of arXiv 2406.10305 on atomic and synthetic functions.

    python benchmarks/code_sft_rl_study.py                       # the tiny scale, 5 seeds, every finding
    python benchmarks/code_sft_rl_study.py --scale smollm2 --seeds 2 --findings mix,after_sft
    python benchmarks/code_sft_rl_study.py --report-only --out runs/code_study_tiny.json

Finding 1 (``mix``): SFT on atomic functions only, on atomic + k synthetic ones, on synthetic
ones only; held-out and target-domain pass rates. Finding 2 (``after_sft``): an SFT warm-up,
then GRPO, PPO or more SFT on the same prompts for as many optimizer steps. Finding 3
(``scratch``): GRPO from the base against SFT from the base at equal training samples, the
train/held-out gap along the way. See ``ift.lab.code_study.arms`` and docs/code_study.md.

The problems are written first, as JSONL with their provenance, to ``<out>_splits/``.
Every finished job is written to ``--out`` at once; a rerun with the same ``--out`` and
settings runs only the jobs it lacks. Prints the tables (mean ± sample std over seeds,
paired differences) and draws the curves next to the JSON file (``--plot`` to choose).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ift.lab.code_study.arms import run_indexed_job, study_jobs  # noqa: E402
from ift.lab.code_study.report import plot_curves, report  # noqa: E402
from ift.lab.code_study.settings import SCALES  # noqa: E402
from ift.lab.hardware import describe_hardware  # noqa: E402
from ift.lab.workers import imap_in_processes  # noqa: E402
from ift.tasks.code import write_composition_splits  # noqa: E402


def _key(job) -> str:
    kind, _settings, seed, *rest = job
    return "/".join([kind, str(seed), *map(str, rest)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", choices=sorted(SCALES), default="tiny", help="tiny (char-level) or smollm2")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    parser.add_argument("--findings", default="mix,after_sft,scratch", help="comma-separated: mix, after_sft, scratch")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (one CPU thread each)")
    parser.add_argument("--out", default=None, help="results JSON (default runs/code_study_<scale>.json)")
    parser.add_argument("--plot", default=None, help="curves picture (default: the JSON's name with .png)")
    parser.add_argument("--report-only", action="store_true", help="print the tables of --out; run nothing")
    args = parser.parse_args()
    settings = SCALES[args.scale]
    out = Path(args.out or f"runs/code_study_{args.scale}.json")
    saved = json.loads(out.read_text()) if out.exists() else None
    if saved and saved["settings"] != json.loads(json.dumps(dataclasses.asdict(settings))):
        if not args.report_only:
            sys.exit(f"{out} holds results of other settings ({saved['settings']}); give another --out")
    runs = dict(saved["runs"]) if saved else {}
    findings = [name.strip() for name in args.findings.split(",") if name.strip()]
    if not args.report_only:
        splits = write_composition_splits(str(out.with_suffix("")) + "_splits", settings.split_settings)
        print(f"problems: {Path(splits['atomic']).parent}/ (every part as JSONL, provenance.json)")
        jobs = [job for job in study_jobs(settings, list(range(args.seeds)), findings) if _key(job) not in runs]
        print(f"{len(jobs)} jobs to run ({len(runs)} already in {out}); {describe_hardware()}, {args.workers} workers",
              flush=True)
        start = time.perf_counter()
        out.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(imap_in_processes(run_indexed_job, list(enumerate(jobs)), args.workers)) as results:
            for index, result in results:
                runs[_key(jobs[index])] = result
                out.write_text(json.dumps({"settings": dataclasses.asdict(settings), "hardware": describe_hardware(),
                                           "workers": args.workers, "runs": runs}, indent=1))
                print(f"  done {_key(jobs[index])} ({time.perf_counter() - start:.0f} s)", flush=True)
    if not runs:
        sys.exit(f"no results in {out}: run without --report-only first")
    saved = json.loads(out.read_text())
    print(report(saved))
    picture = Path(args.plot) if args.plot else out.with_suffix(".png")
    if plot_curves(saved, str(picture)):
        print(f"curves: {picture}")


if __name__ == "__main__":
    main()
