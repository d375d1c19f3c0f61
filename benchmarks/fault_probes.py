"""Held-out bad-input and fault probes: what a user meets, and whether ``ift`` tells them.

    python benchmarks/fault_probes.py              # every probe, 2 at a time
    python benchmarks/fault_probes.py --jobs 1 --only bom blank_line   # some of them

Each probe runs the real ``ift`` command (``python -m ift.cli``, a subprocess in its own
temporary folder, with a tiny local model, the character tokenizer and a few lines of data;
``HF_HUB_OFFLINE=1 WANDB_MODE=disabled``) or, where a user would call Python, the Python API
in a subprocess too. A per-probe timeout detects hangs. Each probe states what a correct
outcome looks like (a refusal naming the place and the fix, a warning naming the records,
a run that trains and writes its files) and its outcome is computed from the exit status,
the output and the files, never by hand:

* ``ok``: it works as it should, or refuses with a message holding what the probe expects
  (the file:line, the config key, the fix);
* ``silently_wrong``: it finished (or trained) although the input was wrong, or its result
  is wrong, and nothing said so;
* ``hang``: it did not end within the probe's timeout;
* ``unclear_error``: it stopped, but the message lacks the place or the fix (a traceback
  the user must decode).

These probes are held out from the ones issue 13 listed (resume with other model settings,
``--ckpt_path last``, null/number/list fields, non-finite steps, hanging rewards, exceptions
mid-run, unwritable folders, empty files, non-UTF-8 bytes, max_length above the context,
CSV, preset typos, missing model folders, truncated checkpoints, SFT on preference data,
unknown objective arguments). The script prints a table and a summary line and exits 1 if
any probe is not ``ok``.
"""

from __future__ import annotations

import argparse
import csv
import glob
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

OK, WRONG, HANG, UNCLEAR = "ok", "silently_wrong", "hang", "unclear_error"
CLASSES = (OK, WRONG, HANG, UNCLEAR)
ROOT = Path(__file__).resolve().parent.parent

GOOD = [{"prompt": "2+2=", "response": "4"}, {"prompt": "3+4=", "response": "7"},
        {"prompt": "5+1=", "response": "6"}, {"prompt": "1+1=", "response": "2"}]
PAIRS = [{"prompt": "2+2=", "chosen": "4", "rejected": "5"}, {"prompt": "3+4=", "chosen": "7", "rejected": "1"}]
CHAT = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}

# One optimizer step of a tiny GPT-2 with the character tokenizer, on one CPU, in ./runs.
MODEL = ["--model.model", "tiny-gpt2", "--model.tokenizer", "char"]
TRAINER = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.max_steps", "1",
           "--trainer.enable_model_summary", "false", "--trainer.default_root_dir", "runs",
           "--trainer.num_sanity_val_steps", "0"]
FIT = ["fit", *MODEL, *TRAINER]


def prompt_response(train: str = "train.jsonl", *extra: str) -> List[str]:
    return ["--data", "ift.data.PromptResponseDataModule", "--data.train_data", train, "--data.batch_size", "2", *extra]


# Rewards a PPO probe names by class_path (importable: the probe's folder is on PYTHONPATH).
REWARDS = '''
from ift.rewards import Reward

class Nan(Reward):
    def __call__(self, prompts, responses, examples):
        return [float("nan")] * len(responses)

class Text(Reward):
    def __call__(self, prompts, responses, examples):
        return ["good"] * len(responses)

class Missing(Reward):
    def __call__(self, prompts, responses, examples):
        pass

class Short(Reward):
    def __call__(self, prompts, responses, examples):
        return [1.0] * (len(responses) - 1)

class Lengths(Reward):
    """Scores longer responses higher: a reward that works."""
    def __call__(self, prompts, responses, examples):
        return [float(len(r)) for r in responses]
'''


def ppo(reward: Optional[str]) -> List[str]:
    args = ["--model.objective", "PPO", "--model.objective.init_args.max_new_tokens", "3",
            "--model.objective.init_args.samples_per_prompt", "2", "--model.objective.init_args.mini_batch_size", "4",
            "--model.objective.init_args.ppo_epochs", "1"]
    # PPO has no default reward: None probes the answer reward.
    args += ["--model.objective.init_args.reward", f"probe_rewards.{reward}" if reward else "ift.rewards.AnswerMatchReward"]
    return args


