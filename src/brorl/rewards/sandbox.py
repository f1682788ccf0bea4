"""The code sandbox: the only place in brorl that runs untrusted (model-written) programs.

Each run is a fresh ``python -I`` process (isolated mode: no user site, no ``PYTHON*`` variables, no cwd on
``sys.path``) in its own session, started with a scrubbed environment, in a private temporary directory. A
trusted bootstrap (:data:`_BOOTSTRAP`) runs first *inside the child*, sets the limits below, and only then
executes the program. What is isolated on Linux, and how (docs/rewards.md repeats this table):

| threat | mechanism | when |
|---|---|---|
| runaway CPU / infinite loop | wall-clock timeout in the parent, then SIGKILL of the process group and of every process of the sandbox uid; ``RLIMIT_CPU`` as a backstop | always |
| memory bomb | ``RLIMIT_AS`` (address space, default 1 GiB): allocations fail with MemoryError | always |
| fork bomb | ``RLIMIT_NPROC`` counted against a *per-run uid* nobody else uses | root only (see below) |
| huge files / output | ``RLIMIT_FSIZE`` (default 16 MiB) on every file including captured stdout; ``RLIMIT_NOFILE`` 64 | always |
| writing outside its directory | runs as an unprivileged per-run uid that owns only its working directory; fresh private tmpfs on ``/tmp``, ``/var/tmp``, ``/dev/shm`` in a private mount namespace | root only |
| reading the parent's environment | ``env`` scrubbed to ``PATH``/``LANG``; ``/proc/<parent>/environ`` is unreadable across uids | scrub always; ``/proc`` root only |
| network | new network namespace with no interfaces up (not even loopback) | root, or where unprivileged user namespaces are allowed |
| killing its parent / other processes | different uid: ``kill`` fails with EPERM; ``PR_SET_NO_NEW_PRIVS`` blocks setuid binaries | root only |

Why a per-run uid: as root, ``RLIMIT_NPROC`` is not enforced at all (the kernel exempts uid 0), so a fork bomb
would take down the machine. The child therefore switches to uid ``1_000_000 + 64 * pid + slot`` (unique among
concurrently running sandboxes, present in no passwd file), which also gives a reliable clean-up: after the run
every process with that uid is killed, wherever it moved its session. The interpreter must stay readable after
the switch: when it lives under a directory other users cannot enter (``/root/.pyenv``), the bootstrap, still
root in its private mount namespace, bind-mounts the interpreter's tree onto an empty tmpfs laid over that
directory, which also hides the rest of it (``/root``'s other files).

Without root (a normal user): limits on CPU, memory, file size and open files, scrubbed env and private cwd
still apply; ``RLIMIT_NPROC`` is set to the user's current process count plus ``max_procs`` (best effort: it
counts the user's other processes too); there is no uid separation, so the program can write where the user can
and signal the user's processes. :func:`sandbox_info` reports which protections are active, and the containment
tests skip with that reason when a guarantee is missing.

Known limit: in assert mode the pass count is read from a line the harness prints with a random nonce, so an
early ``os._exit(0)`` scores 0, but a program that deliberately walks the interpreter's frames could forge it.
"""

from __future__ import annotations

import ast
import contextlib
import itertools
import json
import math
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

UID_BASE = 1_000_000
_slots = itertools.count()
_slot_lock = threading.Lock()


@dataclass(frozen=True)
class CodeResult:
    """Outcome of one program against its tests: reward = passed / total (ProRL's fraction-passed)."""

    passed: int
    total: int
    reason: str
    """``"ok"`` when all passed, else why not: ``"timeout"``, ``"wrong_answer"``, ``"error: <last line>"``, ..."""

    @property
    def reward(self) -> float:
        return self.passed / self.total if self.total else 0.0


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits for one sandboxed run (plain numbers; no config objects reach the sandbox)."""

    memory_mb: int = 1024
    max_procs: int = 16
    max_file_mb: int = 16
    max_open_files: int = 64


@dataclass(frozen=True)
class RunOutcome:
    """One process run: exit code (None on timeout), captured output (truncated), and the wall time."""

    returncode: int | None
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float


# Runs inside the child as the first code, before any untrusted code. argv[1] is a JSON config (not secret).
_BOOTSTRAP = r"""
import ctypes, json, os, resource, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def fail(msg):
    sys.stderr.write("brorl-sandbox-setup: " + msg + "\n"); sys.stderr.flush(); os._exit(125)
def mount(src, dst, fstype, flags, data):
    if libc.mount(src.encode() if src else None, dst.encode(), fstype.encode() if fstype else None,
                  flags, data.encode() if data else None) != 0:
        fail("mount %s -> %s: errno %d" % (src, dst, ctypes.get_errno()))
