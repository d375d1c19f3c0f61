"""Rewards that overrun ``reward_timeout_s``: the call is stopped (busy loops and short naps
included), one stuck in native code is reported as still running and never blocks exit, a
PPO fit with a busy-looping reward finishes; and ``score_safely``'s messages for a reward
that raises or returns the wrong thing name the reward and the fix."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import torch

from factories import ppo_settings, quiet_trainer, tiny_arithmetic, tiny_module
from ift.objectives import PPO
from ift.rewards import AnswerMatchReward, Reward, RewardTimeoutWarning, score_safely
from ift.rewards.stoppable_call import still_running_calls

PROMPTS = ["What is 6 * 7?", "p1", "p2", "p3"]
RESPONSES = ["42", "1", "2", "3"]
EXAMPLES = [{"answer": 42, "id": "gsm-17"}, {"answer": 1}, {"answer": 2}, {"answer": 3}]
RAISE_LIMIT = r"--model\.objective\.init_args\.reward_timeout_s"


def reward_threads(name: str):
    return [thread for thread in threading.enumerate() if thread.name == f"reward-{name}"]


def gone_within(name: str, seconds: float) -> bool:
    """Whether every thread running reward ``name`` has ended within ``seconds``."""
    give_up = time.monotonic() + seconds
    while reward_threads(name) and time.monotonic() < give_up:
        time.sleep(0.02)
    return not reward_threads(name)


# ---------------------------------------------------------------------------- rewards that never return
class BusyLoop(Reward):
    """Spins in pure Python for ever (the GIL-hungry hang)."""

    def __call__(self, prompts, responses, examples):
        while True:
            pass


class NapsForEver(Reward):
    """Sleeps in short naps for ever (a polling wait)."""

    def __call__(self, prompts, responses, examples):
        while True:
            time.sleep(0.05)


class RetriesOnAnyError(Reward):
    """Busy-loops and swallows every ``Exception`` inside its loop (a retry loop)."""

    def __call__(self, prompts, responses, examples):
        while True:
            try:
                sum(range(100))
            except Exception:
                continue


class OneLongSleep(Reward):
    """One long sleep in native code (cannot be interrupted), then it would carry on."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.carried_on = threading.Event()

    def __call__(self, prompts, responses, examples):
        time.sleep(self.seconds)
        self.carried_on.set()  # never reached: the pending stop fires when the sleep returns
        return [1.0] * len(prompts)


