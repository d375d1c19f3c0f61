"""A stop request reaches the reward's own thread, never a thread the reward is starting.

On CPython <= 3.11 a thread being started carries, until it first runs, the id of the thread
that starts it; an exception raised "in" the reward's thread at that moment can land on the
new thread instead, kill it before it announces itself, and leave the reward's thread waiting
in ``Thread.start()`` for ever (CPython gh-140746's hang), so the stop never takes.
"""

from __future__ import annotations

import threading
import time
import warnings

from ift.rewards import Reward, RewardTimeoutWarning, score_safely


class StartsHelperThreads(Reward):
    """Starts a short helper thread after another, for ever (a reward that uses threads)."""

    def __call__(self, prompts, responses, examples):
        while True:
            helper = threading.Thread(target=sum, args=((1, 2),), daemon=True)
            helper.start()
            helper.join()


def test_a_reward_that_keeps_starting_threads_is_stopped_every_time():
    # Repeated because one stop lands in a thread's start window only some of the time.
    for attempt in range(12):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            result = score_safely(StartsHelperThreads(), ["p"], ["r"], [{}], timeout_s=0.1)
        assert result.timed_out
        messages = [str(w.message) for w in caught if issubclass(w.category, RewardTimeoutWarning)]
        assert messages and "the call was stopped" in messages[0], f"attempt {attempt}: {messages}"
    give_up = time.monotonic() + 5
    while time.monotonic() < give_up and any(t.name == "reward-StartsHelperThreads" for t in threading.enumerate()):
        time.sleep(0.02)
    assert not any(t.name == "reward-StartsHelperThreads" for t in threading.enumerate())