if cfg["root"]:
    if libc.unshare(0x00020000 | 0x40000000) != 0:  # CLONE_NEWNS | CLONE_NEWNET
        fail("unshare: errno %d" % ctypes.get_errno())
    mount("none", "/", None, 0x4000 | (1 << 18), None)  # MS_REC | MS_PRIVATE: our mounts stay ours
    stage = cfg["stage"]
    for blocked, child in cfg["reveal"]:
        mount(child, stage, None, 4096 | 0x4000, None)  # MS_BIND | MS_REC
        mount("tmpfs", blocked, "tmpfs", 2 | 4, "mode=755,size=1m")  # MS_NOSUID | MS_NODEV
        target = os.path.join(blocked, os.path.basename(child))
        os.mkdir(target)
        mount(stage, target, None, 4096 | 0x4000, None)
        libc.umount2(stage.encode(), 2)  # MNT_DETACH
    for tmp in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(tmp):
            mount("tmpfs", tmp, "tmpfs", 2 | 4, "mode=1777,size=%dm" % cfg["max_file_mb"])
elif cfg["try_userns"]:
    libc.unshare(0x10000000 | 0x40000000)  # CLONE_NEWUSER | CLONE_NEWNET; best effort without root
R = resource
R.setrlimit(R.RLIMIT_CORE, (0, 0))
R.setrlimit(R.RLIMIT_CPU, (cfg["cpu_s"], cfg["cpu_s"]))
R.setrlimit(R.RLIMIT_AS, (cfg["memory"], cfg["memory"]))
R.setrlimit(R.RLIMIT_FSIZE, (cfg["fsize"], cfg["fsize"]))
R.setrlimit(R.RLIMIT_NOFILE, (cfg["nofile"], cfg["nofile"]))
R.setrlimit(R.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
if cfg["root"]:
    os.setgroups([]); os.setgid(cfg["uid"]); os.setuid(cfg["uid"])
    if os.getuid() == 0 or os.geteuid() == 0:
        fail("could not drop root")
libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS: setuid binaries cannot give root back
del libc, ctypes, R, mount, fail
import builtins, traceback
_g = {"__name__": "__main__", "__builtins__": builtins, "__file__": "prog.py"}
sys.argv = ["prog.py"]
if cfg["mode"] == "asserts":
    _nonce = sys.stdin.readline().strip()
    sys.stdin = open(os.devnull)
    with open("tests.json") as fh:
        _tests = json.load(fh)
    _passed = 0
    try:
        exec(compile(open("prog.py").read(), "prog.py", "exec"), _g)
    except BaseException:
        traceback.print_exc()
    else:
        for _src, _counts in _tests:
            try:
                exec(compile(_src, "tests.py", "exec"), _g)
                _passed += _counts
            except BaseException:
                traceback.print_exc(limit=1)
    sys.stdout.flush()
    sys.__stdout__.write("\n%s %d\n" % (_nonce, _passed)); sys.__stdout__.flush()
    os._exit(0)
else:
    try:
        exec(compile(open("prog.py").read(), "prog.py", "exec"), _g)
    except SystemExit as e:
        sys.stdout.flush(); raise
    except BaseException:
        traceback.print_exc(); sys.stdout.flush(); os._exit(1)
"""


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _next_uid() -> int:
    with _slot_lock:
        slot = next(_slots) % 64
    return UID_BASE + 64 * os.getpid() + slot


def _reveal_plan(paths: list[str]) -> list[tuple[str, str]]:
    """For each path, the first ancestor others cannot enter and its child on the way: [(blocked, child)]."""
    plan: list[tuple[str, str]] = []
    for path in paths:
        parts = Path(path).resolve().parts
        for depth in range(1, len(parts) - 1):
            ancestor = os.path.join(*parts[: depth + 1])
            if not os.stat(ancestor).st_mode & 0o001:
                pair = (ancestor, os.path.join(ancestor, parts[depth + 1]))
                if pair not in plan and not any(ancestor.startswith(b + os.sep) for b, _ in plan):
                    plan.append(pair)
                break
    return plan


def _interpreter_paths() -> list[str]:
    return sorted({sys.base_prefix, sys.prefix, os.path.dirname(os.path.realpath(sys.executable))})


def _user_process_count() -> int:
    uid = os.getuid()
    return sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _proc_uid(p) == uid)


def _proc_uid(proc_dir: Path) -> int | None:
    try:
        for line in (proc_dir / "status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def kill_uid(uid: int, count: int = 1, rounds: int = 20) -> int:
    """SIGKILL every process whose real uid is in ``[uid, uid + count)``, repeatedly so forks in flight are caught.

    Returns the number of kills sent. Only sandbox uids (>= ``UID_BASE``) are accepted.
    """
    if uid < UID_BASE:
        raise ValueError(f"refusing to kill processes of uid {uid}: only sandbox uids (>= {UID_BASE})")
    kills = 0
    for _ in range(rounds):
        victims = [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and uid <= (_proc_uid(p) or -1) < uid + count
        ]
        if not victims:
            break
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                kills += 1
            except ProcessLookupError:
                pass
        time.sleep(0.01)
    return kills


def kill_sandboxes_of(pid: int) -> int:
    """Kill whatever sandboxes process ``pid`` started (used when a pool worker is killed mid-run)."""
    return kill_uid(UID_BASE + 64 * pid, count=64) if _is_root() else 0


def _child_config(uid: int, timeout_s: float, limits: SandboxLimits, stage: str, mode: str) -> dict[str, Any]:
    root = _is_root()
    nproc = limits.max_procs if root else _user_process_count() + limits.max_procs
    return {
        "root": root,
        "uid": uid,
        "stage": stage,
        "mode": mode,
        "try_userns": not root,
        "reveal": _reveal_plan(_interpreter_paths()) if root else [],
        "cpu_s": math.ceil(timeout_s) + 1,
        "memory": limits.memory_mb << 20,
        "fsize": limits.max_file_mb << 20,
        "nofile": limits.max_open_files,
        "nproc": nproc,
        "max_file_mb": limits.max_file_mb,
    }


def _read_capped(path: Path, cap: int = 1 << 20) -> str:
    with path.open("rb") as fh:
        return fh.read(cap).decode("utf-8", errors="replace")


def run_program(
    source: str,
    *,
    stdin: str = "",
    timeout_s: float = 5.0,
    limits: SandboxLimits | None = None,
    mode: str = "script",
    files: dict[str, str] | None = None,
) -> RunOutcome:
    """Run ``source`` as ``prog.py`` in a fresh sandboxed process (module docstring) and capture its output.

    ``files`` are extra files written next to it (read-only to the program when running as root).
    """
    limits = limits or SandboxLimits()
    outer = Path(tempfile.mkdtemp(prefix="brorl-sandbox-"))
    uid = _next_uid()
    try:
        work, stage = outer / "work", outer / "stage"
        work.mkdir()
        stage.mkdir()
        (work / "prog.py").write_text(source)
        for name, text in (files or {}).items():
            (work / name).write_text(text)
        if _is_root():
            os.chown(work, uid, uid)  # its only writable place; outer stays root-only (0700)
        config = _child_config(uid, timeout_s, limits, str(stage), mode)
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8"}
        with (outer / "out").open("wb") as out, (outer / "err").open("wb") as err:
            start = time.perf_counter()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-c", _BOOTSTRAP, json.dumps(config)],
                cwd=work,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=err,
                start_new_session=True,
                close_fds=True,
            )
            returncode, timed_out = _wait(proc, stdin, timeout_s)
            seconds = time.perf_counter() - start
            _kill_all(proc, uid)
        return RunOutcome(
            returncode, _read_capped(outer / "out"), _read_capped(outer / "err"), timed_out, seconds
        )
    finally:
        shutil.rmtree(outer, ignore_errors=True)


def _wait(proc: subprocess.Popen, stdin: str, timeout_s: float) -> tuple[int | None, bool]:
    try:
        proc.communicate(stdin.encode(), timeout=timeout_s)
        return proc.returncode, False
    except subprocess.TimeoutExpired:
        return None, True
    except BrokenPipeError:  # the program exited without reading its stdin
        return proc.wait(timeout=timeout_s), False


def _kill_all(proc: subprocess.Popen, uid: int) -> None:
    """The program and everything it started: its process group, then (as root) every process of its uid."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if _is_root():
        kill_uid(uid)


def _count_asserts(tests: str) -> list[tuple[str, int]]:
    """Top-level statements of the test source with how many asserts each counts for (imports count 0)."""
    tree = ast.parse(tests)
    chunks = []
    for node in tree.body:
        n_asserts = sum(isinstance(sub, ast.Assert) for sub in ast.walk(node))
        chunks.append((ast.get_source_segment(tests, node) or ast.unparse(node), n_asserts))
    return chunks


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:200] if lines else ""


