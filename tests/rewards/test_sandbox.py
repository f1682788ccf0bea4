"""Sandbox containment: each hostile program is stopped and scored 0 within its timeout, and nothing leaks.

Tests that rely on a protection only root can set up skip with the reason ``sandbox_info()`` reports.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

from brorl.rewards import run_code_tests, sandbox_info

TIMEOUT = 2.0
INFO = sandbox_info()
needs_uid = pytest.mark.skipif(
    not INFO.get("separate_uid"),
    reason=f"needs a separate sandbox uid (run as root); sandbox reports {INFO}",
)


def _contained(code: str, tests: str = "assert False, 'should not get here'\n", timeout_s: float = TIMEOUT):
    start = time.perf_counter()
    result = run_code_tests(code, tests, timeout_s=timeout_s)
    seconds = time.perf_counter() - start
    assert result.reward == 0.0, result
    assert seconds < timeout_s + 3.0, f"took {seconds:.1f}s"  # the timeout plus start-up and clean-up slack
    return result


def test_sandbox_probe_works():
    assert INFO["ok"], INFO


def test_infinite_loop_times_out():
    assert _contained("while True:\n    pass\n").reason == "timeout"


def test_sleeping_forever_times_out():  # no CPU used, so only the wall clock can stop it
    assert _contained("import time\ntime.sleep(3600)\n").reason == "timeout"


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(8 * 2**30)\n",  # one huge allocation
        "chunks = []\nwhile True:\n    chunks.append(bytearray(50 * 2**20))\n",  # grows until the limit
    ],
)
def test_memory_bomb_hits_address_space_limit(code):
    # zero-filling 1 GiB takes ~2 s on a busy 2-core machine, so the wall clock may win the race: both contain it
    reason = _contained(code).reason
    assert "MemoryError" in reason or reason == "timeout", reason


@needs_uid
def test_fork_bomb_is_capped_and_killed():
    # RLIMIT_NPROC on a uid of its own caps it at a few processes; every one of them is killed afterwards
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    _contained(code, timeout_s=1.0)
    for _ in range(50):  # killed processes linger a moment as zombies until init reaps them
        alive = [p for p in os.listdir("/proc") if p.isdigit() and _sandboxed_and_running(p)]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == []


def _sandboxed_and_running(pid: str) -> bool:
    try:
        with open(f"/proc/{pid}/status") as fh:
            fields = dict(line.split(":", 1) for line in fh if ":" in line)
    except OSError:
        return False
    return int(fields["Uid"].split()[0]) >= 1_000_000 and fields["State"].split()[0] not in ("Z", "X")


@needs_uid
def test_cannot_write_outside_its_directory(tmp_path):
    target = tmp_path / "escaped.txt"
    code = (
        "ok = 0\n"
        f"for path in [{str(target)!r}, '../escaped.txt', '/work/escaped.txt', '/etc/escaped']:\n"
        "    try:\n"
        "        open(path, 'w').write('pwned')\n"
        "        ok += 1\n"
        "    except OSError:\n"
        "        pass\n"
        "open('inside.txt', 'w').write('fine')  # its own directory is writable\n"
    )
    result = _contained(code, tests="assert ok > 0\n")
    assert result.reason == "wrong_answer"  # it ran (inside.txt was fine) but every escape failed
    assert (
        not target.exists() and not os.path.exists("/work/escaped.txt") and not os.path.exists("/etc/escaped")
    )


def test_cannot_read_parent_environment(monkeypatch):
    secret = "brorl-secret-7f3a9c"
    monkeypatch.setenv("BRORL_TEST_SECRET", secret)
    markers = [secret] + ([os.environ["HOME"]] if INFO.get("separate_uid") and "HOME" in os.environ else [])
    code = (
        "import os\n"
        "found = repr(dict(os.environ))\n"
        "for pid in (os.getppid(), 1):\n"
        "    try:\n"
        "        found += open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace')\n"
        "    except OSError:\n"
        "        pass\n"
    )
    # HOME is in the parent's start-up environment (visible in /proc/<pid>/environ) but not in the scrubbed one
    tests = "".join(f"assert {m!r} in found\n" for m in markers)
    assert _contained(code, tests=tests).reason == "wrong_answer"


@pytest.mark.skipif(not INFO.get("network_isolated"), reason=f"no network namespace here: {INFO}")
def test_cannot_open_network_socket():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        code = f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nconnected = True\n"
        assert _contained(code, tests="assert connected\n").reason.startswith("error")
    finally:
        server.close()


@needs_uid
def test_cannot_kill_its_parent():
    code = (
        "import os, signal\n"
        "for target in (os.getppid(), 1):\n"
        "    try:\n"
        "        os.kill(target, signal.SIGKILL)\n"
        "    except OSError:\n"
        "        pass\n"
        "os.kill(-1, signal.SIGKILL)  # everything it may signal: only its own uid, i.e. itself\n"
    )
    _contained(code)
    assert os.getpid() > 0  # still here; and the sandbox still works afterwards:
    assert run_code_tests("x = 1", "assert x == 1").reason == "ok"
