"""Run model-written Python programs in a sandbox (HumanEval / MBPP checks).

Each program gets its own process, started by a launcher (:mod:`gcache.scoring._sandbox_child`) that confines
itself before it forks the program:

* a fresh scratch folder as working directory, ``HOME`` and ``TMPDIR``; ``python -I``; an environment without
  the parent's variables (no API key reaches model-written code);
* limits on wall time (the whole process group is killed), CPU seconds, address space, number of processes,
  file size and open files;
* no network: a network namespace with no interface up, plus Landlock's TCP rules where the kernel has them;
* a PID namespace whose processes all die with the program;
* Landlock filesystem rules: writes only inside the scratch folder, reads only there, in the interpreter's
  installation and in system library folders (so it cannot read the project, its ``.env`` or a home folder);
* as root, a throwaway user id instead of root (the kernel never limits root's processes).

What the OS refuses is reported, not hidden: every :class:`ExecutionResult` carries ``protections``, one line per
protection saying ``on: ...`` or ``off: <reason>``, and :func:`sandbox_report` gives the same for a run's summary.

>>> run_program("assert 1 + 1 == 2").status  # doctest: +SKIP
'passed'
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

__all__ = ["ExecutionResult", "SandboxLimits", "run_program", "sandbox_report"]

logger = logging.getLogger(__name__)

_LAUNCHER = Path(__file__).with_name("_sandbox_child.py")
_TAIL = 2000  # characters of stdout / stderr kept in a result
# Throwaway user ids used when the caller is root: high, so that no real account owns them.
_UID_BASE, _UID_SPAN = 1_000_000, 1_000_000


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program.

    Args:
        wall_s (float): Wall-clock seconds before the process group is killed. Default is 10.
        cpu_s (float): CPU seconds (rounded up; SIGKILL one second later). Default is 10.
        memory_mb (int): Address space in MiB. Default is 1024.
        max_processes (int): Processes the program may have at once, itself included. Default is 32.
        max_file_mb (int): Largest file it may write, in MiB (also caps what it prints). Default is 16.
        max_open_files (int): Open file descriptors. Default is 256.
    """

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 256

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of :func:`run_program`.

    Args:
        status (str): ``"passed"`` (exit 0), ``"failed"`` (non-zero exit, e.g. a failed assert or a
            ``MemoryError``), ``"timeout"`` (wall time), ``"cpu_limit"`` (killed at the CPU limit) or
            ``"sandbox_error"`` (the launcher itself failed).
        returncode (int | None): The program's exit status (negative: killed by that signal); None on timeout.
        stderr (str): Last 2,000 characters of stderr.
        stdout (str): Last 2,000 characters of stdout. Default is "".
        seconds (float): Wall time. Default is 0.
        cpu_s (float | None): CPU seconds of the program and its children, when known. Default is None.
        protections (dict[str, str]): ``{protection: "on: ..." | "off: reason"}``. Default is {}.
    """

    status: str
    returncode: int | None
    stderr: str
    stdout: str = ""
    seconds: float = 0.0
    cpu_s: float | None = None
    protections: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether the program exited with status 0."""
        return self.status == "passed"


def _read_roots() -> list[str]:
    """Folders the program may read besides its scratch folder: the interpreter's installation."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            roots.add(path)
    return sorted(r for r in roots if r and os.path.isdir(r))


def _tail(path: Path) -> str:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 4 * _TAIL))
        return f.read().decode("utf-8", "replace")[-_TAIL:]


def _read_status(fd: int) -> tuple[dict, dict]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    protections, exit_info = {}, {}
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if "protections" in message:
            protections = message["protections"]
        else:
            exit_info = message
    return protections, exit_info


def run_program(program: str, timeout_s: float | None = None, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run ``program`` in the sandbox and report how it ended.

    Args:
        program (str): Python source.
        timeout_s (float | None): Wall-clock limit in seconds; overrides ``limits.wall_s`` (and raises the CPU
            limit to match when it is lower). Default is None.
        limits (SandboxLimits | None): Resource limits. Default is ``SandboxLimits()``.

    Returns:
        ExecutionResult: Status, exit status, output tails, times and the protections that were active.

    Raises:
        ValueError: If ``timeout_s`` is not positive.
    """
    limits = limits or SandboxLimits()
    if timeout_s is not None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        limits = SandboxLimits(**{**asdict(limits), "wall_s": timeout_s, "cpu_s": max(limits.cpu_s, timeout_s)})
    root = os.geteuid() == 0
    with tempfile.TemporaryDirectory(prefix="gcache-sandbox-") as tmp:
        scratch = Path(tmp) / "work"
        scratch.mkdir()
        (scratch / "program.py").write_text(program, encoding="utf-8")
        run_as = _UID_BASE + secrets.randbelow(_UID_SPAN) if root else None
        if run_as is not None:
            os.chown(scratch, run_as, run_as)
            os.chown(scratch / "program.py", run_as, run_as)
        read_fd, write_fd = os.pipe()
        cfg = {"status_fd": write_fd, "scratch": str(scratch), "program": "program.py", "python": sys.executable,
               "read_roots": _read_roots(), "run_as_uid": run_as, "limits": asdict(limits)}
        # One BLAS/OpenMP thread: a numpy import must not reserve per-core buffers beyond the memory limit.
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
               "HOME": str(scratch), "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
               "MKL_NUM_THREADS": "1"}
        # Output goes to files outside the scratch folder: the file-size limit caps them (a pipe would not).
        out_path, err_path = Path(tmp) / "stdout", Path(tmp) / "stderr"
        start = time.monotonic()
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            try:
                proc = subprocess.Popen([sys.executable, "-I", str(_LAUNCHER), json.dumps(cfg)], cwd=scratch,
                                        env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                        pass_fds=(write_fd,), start_new_session=True)
            finally:
                os.close(write_fd)
            timed_out = False
            try:
                proc.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)  # the program dies with the launcher (PDEATHSIG, PID ns)
                proc.wait()
        seconds = time.monotonic() - start
        with os.fdopen(read_fd, "rb", closefd=True) as status:
            protections, exit_info = _read_status(status.fileno())
        stdout, stderr = _tail(out_path), _tail(err_path)
    protections = {**_parent_protections(limits), **protections}
    if timed_out:
        return ExecutionResult("timeout", None, stderr, stdout, seconds, None, protections)
    if "returncode" not in exit_info:
        logger.warning("sandbox launcher failed (exit %s): %s", proc.returncode, stderr[-500:])
        return ExecutionResult("sandbox_error", proc.returncode, stderr, stdout, seconds, None, protections)
    code, cpu_s = exit_info["returncode"], exit_info.get("cpu_s")
    if code == 0:
        status = "passed"
    elif code in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_s is not None and cpu_s >= limits.cpu_s - 0.5:
        status = "cpu_limit"
    else:
        status = "failed"
    return ExecutionResult(status, code, stderr, stdout, seconds, cpu_s, protections)


def _parent_protections(limits: SandboxLimits) -> dict[str, str]:
    return {
        "process": "on: own process and session, python -I, empty environment",
        "scratch_folder": "on: fresh temporary folder as working directory, HOME and TMPDIR; deleted afterwards",
        "wall_time": f"on: {limits.wall_s:g} s, then the process group is killed",
    }


def sandbox_report(limits: SandboxLimits | None = None) -> dict[str, str]:
    """The protections a program gets on this machine, found by running an empty program.

    Returns:
        dict[str, str]: ``{protection: "on: ..." | "off: reason"}`` (what a run's summary records).
    """
    return run_program("pass", limits=limits).protections
