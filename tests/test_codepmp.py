"""The CodePMP experiment's measurements (pairwise and best-of-N accuracy) and its pipeline end
to end on tiny sizes."""

import subprocess
import sys
from pathlib import Path

import pytest

from ift.lab.reward_model_runs import best_of_n_accuracy, pairwise_accuracy

ROOT = Path(__file__).resolve().parent.parent


class LengthScorer:
    """A stand-in reward model: the score of a response is its length."""

    def __call__(self, prompts, responses, examples):
        assert len(prompts) == len(responses) == len(examples)
        return [float(len(response)) for response in responses]


def test_pairwise_accuracy_counts_strictly_higher_chosen_scores():
    pairs = [{"prompt": "p", "chosen": "long", "rejected": "x"},     # chosen wins
             {"prompt": "p", "chosen": "y", "rejected": "longer"},   # rejected wins
             {"prompt": "p", "chosen": "ab", "rejected": "cd"}]      # a tie is not a win
    assert pairwise_accuracy(LengthScorer(), pairs) == pytest.approx(1 / 3)


def test_best_of_n_picks_the_highest_score_and_the_first_of_ties():
    prompts = ["a", "b", "c"]
    candidates = [["x", "xxx", "xx"], ["yy", "y", "yy"], ["z", "z"]]
    correct = [[False, True, False], [False, True, True], [True, False]]
    # a: "xxx" (right); b: the first "yy" (wrong, ties go to the first); c: the first "z" (right).
    assert best_of_n_accuracy(LengthScorer(), prompts, candidates, correct) == pytest.approx(2 / 3)


@pytest.mark.slow
def test_codepmp_script_runs_the_whole_pipeline_and_prints_mean_and_std(tmp_path):
    out, plot = tmp_path / "codepmp.json", tmp_path / "codepmp.png"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "codepmp.py"), "--quick", "--seeds", "2",
                           "--workers", "1", "--out", str(out), "--plot", str(plot)],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "±" in done.stdout and "seeds 0-1" in done.stdout and "code pairs:" in done.stdout
    import json

    rows = json.loads(out.read_text())["rows"]
    # Per seed: the code-pretrained model alone, then both starts at each fine-tuning size.
    assert sorted((r["start"], r["finetune_pairs"]) for r in rows if r["seed"] == 0) == [
        ("base", 8), ("base", 32), ("code-pretrained", 0), ("code-pretrained", 8), ("code-pretrained", 32)]
    assert all(0.0 <= r["pairwise_accuracy"] <= 1.0 and 0.0 <= r["best_of_n"] <= 1.0 for r in rows)
    assert plot.stat().st_size > 0