def _setup_failed(outcome: RunOutcome) -> bool:
    return outcome.returncode == 125 and "brorl-sandbox-setup" in outcome.stderr


def _run_asserts(code: str, tests: str, timeout_s: float, limits: SandboxLimits) -> CodeResult:
    try:
        chunks = _count_asserts(tests)
    except SyntaxError as exc:
        raise ValueError(f"test source is not valid Python: {exc}") from exc
    total = sum(n for _, n in chunks) or 1
    nonce = secrets.token_hex(16)
    outcome = run_program(
        code,
        stdin=nonce + "\n",
        timeout_s=timeout_s,
        limits=limits,
        mode="asserts",
        files={"tests.json": json.dumps(chunks)},
    )
    if outcome.timed_out:
        return CodeResult(0, total, "timeout")
    if _setup_failed(outcome):
        return CodeResult(0, total, "sandbox_setup_failed: " + _last_line(outcome.stderr))
    marks = [line.split() for line in outcome.stdout.splitlines() if line.startswith(nonce + " ")]
    if not marks:  # exited before the harness could report: killed by a limit, or os._exit
        detail = _last_line(outcome.stderr) or "no report"
        return CodeResult(
            0, total, f"error: exited before the tests reported (exit {outcome.returncode}): {detail}"
        )
    passed = min(int(marks[-1][1]), total)
    if passed == total:
        return CodeResult(passed, total, "ok")
    err = _last_line(outcome.stderr)
    failed_assert = "AssertionError" in err or "Error" not in err
    return CodeResult(passed, total, "wrong_answer" if failed_assert else f"error: {err}")