@pytest.mark.parametrize("reward_cls", [BusyLoop, NapsForEver, RetriesOnAnyError])
def test_a_reward_that_never_returns_is_stopped_after_its_timeout(reward_cls):
    name = reward_cls.__name__
    start = time.monotonic()
    with pytest.warns(RewardTimeoutWarning, match=rf"{name} did not return within 0\.3 s.*the call was stopped\. "
                                                  rf"Every response of this batch was scored 0\..*{RAISE_LIMIT}"):
        result = score_safely(reward_cls(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=0.3)
    assert result == ([0.0] * 4, 0, True)
    assert time.monotonic() - start < 10  # the timeout and the stop, not a hang
    assert gone_within(name, 2.0), f"the thread running {name} is still alive after its timeout"


def test_a_reward_stuck_in_native_code_is_reported_still_running_and_ends_when_that_call_returns():
    before = still_running_calls()
    reward = OneLongSleep(seconds=2.5)
    with pytest.warns(RewardTimeoutWarning, match=rf"OneLongSleep did not return within 0\.2 s.*could NOT be stopped"
                                                  rf".*{before + 1} reward call\(s\) that could not be stopped are "
                                                  rf"still running.*scored 0.*{RAISE_LIMIT}"):
        result = score_safely(reward, PROMPTS, RESPONSES, EXAMPLES, timeout_s=0.2)
    assert result.timed_out and result.scores == [0.0] * 4
    assert reward_threads("OneLongSleep") and still_running_calls() == before + 1
    assert gone_within("OneLongSleep", 10.0)  # the sleep returned and the pending stop ended the call
    assert not reward.carried_on.is_set()
    assert still_running_calls() == before


def test_a_reward_stuck_in_native_code_does_not_block_process_exit(tmp_path):
    script = textwrap.dedent("""
        import time
        from ift.rewards.base import score_safely

        def sleeps_an_hour(prompts, responses, examples):
            time.sleep(3600)

        result = score_safely(sleeps_an_hour, ["p"], ["r"], [{}], timeout_s=0.2)
        print("timed out:", result.timed_out, flush=True)
    """)
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "timed out: True" in done.stdout
    assert "sleeps_an_hour did not return within 0.2 s" in done.stderr and "could NOT be stopped" in done.stderr
    assert time.monotonic() - start < 40  # exited although the reward's thread still sleeps


def test_an_interrupt_while_waiting_for_the_reward_stops_the_reward_too():
    class BusyUntilInterrupted(BusyLoop):
        pass

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    try:
        timer.start()
        with pytest.raises(KeyboardInterrupt):
            score_safely(BusyUntilInterrupted(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=30)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert gone_within("BusyUntilInterrupted", 2.0)


def test_the_reward_thread_has_the_callers_grad_mode():
    seen = []

    def records_grad_mode(prompts, responses, examples):
        seen.append(torch.is_grad_enabled())
        return [0.0] * len(prompts)

    with torch.no_grad():  # PPO's rollout scores under no_grad
        score_safely(records_grad_mode, PROMPTS, RESPONSES, EXAMPLES, timeout_s=5)
    score_safely(records_grad_mode, PROMPTS, RESPONSES, EXAMPLES, timeout_s=5)
    assert seen == [False, True]


def test_a_reward_that_raises_in_its_thread_names_the_reward_and_keeps_the_traceback():
    class ChecksAnswers(Reward):
        def __call__(self, prompts, responses, examples):
            return [1.0 / 0 for _ in responses]

    with pytest.raises(RuntimeError, match=r"Reward ChecksAnswers raised ZeroDivisionError.*gsm-17") as info:
        score_safely(ChecksAnswers(), PROMPTS, RESPONSES, EXAMPLES, timeout_s=5)
    cause = info.value.__cause__
    assert isinstance(cause, ZeroDivisionError)
    frames = []
    tb = cause.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "<listcomp>" in frames or "__call__" in frames  # where in the reward it failed


# ---------------------------------------------------------------------------- PPO
def test_ppo_reward_timeout_defaults_to_300_s():
    assert PPO(reward=AnswerMatchReward()).reward_timeout_s == 300.0
    with pytest.raises(ValueError, match="reward_timeout_s"):
        PPO(reward=AnswerMatchReward(), reward_timeout_s=0)


class BusyLoopInPPO(BusyLoop):
    pass


def test_a_ppo_fit_with_a_busy_looping_reward_finishes_and_the_warning_names_the_reward(tmp_path):
    module = tiny_module(PPO(reward=BusyLoopInPPO(), reward_timeout_s=1, **ppo_settings()))
    run = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=3, limit_val_batches=0)
    start = time.monotonic()
    with pytest.warns(RewardTimeoutWarning) as caught:
        run.fit(module, tiny_arithmetic(num_train=12, batch_size=4))
    elapsed = time.monotonic() - start
    messages = [str(w.message) for w in caught if issubclass(w.category, RewardTimeoutWarning)]
    assert len(messages) == 3  # one per batch
    for message in messages:
        assert "BusyLoopInPPO did not return within 1 s" in message and "the call was stopped" in message
        assert "--model.objective.init_args.reward_timeout_s" in message
    assert run.global_step == 6  # every batch trained (2 mini-batches each)
    assert module.objective.state_dict()["reward_timeouts"] == 3  # counted (and logged as train/reward_timeouts)
    assert elapsed < 30  # 3 timeouts of 1 s; a thread left spinning made this take minutes
    assert gone_within("BusyLoopInPPO", 2.0)


class RaisesInPPO(Reward):
    def __call__(self, prompts, responses, examples):
        raise KeyError("answer")


def test_a_reward_that_raises_stops_the_ppo_fit_with_an_error_naming_it(tmp_path):
    module = tiny_module(PPO(reward=RaisesInPPO(), **ppo_settings()))
    run = quiet_trainer(tmp_path, max_epochs=1, limit_train_batches=2, limit_val_batches=0)
    with pytest.raises(RuntimeError, match=r"Reward RaisesInPPO raised KeyError: 'answer'.*first example"):
        run.fit(module, tiny_arithmetic(num_train=8, batch_size=4))
    assert run.global_step == 0  # never scored 0 and trained on


# ---------------------------------------------------------------------------- wrong results
@pytest.mark.parametrize(
    "returned,error,message",
    [
        (None, TypeError, r"Reward f returned None .*lack a return statement.*one float per response"),
        ({"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}, TypeError, r"Reward f returned a dict, which has no order"),
        ({0.0, 1.0, 2.0, 3.0}, TypeError, r"Reward f returned a set, which has no order"),
        (3.0, TypeError, r"Reward f must return a list of 4 floats, got float; return one float per response"),
        ([1.0, "0.5", 0.0, 0.0], TypeError, r"Reward f returned '0\.5' \(a str\) at position 1 \(index 1 of the "
                                            r"batch, prompt 'p1'\): text, not a number"),
        ([1.0, 0.0, None, 0.0], TypeError, r"returned None \(a NoneType\) at position 2.*not a number"),
        ([0.0] * 3, ValueError, r"Reward f returned 3 scores for a batch of 4 responses \(first example: .*gsm-17.*\); "
                                r"it must return exactly one float per response, in the order"),
        (torch.zeros(4, 2), ValueError, r"returned 8 scores \(a Tensor of shape \(4, 2\)\) for a batch of 4"),
    ],
    ids=["none", "dict", "set", "scalar", "text-item", "none-item", "too-few", "2d-tensor"],
)
def test_a_wrong_result_is_an_error_naming_the_reward_and_the_fix(returned, error, message):
    def f(prompts, responses, examples):
        return returned

    f.__qualname__ = "f"
    for timeout_s in (None, 5):  # called directly and in its thread alike
        with pytest.raises(error, match=message):
            score_safely(f, PROMPTS, RESPONSES, EXAMPLES, timeout_s=timeout_s)


def test_results_that_are_right_pass_in_any_ordered_form():
    for returned in ([1, 0, 0.5, 2], (1, 0, 0.5, 2), torch.tensor([[1.0], [0.0], [0.5], [2.0]]), [True, False, 0.5, 2]):
        assert score_safely(lambda p, r, e: returned, PROMPTS, RESPONSES, EXAMPLES).scores == [1.0, 0.0, 0.5, 2.0]


def test_nan_scores_warn_with_their_positions_example_and_the_fix():
    def half_nan(prompts, responses, examples):
        return [1.0, float("nan"), 0.5, float("-inf")]

    with pytest.warns(RuntimeWarning, match=r"half_nan returned 2 non-finite score\(s\) \(nan/inf\) in a batch of 4, "
                                            r"at position\(s\) 1, 3; they were replaced by 0 \(first of them: index 1 "
                                            r"of the batch, prompt 'p1'\)\. Make the reward return a finite float"):
        result = score_safely(half_nan, PROMPTS, RESPONSES, EXAMPLES)
    assert result == ([1.0, 0.0, 0.5, 0.0], 2, False)
