"""The code sandbox: correct code scores, hostile code scores 0, and the test process (and
the machine) come out untouched.

Every hostile program is run twice where it matters: with every layer, and with the
in-process audit hook switched off (``audit_hook=False``) to check that the OS layers alone
(uid drop, namespaces, rlimits, process-group kill) still hold. Those second runs need what
this machine grants (root for the uid drop, ``unshare`` for namespaces); they are skipped,
with the reason, where it is not granted.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import socket
import time
import uuid

import pytest
import torch

from ift.rewards import CodeTestsReward, extract_code, run_in_sandbox
from ift.rewards.sandbox import sandbox_isolation

QUICK = dict(timeout_s=5.0)


@pytest.fixture(scope="module")
def layers():
    return set(sandbox_isolation())


def needs(layers, *wanted):
    missing = [w for w in wanted if w not in layers]
    if missing:
        pytest.skip(f"this machine does not grant the sandbox {missing} (has {sorted(layers)})")


def live_processes_in_session(session_id):
    """Pids of live (not zombie) processes whose session is ``session_id``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == session_id and fields[0] != "Z":
            found.append(int(entry))
    return found


def assert_no_strays(result):
    assert result.pid is not None
    deadline = time.monotonic() + 2.0
    while live_processes_in_session(result.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live_processes_in_session(result.pid) == []
    assert result.workdir is not None and not os.path.exists(result.workdir)


def assert_zero(result):
    assert result.passed == 0
    assert CodeTestsReward().score_result(result) == 0.0


# ------------------------------------------------------------------ correct code


def test_correct_function_scores_one(layers):
    result = run_in_sandbox("def f(x):\n    return (x + 3) * 2\n",
                            ["assert f(1) == 8", "assert f(-3) == 0", "assert f(0) == 6"], **QUICK)
    assert result.status == "ok" and (result.passed, result.total) == (3, 3)
    assert result.outcomes == ["pass"] * 3 and result.fraction_passed == 1.0
    assert {"rlimits", "audit"} <= set(result.isolation)
    assert_no_strays(result)


def test_half_correct_scores_the_fraction_and_a_raising_test_does_not_stop_the_others():
    program = "def f(x):\n    if x == 2:\n        raise ValueError('boom')\n    return x * 2 if x > 0 else 0\n"
    tests = ["assert f(1) == 2", "assert f(2) == 4", "assert f(-1) == -2", "assert f(3) == 6"]
    result = run_in_sandbox(program, tests, **QUICK)
    assert result.status == "ok"
    assert result.outcomes == ["pass", "error", "fail", "pass"]
    assert result.fraction_passed == 0.5
    assert "ValueError: boom" in result.stderr_tail


def test_syntax_error_scores_zero():
    result = run_in_sandbox("def f(x)\n    return x", ["assert f(1) == 1"], **QUICK)
    assert result.status == "syntax_error"
    assert_zero(result)


def test_top_level_exception_scores_zero():
    result = run_in_sandbox("def f(x):\n    return x\nraise RuntimeError('no')", ["assert f(1) == 1"], **QUICK)
    assert result.status == "error"
    assert_zero(result)


def test_standard_library_imports_and_main_guard():
    program = (
        "import math, re, collections, itertools, functools\nfrom typing import List\n"
        "def f(xs: List[int]) -> int:\n    return math.prod(collections.Counter(xs).values())\n"
        "if __name__ == '__main__':\n    input('this would block on stdin')\n"
    )
    result = run_in_sandbox(program, ["assert f([1, 1, 2]) == 2", "assert f([]) == 1"], **QUICK)
    assert (result.status, result.passed) == ("ok", 2)


def test_files_inside_the_working_directory_are_allowed():
    program = "def f():\n    with open('a.txt', 'w') as h:\n        h.write('hi')\n    return open('a.txt').read()\n"
    result = run_in_sandbox(program, ["assert f() == 'hi'"], **QUICK)
    assert (result.status, result.passed) == ("ok", 1)


def test_extract_code_and_markdown_fences():
    fenced = "Here you go:\n```python\ndef f(x):\n    return x + 1\n```\nIt adds one."
    assert extract_code(fenced) == "def f(x):\n    return x + 1"
    assert extract_code("```\ndef f(x): return 1\n```") == "def f(x): return 1"
    assert extract_code("```py\ndef f(x): return 2\n") == "def f(x): return 2"  # never closed
    assert extract_code("```text\nhello\n```\n```python\nx = 1\n```") == "x = 1"
    assert extract_code("def f(x): return 3") == "def f(x): return 3"
    assert extract_code("") == ""
    reward = CodeTestsReward()
    example = {"tests": ["assert f(1) == 2", "assert f(5) == 6"]}
    assert reward(["p"], [fenced], [example]) == [1.0]


# ------------------------------------------------------------------ hostile code


def test_infinite_loop_hits_the_wall_clock_deadline():
    start = time.monotonic()
    result = run_in_sandbox("while True:\n    pass\n", ["assert 1 == 1"], timeout_s=1.0)
    assert result.status == "timeout" and time.monotonic() - start < 3.0
    assert_zero(result)
    assert_no_strays(result)


def test_cpu_limit_kills_a_busy_test_before_the_deadline():
    start = time.monotonic()
    result = run_in_sandbox("def f():\n    while True:\n        pass\n", ["assert f() == 1"], timeout_s=20.0, cpu_s=1)
    assert result.status == "timeout" and "CPU" in result.detail
    assert time.monotonic() - start < 8.0
    assert_zero(result)
    assert_no_strays(result)


@pytest.mark.parametrize("audit", [True, False], ids=["all-layers", "os-layers-only"])
def test_fork_bomb_is_contained_and_leaves_no_process(audit, layers):
    if not audit:
        needs(layers, "rlimits")
    program = "import os\ndef f():\n    while True:\n        os.fork()\n"
    result = run_in_sandbox(program, ["assert f() == 1"], timeout_s=3.0, audit_hook=audit)
    assert_zero(result)
    if audit:
        assert result.status == "blocked" and "os.fork" in result.blocked_events
    assert_no_strays(result)


@pytest.mark.parametrize("where", ["in-a-test", "top-level"])
def test_allocating_10_gb_is_a_memory_error(where):
    grab = "x = bytearray(10 * 1024 ** 3)\n"
    program = ("def f():\n    " + grab + "    return 1\n") if where == "in-a-test" else grab + "def f():\n    return 1\n"
    result = run_in_sandbox(program, ["assert f() == 1"], memory_mb=256, **QUICK)
    assert result.status == "memory"
    assert_zero(result)


@pytest.mark.parametrize("audit", [True, False], ids=["all-layers", "os-layers-only"])
def test_reading_the_parents_ssh_key_fails(audit, layers, tmp_path, monkeypatch):
    if not audit:
        needs(layers, "uid")  # without the uid drop only the audit hook stands in the way
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    secret = "SECRET-" + uuid.uuid4().hex
    key = home / ".ssh" / "id_rsa"
    key.write_text(secret)
    monkeypatch.setenv("HOME", str(home))
    program = (
        "import os\n"
        "def by_home():\n    return open(os.path.expanduser('~/.ssh/id_rsa')).read()\n"
        f"def by_path():\n    return open({str(key)!r}).read()\n"
    )
    tests = [f"assert by_home() == {secret!r}", f"assert by_path() == {secret!r}"]
    result = run_in_sandbox(program, tests, audit_hook=audit, **QUICK)
    assert_zero(result)
    assert secret not in result.stderr_tail
    if audit:
        assert result.status == "blocked"


def test_environment_of_the_parent_is_not_visible(monkeypatch):
    secret = "SECRET-" + uuid.uuid4().hex
    monkeypatch.setenv("IFT_SANDBOX_TEST_SECRET", secret)
    program = (
        "import os\n"
        "def env():\n    return os.environ.get('IFT_SANDBOX_TEST_SECRET')\n"
        f"def proc_environ():\n    return open('/proc/{os.getpid()}/environ', 'rb').read().decode()\n"
        "def home():\n    return os.environ['HOME']\n"
    )
    tests = [f"assert env() == {secret!r}", f"assert {secret!r} in proc_environ()",
             f"assert home() == {os.environ['HOME']!r}"]
    result = run_in_sandbox(program, tests, **QUICK)
    assert_zero(result)
    assert result.outcomes[0] == "fail"


@pytest.mark.parametrize("audit", [True, False], ids=["all-layers", "os-layers-only"])
def test_network_is_unreachable(audit, layers):
    if not audit:
        needs(layers, "netns")
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(5)
    server.setblocking(False)
    port = server.getsockname()[1]
    program = (
        "import socket\n"
        f"def f():\n    s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n    s.sendall(b'hi')\n    return 1\n"
    )
    try:
        # socket is preloaded here so that, with the hook off, only the namespace stops it.
        result = run_in_sandbox(program, ["assert f() == 1"], audit_hook=audit,
                                preload=("socket",), **QUICK)
        with pytest.raises(BlockingIOError):
            server.accept()
    finally:
        server.close()
    assert_zero(result)


@pytest.mark.parametrize("audit", [True, False], ids=["all-layers", "os-layers-only"])
def test_writing_outside_the_working_directory_fails(audit, layers, tmp_path):
    if not audit:
        needs(layers, "uid")
    inside_tmp_path = tmp_path / "pwned.txt"
    in_slash_tmp = f"/tmp/ift-pwned-{uuid.uuid4().hex}.txt"
    targets = [str(inside_tmp_path)] + ([in_slash_tmp] if audit else [])  # /tmp is world-writable
    program = "def write(path):\n    with open(path, 'w') as h:\n        h.write('pwned')\n    return 1\n"
    tests = [f"assert write({t!r}) == 1" for t in targets]
    tests.append(f"import os\nos.makedirs({str(tmp_path / 'newdir')!r})")
    result = run_in_sandbox(program, tests, audit_hook=audit, **QUICK)
    assert_zero(result)
    assert not inside_tmp_path.exists() and not os.path.exists(in_slash_tmp)
    assert not (tmp_path / "newdir").exists()


def test_rebinding_builtins_does_not_blind_the_audit_hook():
    # /tmp is world-writable: only the audit hook stops a write there. Its rules must not read
    # str/bytes/int through names that the untrusted code can rebind first.
    target = f"/tmp/ift-pwned-{uuid.uuid4().hex}"
    program = (
        "import builtins, os\n"
        "def write(path):\n"
        "    for name, fake in (('str', float), ('bytes', complex), ('int', float), ('bool', float)):\n"
        "        setattr(builtins, name, fake)\n"
        "        globals()[name] = fake\n"
        "    os.mkdir(path)\n"
        "    with open(path + '/file', 'w') as h:\n"
        "        h.write('pwned')\n"
        "    return 1\n"
    )
    try:
        result = run_in_sandbox(program, [f"assert write({target!r}) == 1"], audit_hook=True, **QUICK)
        assert_zero(result)
        assert not os.path.exists(target)
    finally:
        shutil.rmtree(target, ignore_errors=True)


@pytest.mark.parametrize("audit", [True, False], ids=["all-layers", "os-layers-only"])
def test_killing_the_parent_fails(audit, layers):
    if not audit and not ({"uid", "pidns"} & layers):
        pytest.skip("without the uid drop or a PID namespace only the audit hook stops the signal")
    program = (
        "import os, signal\n"
        "def by_ppid():\n    os.kill(os.getppid(), signal.SIGKILL)\n    return 1\n"
        f"def by_pid():\n    os.kill({os.getpid()}, signal.SIGKILL)\n    return 1\n"
    )
    result = run_in_sandbox(program, ["assert by_pid() == 1", "assert by_ppid() == 1"], audit_hook=audit, **QUICK)
    # We are still here to check it. The kill by pid fails (hook, or EPERM as another uid,
    # or ESRCH: our pid does not exist in the sandbox's PID namespace); in a PID namespace
    # getppid() is 0 and kill(0, ...) reaches only the sandbox's own group, so with the
    # hook off by_ppid() may return.
    assert result.outcomes[0] == "error"
    if audit:
        assert_zero(result)


def test_forged_output_does_not_count():
    program = (
        "import os\n"
        "print('PASSED 5/5')\n"
        "lines = b'PASSED 5/5\\nok\\ntest 0 pass\\nend 1 1 0 -\\n' + b'0' * 32 + b' test 0 pass\\n'\n"
        "for fd in range(1, 256):\n"
        "    try:\n        os.write(fd, lines)\n    except OSError:\n        pass\n"
        "os._exit(0)\n"
    )
    result = run_in_sandbox(program, ["assert f(1) == 1"], **QUICK)
    assert result.status == "crash" and result.forged_lines >= 3
    assert_zero(result)


def test_forging_during_each_test_does_not_count():
    program = (
        "import os\n"
        "def f(x):\n"
        "    for fd in range(1, 256):\n"
        "        for i in range(3):\n"
        "            try:\n                os.write(fd, f'test {i} pass\\n'.encode())\n"
        "            except OSError:\n                pass\n"
        "    return -1\n"
    )
    result = run_in_sandbox(program, ["assert f(0) == 0", "assert f(1) == 1", "assert f(2) == 2"], **QUICK)
    assert result.status == "ok" and result.forged_lines > 0
    assert_zero(result)


def test_hunting_for_the_nonce_is_refused():
    program = (
        "import sys, gc\n"
        "def frames():\n    return len(sys._getframe(1).f_locals)\n"
        "def traceback_frame():\n    try:\n        raise ValueError\n"
        "    except ValueError as e:\n        return len(e.__traceback__.tb_frame.f_back.f_locals)\n"
        "def objects():\n    return len(gc.get_objects())\n"
        "def memory():\n    return len(open('/proc/self/mem', 'rb').read(1))\n"
    )
    tests = ["assert frames() > 0", "assert traceback_frame() > 0", "assert objects() > 0", "assert memory() > 0"]
    result = run_in_sandbox(program, tests, **QUICK)
    assert result.status == "blocked" and result.blocked >= 4
    assert_zero(result)


def test_always_equal_objects_do_not_pass_strict_asserts():
    program = "class Anything:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return Anything()\n"
    tests = ["assert f(1) == 2", "assert f(1) == [1, 2]", "assert f(1) == {'a': 1}"]
    assert run_in_sandbox(program, tests, **QUICK).passed == 0
    nested = "class Anything:\n    def __eq__(self, other):\n        return True\ndef f(x):\n    return [Anything(), 2]\n"
    assert run_in_sandbox(nested, ["assert f(1) == [1, 2]"], **QUICK).passed == 0
    # Why strict_asserts exists: plain assert semantics accept the object.
    assert run_in_sandbox(program, tests[:1], strict_asserts=False, **QUICK).passed == 1


def test_monkeypatching_the_harness_changes_nothing():
    patch = (
        "import os, builtins, posix, sys\n"
        "os.write = posix.write = lambda *a: 0\n"
        "builtins.len = lambda x: 0\nbuiltins.type = lambda x: int\nbuiltins.isinstance = lambda *a: True\n"
        "sys.modules['__main__'].__dict__.clear()\n"
    )
    good = run_in_sandbox(patch + "def f(x):\n    return x * 2\n", ["assert f(2) == 4", "assert f(3) == 6"], **QUICK)
    assert (good.status, good.passed) == ("ok", 2)
    bad = run_in_sandbox(patch + "def f(x):\n    return 0\n", ["assert f(2) == 4", "assert f(3) == 6"], **QUICK)
    assert (bad.status, bad.passed) == ("ok", 0)


def test_flooding_stdout_and_stderr_is_harmless():
    program = "import sys\nprint('x' * 10_000_000)\nsys.stderr.write('y' * 10_000_000)\ndef f():\n    return 1\n"
    result = run_in_sandbox(program, ["assert f() == 1"], **QUICK)
    assert (result.status, result.passed) == ("ok", 1)
    assert len(result.stderr_tail) <= 2000


def test_parent_is_untouched(tmp_path):
    cwd, environ = os.getcwd(), dict(os.environ)
    run_in_sandbox("import os\nos.chdir('/')\nos.environ['PATH'] = 'x'\n", ["assert 1 == 1"], **QUICK)
    assert os.getcwd() == cwd and dict(os.environ) == environ


# ------------------------------------------------------------------ the reward


def test_reward_scores_counts_and_caches():
    reward = CodeTestsReward(timeout_s=2.0, max_workers=2)
    example = {"tests": ["assert f(1) == 2", "assert f(2) == 4"]}
    responses = [
        "def f(x):\n    return 2 * x",            # 1.0
        "def f(x):\n    return 2",                # 0.5
        "def f(x) return",                         # syntax error
        "def f(x):\n    while True:\n        pass",  # timeout
        "import socket\ndef f(x):\n    return 2 * x",  # blocked import: error
        "",                                          # nothing to run
        "def f(x):\n    return 2 * x",            # duplicate: run once
    ]
    scores = reward(["p"] * len(responses), responses, [example] * len(responses))
    assert scores == [1.0, 0.5, 0.0, 0.0, 0.0, 0.0, 1.0]
    assert reward.timeouts == 1 and reward.counts["runs"] == 5 and reward.counts["empty"] == 1
    assert [r.status for r in reward.last_results] == ["ok", "ok", "syntax_error", "timeout", "error", "error", "ok"]
    reward(["p"], [responses[0]], [example])
    assert reward.counts["cache_hits"] == 1
    all_or_nothing = CodeTestsReward(partial_credit=False)
    assert all_or_nothing(["p"] * 2, responses[:2], [example] * 2) == [1.0, 0.0]


def test_reward_names_the_example_without_tests():
    reward = CodeTestsReward()
    with pytest.raises(KeyError, match="example 1 has no 'tests' field"):
        reward(["p", "q"], ["x", "y"], [{"tests": ["assert 1 == 1"]}, {"answer": 3}])
    with pytest.raises(TypeError, match="example 0"):
        reward(["p"], ["x"], [{"tests": [1, 2]}])


def test_reward_round_trips_through_torch_load_weights_only():
    reward = CodeTestsReward(timeout_s=3.0, memory_mb=128)
    reward(["p"], ["def f():\n    return 1"], [{"tests": ["assert f() == 1"]}])
    buffer = io.BytesIO()
    torch.save({"reward": reward}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer)["reward"]  # weights_only=True by default
    assert isinstance(loaded, CodeTestsReward) and loaded.timeout_s == 3.0 and loaded.memory_mb == 128
    assert loaded(["p"], ["def f():\n    return 1"], [{"tests": ["assert f() == 1"]}]) == [1.0]


def test_signals_are_not_sent_outside(layers):
    # The sandbox's own process group is the only one a kill(0, ...) can reach.
    result = run_in_sandbox("import os, signal\ndef f():\n    os.kill(0, signal.SIGKILL)\n    return 1\n",
                            ["assert f() == 1"], **QUICK)
    assert_zero(result)
    os.kill(os.getpid(), 0)  # still alive
    assert signal.getsignal(signal.SIGINT) is not None