def _same_output(got: str, want: str) -> bool:
    """Equal up to trailing whitespace on each line and trailing blank lines (the usual judge rule)."""
    norm = lambda s: [line.rstrip() for line in s.rstrip().splitlines()]
    return norm(got) == norm(want)


def _run_io(code: str, cases: list[dict], timeout_s: float, limits: SandboxLimits) -> CodeResult:
    passed, reason = 0, "ok"
    for case in cases:
        outcome = run_program(code, stdin=str(case["input"]), timeout_s=timeout_s, limits=limits)
        if outcome.timed_out:
            reason = "timeout"
        elif _setup_failed(outcome):
            return CodeResult(0, len(cases), "sandbox_setup_failed: " + _last_line(outcome.stderr))
        elif outcome.returncode != 0:
            reason = f"error: exit {outcome.returncode}: {_last_line(outcome.stderr)}"
        elif _same_output(outcome.stdout, str(case["output"])):
            passed += 1
        else:
            reason = "wrong_answer"
    return CodeResult(passed, len(cases), "ok" if passed == len(cases) else reason)


def run_code_tests(
    code: str, tests: str | list[dict], *, timeout_s: float = 5.0, limits: SandboxLimits | None = None
) -> CodeResult:
    """Run untrusted ``code`` against ``tests`` in the sandbox; reward = passed / total.

    ``tests``: Python source whose top-level ``assert`` statements each count as one test (other statements,
    such as imports, run but do not count), or a list of ``{"input": str, "output": str}`` stdin/stdout cases
    (one process per case, ``timeout_s`` each). A syntax error in ``code`` fails every test.
    """
    if not timeout_s > 0:
        raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
    limits = limits or SandboxLimits()
    if isinstance(tests, str):
        return _run_asserts(code, tests, timeout_s, limits)
    if (
        isinstance(tests, list)
        and tests
        and all(isinstance(t, dict) and "input" in t and "output" in t for t in tests)
    ):
        return _run_io(code, tests, timeout_s, limits)
    raise ValueError("tests must be assert source (str) or a non-empty list of {'input', 'output'} dicts")


def sandbox_info() -> dict[str, Any]:
    """Which protections are active on this machine, measured by running a probe in the sandbox."""
    probe = (
        "import os, socket, resource\n"
        "s = socket.socket()\n"
        "try:\n    s.connect(('127.0.0.1', 9)); net = 'open'\n"
        "except OSError as e:\n    net = 'refused' if e.errno == 111 else 'isolated'\n"
        "print(os.getuid(), net, resource.getrlimit(resource.RLIMIT_NPROC)[0])\n"
    )
    outcome = run_program(probe, timeout_s=10.0)
    fields = outcome.stdout.split()
    if outcome.returncode != 0 or len(fields) < 3:
        return {"ok": False, "error": _last_line(outcome.stderr), "root": _is_root()}
    uid, net, nproc = int(fields[0]), fields[1], int(fields[2])
    separate_uid = uid >= UID_BASE
    return {
        "ok": True,
        "root": _is_root(),
        "separate_uid": separate_uid,
        "network_isolated": net == "isolated",
        "nproc_limit": nproc,
        "fork_bomb_contained": separate_uid,
        "filesystem_isolated": separate_uid,
        "startup_seconds": round(outcome.seconds, 3),
    }