# ------------------------------------------------------------------------------ running one probe
@dataclass
class Outcome:
    """What one probe's command did."""

    rc: Optional[int]
    output: str
    seconds: float
    timed_out: bool
    folder: Path


def write_jsonl(path: Path, rows: Sequence[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def environment(folder: Path) -> Dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false",
               PYTHONPATH=os.pathsep.join(p for p in (str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")) if p))
    env.pop("TERM", None)
    return env


IFT = "ift"  # the first word of a command run as ``ift`` in a forked child


class Running:
    """One probe's command under way: forked (``ift ...``, the CLI imported once in the parent,
    so each probe skips the ~7 s import) or a plain subprocess (anything else)."""

    def __init__(self, probe: "Probe", folder: Path, argv: Sequence[str]):
        self.probe, self.folder, self.log_path = probe, folder, folder / "output.log"
        self.started = time.perf_counter()
        self.signalled = probe.signal_after is None
        self.timed_out = False
        if argv[0] == IFT:
            sys.stdout.flush()
            sys.stderr.flush()
            self.pid = os.fork()
            if self.pid == 0:
                run_ift_in_child(list(argv[1:]), folder, self.log_path)  # never returns
        else:
            with open(self.log_path, "wb") as log:
                self.pid = subprocess.Popen(list(argv), cwd=folder, env=environment(folder), stdout=log,
                                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True).pid

    def poll(self) -> Optional[Outcome]:
        """The outcome once the command has ended (killed at the probe's timeout: a hang)."""
        pid, status = os.waitpid(self.pid, os.WNOHANG)
        seconds = time.perf_counter() - self.started
        if pid == 0:
            if seconds > self.probe.timeout_s:
                self.timed_out = True
                os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                return Outcome(None, self.output(), seconds, True, self.folder)
            if not self.signalled and self.probe.signal_after[0] in self.output():
                os.kill(self.pid, self.probe.signal_after[1])
                self.signalled = True
            return None
        return Outcome(os.waitstatus_to_exitcode(status), self.output(), seconds, False, self.folder)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def run_ift_in_child(args: List[str], folder: Path, log_path: Path) -> None:
    """In a forked child: ``ift ARGS`` as the console script runs it (``sys.exit(main())``),
    in ``folder``, output to ``log_path``, in its own session (so a hang is killed whole)."""
    code = 1
    try:
        os.setsid()
        log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        os.chdir(folder)
        os.environ.update(environment(folder))
        sys.path.insert(0, str(folder))
        sys.argv = [IFT, *args]
        from ift.cli import main as ift_main

        try:
            code = 0 if ift_main() is None else 1
        except SystemExit as stop:
            if isinstance(stop.code, str):
                print(stop.code, file=sys.stderr)
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        except KeyboardInterrupt:
            import traceback
            traceback.print_exc()
            code = 130
        except BaseException:  # what the interpreter prints for an uncaught exception
            import traceback
            traceback.print_exc()
            code = 1
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def ift(*args: str) -> List[str]:
    return [IFT, *args]


def python(code: str) -> List[str]:
    return [sys.executable, "-c", textwrap.dedent(code)]


# ------------------------------------------------------------------------------ judging an outcome
Judge = Callable[[Outcome], Tuple[str, str]]


def last_line(output: str) -> str:
    lines = [line.strip() for line in output.strip().splitlines() if line.strip()]
    return lines[-1][:150] if lines else "(no output)"


def missing(output: str, needles: Sequence[str]) -> List[str]:
    low = output.lower()
    return [needle for needle in needles if needle.lower() not in low]


def refuses(*needles: str) -> Judge:
    """The command must stop (non-zero exit) with every needle in its output."""
    def judge(outcome: Outcome) -> Tuple[str, str]:
        if outcome.timed_out:
            return HANG, f"no end after {outcome.seconds:.0f} s"
        if outcome.rc == 0:
            return WRONG, "finished with status 0; " + last_line(outcome.output)
        lacking = missing(outcome.output, needles)
        if lacking:
            return UNCLEAR, f"message lacks {lacking}: {last_line(outcome.output)}"
        return OK, last_line(outcome.output)
    return judge


def works(check: Optional[Callable[[Outcome], Optional[str]]] = None, *needles: str) -> Judge:
    """The command must finish with status 0, say every needle, and ``check`` (a reason
    when the result is wrong, else None) must pass."""
    def judge(outcome: Outcome) -> Tuple[str, str]:
        if outcome.timed_out:
            return HANG, f"no end after {outcome.seconds:.0f} s"
        if outcome.rc != 0:
            return UNCLEAR, f"status {outcome.rc} where it should work: {last_line(outcome.output)}"
        lacking = missing(outcome.output, needles)
        if lacking:
            return WRONG, f"finished without saying {lacking}"
        reason = check(outcome) if check else None
        if reason:
            return WRONG, reason
        return OK, last_line(outcome.output)
    return judge


def tells(*needles: str) -> Judge:
    """Either a warning (status 0) or a refusal is right, as long as the output says every needle."""
    def judge(outcome: Outcome) -> Tuple[str, str]:
        if outcome.timed_out:
            return HANG, f"no end after {outcome.seconds:.0f} s"
        lacking = missing(outcome.output, needles)
        if not lacking:
            return OK, last_line(outcome.output)
        if outcome.rc == 0:
            return WRONG, f"finished without saying {lacking}"
        return UNCLEAR, f"message lacks {lacking}: {last_line(outcome.output)}"
    return judge


def stops_in_time(*needles: str, files: str = "") -> Judge:
    """A signal probe: the run must end (any status), say the needles and leave ``files`` (a glob)."""
    def judge(outcome: Outcome) -> Tuple[str, str]:
        if outcome.timed_out:
            return HANG, f"no end after {outcome.seconds:.0f} s"
        if files and not glob.glob(str(outcome.folder / files), recursive=True):
            return WRONG, f"ended (status {outcome.rc}) without writing {files}: {last_line(outcome.output)}"
        lacking = missing(outcome.output, needles)
        if lacking:
            return UNCLEAR, f"message lacks {lacking}: {last_line(outcome.output)}"
        return OK, last_line(outcome.output)
    return judge


def metrics_rows(folder: Path) -> List[dict]:
    rows: List[dict] = []
    for path in sorted(glob.glob(str(folder / "runs" / "**" / "metrics.csv"), recursive=True)):
        with open(path, newline="") as handle:
            rows.extend(csv.DictReader(handle))
    return rows


def trained_steps(count: int) -> Callable[[Outcome], Optional[str]]:
    """The run's summary reports ``count`` optimizer steps."""
    def check(outcome: Outcome) -> Optional[str]:
        said = f"{count} optimizer step"
        return None if said in outcome.output else f"summary does not say '{said}': {last_line(outcome.output)}"
    return check


# ------------------------------------------------------------------------------ the probes
@dataclass
class Probe:
    """``prepare(folder)`` writes the inputs and returns the command; ``judge`` classifies."""

    name: str
    doing: str
    prepare: Callable[[Path], List[str]]
    judge: Judge
    timeout_s: float = 120.0
    signal_after: Optional[Tuple[str, int]] = None


def with_train(rows: Sequence[dict], name: str = "train.jsonl") -> Callable[[Path], None]:
    return lambda folder: write_jsonl(folder / name, rows)


def data_probe(name: str, doing: str, text: str, judge: Judge, file: str = "train.jsonl",
               module: str = "ift.data.PromptResponseDataModule", extra: Sequence[str] = ()) -> Probe:
    """``ift fit`` on a training file whose raw text is ``text``."""
    def prepare(folder: Path) -> List[str]:
        (folder / file).write_text(text, encoding="utf-8")
        return ift(*FIT, "--data", module, "--data.train_data", file, "--data.batch_size", "2", *extra)
    return Probe(name, doing, prepare, judge)


def lines(*rows: object) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows)


def fit_probe(name: str, doing: str, args: Sequence[str], judge: Judge, rows: Sequence[dict] = GOOD,
              fit: Sequence[str] = FIT, timeout_s: float = 120.0) -> Probe:
    """``ift fit`` on four good prompt/response lines plus ``args``."""
    def prepare(folder: Path) -> List[str]:
        write_jsonl(folder / "train.jsonl", rows)
        return ift(*fit, *prompt_response(), *args)
    return Probe(name, doing, prepare, judge, timeout_s)


def ppo_probe(name: str, doing: str, reward: Optional[str], judge: Judge) -> Probe:
    def prepare(folder: Path) -> List[str]:
        (folder / "probe_rewards.py").write_text(REWARDS, encoding="utf-8")
        write_jsonl(folder / "train.jsonl", [{"prompt": r["prompt"], "answer": r["response"]} for r in GOOD])
        return ift(*FIT, *prompt_response("train.jsonl", "--data.response_key", "null"), *ppo(reward))
    return Probe(name, doing, prepare, judge, 150.0)


def two_runs(folder: Path, first: Sequence[str], second: Sequence[str]) -> List[str]:
    """A shell line running ``first`` then ``second`` (the second's status is the probe's)."""
    real = lambda argv: [sys.executable, "-m", "ift.cli", *argv[1:]] if argv[0] == IFT else list(argv)  # noqa: E731
    quote = lambda argv: " ".join(json.dumps(word) for word in real(argv))  # noqa: E731
    return ["bash", "-c", f"{quote(first)} > first.log 2>&1 || {{ cat first.log; exit 97; }}; {quote(second)}"]


def finished_run(folder: Path, steps: int = 2, extra: Sequence[str] = ()) -> List[str]:
    write_jsonl(folder / "train.jsonl", GOOD)
    return ift("fit", *MODEL, *[w if w != "1" or i != TRAINER.index("--trainer.max_steps") + 1 else str(steps)
                                 for i, w in enumerate(TRAINER)], *prompt_response(), *extra)


def same_losses(outcome: Outcome) -> Optional[str]:
    versions = sorted(glob.glob(str(outcome.folder / "runs" / "lightning_logs" / "version_*" / "metrics.csv")))
    if len(versions) != 2:
        return f"expected 2 runs' metrics.csv, found {len(versions)}"
    losses = []
    for path in versions:
        with open(path, newline="") as handle:
            losses.append([row["train/loss_step"] for row in csv.DictReader(handle) if row.get("train/loss_step")])
    if not losses[0] or losses[0] != losses[1]:
        return f"losses differ between two runs with the same seed: {losses[0]} vs {losses[1]}"
    return None


def probes() -> List[Probe]:
    found: List[Probe] = []
    add = found.append

    # --- data files ---------------------------------------------------------------
    add(data_probe("line_not_json", "a JSONL line cut short", lines(GOOD[0], '{"prompt": "3+4=", "resp'),
                   refuses("train.jsonl:2", "not valid JSON")))
    add(data_probe("line_is_array", "a JSONL line that is a JSON array", lines(GOOD[0], ["3+4=", "7"]),
                   refuses("train.jsonl:2", "object")))
    add(data_probe("duplicate_key", "a record with the same key twice (the first value would be lost)",
                   lines(GOOD[0], '{"prompt": "3+4=", "response": "7", "response": "8"}'),
                   tells("train.jsonl:2", "response")))
    add(data_probe("bom_and_crlf", "a file saved by a Windows editor: BOM and CRLF line ends",
                   "\ufeff" + lines(*GOOD).replace("\n", "\r\n"), works(trained_steps(1))))
    add(data_probe("blank_line_mid_file", "blank lines between records",
                   lines(GOOD[0], "", "   ", GOOD[1]), works(trained_steps(1))))
    add(data_probe("json_not_jsonl", "a .jsonl file that holds one pretty-printed JSON list",
                   json.dumps(GOOD, indent=2) + "\n", refuses("train.jsonl:1", ".json")))
    add(data_probe("wrong_key_name", "records with 'question'/'answer' instead of 'prompt'/'response'",
                   lines({"question": "2+2=", "answer": "4"}), refuses("train.jsonl:1", "prompt_key", "question")))
    add(data_probe("empty_string_everywhere", "every response an empty string",
                   lines({"prompt": "a", "response": ""}, {"prompt": "b", "response": ""}),
                   refuses("train.jsonl:1", "empty")))
    add(data_probe("one_empty_response", "one response of four is an empty string",
                   lines(*GOOD[:3], {"prompt": "x", "response": ""}), works(None, "train.jsonl:4", "empty")))
    add(data_probe("unknown_characters", "responses in a script the character tokenizer does not know",
                   lines(*[{"prompt": r["prompt"], "response": "四十二"} for r in GOOD]),
                   tells("train.jsonl:1", "unknown")))
    add(data_probe("prompt_longer_than_max_length", "a prompt far longer than max_length (the response must survive)",
                   lines(*[{"prompt": "1+" * 200 + "1=", "response": "201"}] * 2),
                   works(trained_steps(1)), extra=["--data.max_length", "32"]))
    add(data_probe("chat_unknown_role", "a chat turn with role 'bot' instead of 'assistant'",
                   lines(CHAT, {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "yo"}]}),
                   tells("train.jsonl:2", "role"), module="ift.data.ChatDataModule"))
    add(data_probe("chat_missing_content", "a chat turn without 'content'",
                   lines(CHAT, {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant"}]}),
                   refuses("train.jsonl:2", "content"), module="ift.data.ChatDataModule"))
    add(data_probe("chosen_equals_rejected", "preference pairs whose chosen and rejected are the same text",
                   lines(PAIRS[0], {"prompt": "3+4=", "chosen": "7", "rejected": "7"}),
                   tells("train.jsonl:2", "chosen", "rejected"), module="ift.data.PreferenceDataModule",
                   extra=["--model.objective", "DPO"]))
    add(data_probe("answer_is_a_number", "an 'answer' field that is a number", lines(
        *[{**row, "answer": int(row["response"])} for row in GOOD]), works(trained_steps(1))))

    # --- data paths and sizes -----------------------------------------------------
    def directory(folder: Path) -> List[str]:
        (folder / "data").mkdir()
        return ift(*FIT, *prompt_response("data"))
    add(Probe("train_data_is_a_folder", "train_data names an empty folder", directory, refuses("train_data data", "folder")))
    add(fit_probe("no_train_data", "no --data.train_data at all", [], refuses("train_data", "required"),
                  fit=FIT[:0] + FIT))  # prompt_response() always names it; replaced below
    found[-1].prepare = lambda folder: (write_jsonl(folder / "train.jsonl", GOOD), ift(
        *FIT, "--data", "ift.data.PromptResponseDataModule"))[1]
    add(fit_probe("val_data_missing", "val_data names a file that does not exist",
                  ["--data.val_data", "vaal.jsonl"], refuses("vaal.jsonl", "val_data")))
    add(fit_probe("path_with_spaces", "data and output folders with spaces in their names", [], works(trained_steps(1))))
    found[-1].prepare = lambda folder: (os.makedirs(folder / "my data"), write_jsonl(folder / "my data" / "t 1.jsonl", GOOD),
                                        ift(*FIT[:-4], "--trainer.default_root_dir", "my runs", *FIT[-2:],
                                            *prompt_response("my data/t 1.jsonl")))[2]
    add(fit_probe("max_length_zero", "--data.max_length 0", ["--data.max_length", "0"], refuses("max_length", ">= 1")))
    add(fit_probe("max_length_negative", "--data.max_length -5", ["--data.max_length", "-5"], refuses("max_length", ">= 1")))
    add(fit_probe("batch_size_zero", "--data.batch_size 0", ["--data.batch_size", "0"], refuses("batch_size", ">= 1")))
    add(fit_probe("max_length_tiny", "--data.max_length 2: no example fits", ["--data.max_length", "2"],
                  refuses("max_length")))

    # --- config and command line --------------------------------------------------
    add(fit_probe("lr_negative", "a negative learning rate", ["--model.optimizer", "torch.optim.AdamW",
                                                               "--model.optimizer.init_args.lr", "-0.1"], refuses("learning rate", "-0.1")))
    add(fit_probe("lr_string", "a learning rate that is a word", ["--model.optimizer", "torch.optim.AdamW",
                                                                   "--model.optimizer.init_args.lr", "fast"], refuses("lr", "fast")))
    add(fit_probe("optimizer_typo", "an optimizer class path with a typo", ["--model.optimizer", "torch.optim.Adamw"],
                  refuses("Adamw")))
    add(fit_probe("option_typo", "an option name with a typo (--model.objetive)", ["--model.objetive", "SFT"],
                  refuses("model.objetive")))
    add(fit_probe("config_file_missing", "--config naming a file that does not exist", ["--config", "sft.yml"],
                  refuses("sft.yml")))

    def yaml_typo(folder: Path) -> List[str]:
        write_jsonl(folder / "train.jsonl", GOOD)
        (folder / "run.yaml").write_text("model:\n  objective:\n    class_path: SFT\n  optimiser:\n"
                                         "    class_path: torch.optim.SGD\n", encoding="utf-8")
        return ift(*FIT, *prompt_response(), "--config", "run.yaml")
    add(Probe("yaml_key_typo", "a key misspelt inside a YAML config (optimiser)", yaml_typo, refuses("optimiser")))

    def yaml_syntax(folder: Path) -> List[str]:
        write_jsonl(folder / "train.jsonl", GOOD)
        (folder / "run.yaml").write_text("model:\n  objective: SFT\n   max_grad_norm: 1.0\n", encoding="utf-8")
        return ift(*FIT, *prompt_response(), "--config", "run.yaml")
    add(Probe("yaml_syntax_error", "a YAML config with a bad indent", yaml_syntax, refuses("run.yaml")))
    add(fit_probe("max_steps_zero", "--trainer.max_steps 0", ["--trainer.max_steps", "0"], works(trained_steps(0))))
    add(fit_probe("precision_16_on_cpu", "--trainer.precision 16-mixed on a CPU", ["--trainer.precision", "16-mixed"],
                  tells("16-mixed")))
    add(fit_probe("lora_unknown_target", "LoRA on module names the model does not have",
                  ["--model.lora", "{r: 4, target_modules: [q_proj]}"], refuses("q_proj", "target_modules")))
    add(fit_probe("root_is_a_file", "--trainer.default_root_dir naming an existing file", [], refuses("runs")))
    found[-1].prepare = lambda folder: ((folder / "runs").write_text("x"), write_jsonl(folder / "train.jsonl", GOOD),
                                        ift(*FIT, *prompt_response()))[2]

    # --- PPO rewards ---------------------------------------------------------------
    add(ppo_probe("ppo_reward_nan", "a PPO reward that returns NaN for every response", "Nan",
                  tells("non-finite", "probe_rewards.Nan".split(".")[-1])))
    add(ppo_probe("ppo_reward_text", "a PPO reward that returns strings", "Text", refuses("Text", "'good'")))
    add(ppo_probe("ppo_reward_none", "a PPO reward without a return statement", "Missing", refuses("Missing", "None")))
    add(ppo_probe("ppo_reward_short", "a PPO reward that returns one score too few", "Short", refuses("Short", "scores")))
    add(ppo_probe("ppo_prompts_without_answer", "PPO (answer reward) on prompts with no 'answer' field", None,
                  tells("answer")))
    found[-1].prepare = lambda folder: (write_jsonl(folder / "train.jsonl", [{"prompt": r["prompt"]} for r in GOOD]),
                                        ift(*FIT, *prompt_response("train.jsonl", "--data.response_key", "null"),
                                            *ppo(None)))[1]

    # --- checkpoints and resuming ------------------------------------------------
    def ckpt_is_folder(folder: Path) -> List[str]:
        (folder / "ckpts").mkdir()
        return ift(*FIT, *prompt_response(), "--ckpt_path", "ckpts")
    add(Probe("ckpt_path_is_folder", "--ckpt_path naming a folder", ckpt_is_folder, refuses("ckpts")))
    found[-1].prepare = lambda folder, f=ckpt_is_folder: (write_jsonl(folder / "train.jsonl", GOOD), f(folder))[1]

    def ckpt_is_text(folder: Path) -> List[str]:
        write_jsonl(folder / "train.jsonl", GOOD)
        (folder / "model.ckpt").write_text("see https://example.org/model\n")
        return ift(*FIT, *prompt_response(), "--ckpt_path", "model.ckpt")
    add(Probe("ckpt_path_text_file", "--ckpt_path naming a text file", ckpt_is_text, refuses("model.ckpt", "checkpoint")))

    def resume_longer(folder: Path) -> List[str]:
        first = finished_run(folder, 2)
        second = finished_run(folder, 4, ["--ckpt_path", "last"])
        return two_runs(folder, first, second)
    add(Probe("resume_with_more_steps", "a finished 2-step run resumed with --trainer.max_steps 4",
              resume_longer, works(lambda o: None if "4 optimizer steps" in o.output or "step 4/4" in o.output
                                   else f"did not reach step 4: {last_line(o.output)}"), 200.0))

    def twice(folder: Path) -> List[str]:
        extra = ["--seed_everything", "3", "--trainer.max_steps", "3", "--trainer.log_every_n_steps", "1"]
        return two_runs(folder, finished_run(folder, 3, extra), finished_run(folder, 3, extra))
    add(Probe("same_seed_same_losses", "the same config and seed run twice", twice, works(same_losses), 200.0))

    # --- ift predict ---------------------------------------------------------------
    add(Probe("predict_missing_prompts", "ift predict on a prompts file that does not exist",
              lambda folder: ift("predict", "--policy", "tiny-gpt2", "--tokenizer", "char", "--data", "prompt.jsonl"),
              refuses("prompt.jsonl")))

    def predict_empty(folder: Path) -> List[str]:
        (folder / "prompts.jsonl").write_text("")
        return ift("predict", "--policy", "tiny-gpt2", "--tokenizer", "char", "--data", "prompts.jsonl")
    add(Probe("predict_empty_prompts", "ift predict on an empty prompts file", predict_empty,
              refuses("prompts.jsonl", "no records")))

    def predict_output_folder_missing(folder: Path) -> List[str]:
        write_jsonl(folder / "prompts.jsonl", [{"prompt": "2+2="}])
        return ift("predict", "--policy", "tiny-gpt2", "--tokenizer", "char", "--data", "prompts.jsonl",
                   "--output", "out/dir/preds.jsonl")
    add(Probe("predict_output_folder_missing", "ift predict --output into a folder that does not exist yet",
              predict_output_folder_missing,
              tells("out/dir")))

    # --- signals --------------------------------------------------------------------
    def long_run(folder: Path) -> List[str]:
        write_jsonl(folder / "train.jsonl", GOOD * 50)
        args = [w if w != "1" or i != TRAINER.index("--trainer.max_steps") + 1 else "100000" for i, w in enumerate(TRAINER)]
        return ift("fit", *MODEL, *args, *prompt_response(), "--progress_every", "1")
    add(Probe("sigterm_mid_training", "SIGTERM (a scheduler's stop) while training", long_run,
              stops_in_time(files="runs/**/interrupted.ckpt"), 120.0, ("step 3/", signal.SIGTERM)))
    add(Probe("sigint_mid_training", "Ctrl-C (SIGINT) while training", long_run,
              stops_in_time("interrupted.ckpt", files="runs/**/interrupted.ckpt"), 120.0, ("step 3/", signal.SIGINT)))
    return found


# ------------------------------------------------------------------------------ main
def run_all(chosen: Sequence[Probe], base: Path, jobs: int) -> List[Tuple[Probe, str, str, float]]:
    """Run the probes, ``jobs`` at a time, from this (single) thread: children are forked."""
    pending, running, results = list(chosen), [], {}
    while pending or running:
        while pending and len(running) < jobs:
            probe = pending.pop(0)
            folder = base / probe.name
            folder.mkdir()
            try:
                running.append(Running(probe, folder, probe.prepare(folder)))
            except Exception as error:  # a bug of the probe itself: shown, never counted as ok
                results[probe.name] = (probe, UNCLEAR, f"probe error {type(error).__name__}: {error}", 0.0)
        for job in list(running):
            outcome = job.poll()
            if outcome is not None:
                running.remove(job)
                verdict, detail = job.probe.judge(outcome)
                results[job.probe.name] = (job.probe, verdict, detail, outcome.seconds)
        time.sleep(0.1)
    return [results[probe.name] for probe in chosen]


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2, help="probes run at once (default 2)")
    parser.add_argument("--only", nargs="*", help="run only these probes (names)")
    parser.add_argument("--keep", action="store_true", help="keep the probes' folders (printed)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    chosen = [p for p in probes() if not args.only or p.name in args.only]
    base = Path(tempfile.mkdtemp(prefix="ift_fault_probes_"))
    started = time.perf_counter()
    # Imported once here (with the probes' environment), then forked for every ``ift`` probe.
    os.environ.update(HF_HUB_OFFLINE="1", WANDB_MODE="disabled", TOKENIZERS_PARALLELISM="false")
    import ift.cli  # noqa: F401
    import ift.predict.command  # noqa: F401
    results = run_all(chosen, base, args.jobs)
    wall = time.perf_counter() - started
    width = max(len(p.name) for p in chosen)
    print(f"{'probe':<{width}}  {'outcome':<14} {'s':>5}  detail")
    for probe, verdict, detail, seconds in results:
        print(f"{probe.name:<{width}}  {verdict:<14} {seconds:5.1f}  {detail}")
    counts = {name: sum(1 for r in results if r[1] == name) for name in CLASSES}
    print(f"\n{len(results)} probes in {wall:.0f} s: " + ", ".join(f"{counts[c]} {c}" for c in CLASSES))
    if args.json:
        Path(args.json).write_text(json.dumps([{"probe": p.name, "doing": p.doing, "outcome": v, "detail": d,
                                                "seconds": round(s, 1)} for p, v, d, s in results], indent=1))
    if args.keep:
        print(f"folders: {base}")
    else:
        import shutil
        shutil.rmtree(base, ignore_errors=True)
    return 0 if counts[OK] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
