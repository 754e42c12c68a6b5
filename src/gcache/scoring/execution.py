"""Run model-written Python programs in a sandbox (HumanEval / MBPP checks).

Each program gets its own process, started by a launcher (:mod:`gcache.scoring._sandbox_child`) that confines
itself before it forks the program:

* a fresh scratch folder as working directory, ``HOME`` and ``TMPDIR``: a private tmpfs with a cap on its total
  size; ``python -I``; an environment without the parent's variables (no API key reaches model-written code);
* limits on wall time (the whole process group is killed), CPU seconds, address space, number of processes,
  file size and open files;
* no network: a network namespace with no interface up, plus Landlock's TCP rules where the kernel has them;
* a PID namespace whose processes all die with the program, and a private ``/proc`` that shows only them;
* no ``AF_UNIX`` sockets (seccomp): a pathname socket of the host is out of reach of the network namespace;
* Landlock filesystem rules: writes only inside the scratch folder, reads only there, in the interpreter's
  installation and in system library folders (so it cannot read the project, its ``.env`` or a home folder);
* as root, a throwaway user id instead of root (the kernel never limits root's processes).

A program passes only when it ran to its last line: the launcher hands it a random token through a pipe and
the program's bootstrap returns it after the last statement; exit status 0 alone (``sys.exit(0)`` before the
tests) is a failure.

What the OS refuses is reported, not hidden: every :class:`ExecutionResult` carries ``protections``, one line per
protection saying ``on: ...``, ``partial: ...`` or ``off: <reason>``, and :func:`sandbox_report` gives the same for
a run's summary. Nothing here raises for what a program does: a failure of the sandbox itself is that program's
``sandbox_error``, and its scratch tree is removed without recursion (leftovers of a killed run are removed by
the next one).

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
        max_scratch_mb (int): Total size of the scratch folder (a tmpfs, where the OS allows), in MiB. Default
            is 64.
    """

    wall_s: float = 10.0
    cpu_s: float = 10.0
    memory_mb: int = 1024
    max_processes: int = 32
    max_file_mb: int = 16
    max_open_files: int = 256
    max_scratch_mb: int = 64

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")


@dataclass(frozen=True)
class ExecutionResult:
    """Outcome of :func:`run_program`.

    Args:
        status (str): ``"passed"`` (ran to its last line and exited 0), ``"failed"`` (non-zero exit, e.g. a
            failed assert or a ``MemoryError``, or an exit before the last line), ``"timeout"`` (wall time), ``"cpu_limit"`` (killed at the CPU limit) or
            ``"sandbox_error"`` (the sandbox itself failed).
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
        """Whether the program ran to its last line and exited with status 0."""
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


_TMP_PREFIX = "gcache-sandbox-"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def remove_tree(path: str | os.PathLike) -> None:
    """Delete ``path`` and everything under it; never raises, never recurses.

    ``shutil.rmtree`` recurses once per level (5,000 nested folders raise ``RecursionError``) and opens paths
    longer than ``PATH_MAX``; this walks down and up with one open folder at a time, by names relative to it.
    What cannot be removed is left and logged.
    """
    path = os.fspath(path)
    try:
        fd = os.open(path, _DIR_FLAGS)
    except FileNotFoundError:
        return
    except OSError:
        try:
            os.unlink(path)  # not a folder
        except OSError as err:
            logger.warning("could not remove %s: %s", path, err)
        return
    names: list[str] = []  # the folders between ``path`` and ``fd``
    stuck: set[tuple[int, int]] = set()  # folders that could not be opened or removed: not entered again
    try:
        while True:
            sub = None
            try:
                with os.scandir(fd) as entries:
                    for entry in entries:
                        try:
                            if entry.is_dir(follow_symlinks=False):
                                key = (entry.stat(follow_symlinks=False).st_dev, entry.inode())
                                if sub is None and key not in stuck:
                                    sub = (entry.name, key)
                            else:
                                os.unlink(entry.name, dir_fd=fd)
                        except OSError:
                            continue
            except OSError:
                pass
            if sub is not None:
                name, key = sub
                try:
                    os.chmod(name, 0o700, dir_fd=fd)  # a program may have made a folder unreadable
                except OSError:
                    pass
                try:
                    child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError:
                    stuck.add(key)
                    continue
                os.close(fd)
                fd = child
                names.append(name)
                continue
            if not names:
                break
            here = os.fstat(fd)
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            try:
                os.rmdir(names.pop(), dir_fd=fd)
            except OSError:
                stuck.add((here.st_dev, here.st_ino))
    except OSError as err:
        logger.warning("could not finish removing %s: %s", path, err)
    finally:
        os.close(fd)
    try:
        os.rmdir(path)
    except OSError as err:
        logger.warning("could not remove %s: %s", path, err)


def _remove_leftovers(parent: str) -> None:
    """Remove scratch trees that a killed process (kill -9, a crash) could not remove: their owner pid is gone."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    for name in names:
        if not name.startswith(_TMP_PREFIX):
            continue
        owner = name[len(_TMP_PREFIX):].split("-", 1)[0]
        if not owner.isdigit() or int(owner) == os.getpid():
            continue
        try:
            os.kill(int(owner), 0)
            continue  # its process still runs (or the pid was reused): leave it
        except ProcessLookupError:
            pass
        except OSError:
            continue
        logger.info("removing a sandbox folder left by process %s: %s", owner, name)
        remove_tree(os.path.join(parent, name))


def run_program(program: str, timeout_s: float | None = None, limits: SandboxLimits | None = None) -> ExecutionResult:
    """Run ``program`` in the sandbox and report how it ended.

    Args:
        program (str): Python source.
        timeout_s (float | None): Wall-clock limit in seconds; overrides ``limits.wall_s`` (and raises the CPU
            limit to match when it is lower). Default is None.
        limits (SandboxLimits | None): Resource limits. Default is ``SandboxLimits()``.

    Returns:
        ExecutionResult: Status, exit status, output tails, times and the protections that were active. Whatever
        goes wrong inside the sandbox machinery is a ``sandbox_error`` result, not an exception.

    Raises:
        ValueError: If ``timeout_s`` is not positive.
    """
    limits = limits or SandboxLimits()
    if timeout_s is not None:
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        limits = SandboxLimits(**{**asdict(limits), "wall_s": timeout_s, "cpu_s": max(limits.cpu_s, timeout_s)})
    parent = tempfile.gettempdir()
    _remove_leftovers(parent)
    tmp = None
    try:
        # The owner's pid in the name lets a later run remove the tree if this process dies before it can.
        tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=parent)
        return _run_in(Path(tmp), program, limits)
    except Exception as err:  # noqa: BLE001 - one program's sandbox failure must not end the run
        logger.warning("sandbox failed: %s: %s", type(err).__name__, err)
        return ExecutionResult("sandbox_error", None, f"sandbox failed: {type(err).__name__}: {err}"[-_TAIL:],
                               protections=_parent_protections(limits))
    finally:
        if tmp is not None:
            remove_tree(tmp)


def _run_in(tmp: Path, program: str, limits: SandboxLimits) -> ExecutionResult:
    root = os.geteuid() == 0
    scratch = tmp / "work"
    scratch.mkdir()
    # The launcher copies the program into the scratch folder (a tmpfs it mounts there, where it can).
    program_file = tmp / "program.py"
    program_file.write_text(program, encoding="utf-8")
    run_as = _UID_BASE + secrets.randbelow(_UID_SPAN) if root else None
    if run_as is not None:
        os.chown(scratch, run_as, run_as)
    read_fd, write_fd = os.pipe()
    cfg = {"status_fd": write_fd, "scratch": str(scratch), "program_file": str(program_file),
           "python": sys.executable, "read_roots": _read_roots(), "run_as_uid": run_as, "limits": asdict(limits)}
    # One BLAS/OpenMP thread: a numpy import must not reserve per-core buffers beyond the memory limit.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONHASHSEED": "0",
           "HOME": str(scratch), "TMPDIR": str(scratch), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    # Output goes to files outside the scratch folder: the file-size limit caps them (a pipe would not).
    out_path, err_path = tmp / "stdout", tmp / "stderr"
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        try:
            proc = subprocess.Popen([sys.executable, "-I", str(_LAUNCHER), json.dumps(cfg)], cwd=scratch,
                                    env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    pass_fds=(write_fd,), start_new_session=True)
        except BaseException:
            os.close(read_fd)
            raise
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
    if code == 0 and exit_info.get("completed"):
        status = "passed"
    elif code in (-signal.SIGXCPU, -signal.SIGKILL) and cpu_s is not None and cpu_s >= limits.cpu_s - 0.5:
        status = "cpu_limit"
    else:
        status = "failed"
        if code == 0:
            stderr = (stderr + "\n[sandbox] exit status 0 before the program's last line: not a pass")[-_TAIL:]
    return ExecutionResult(status, code, stderr, stdout, seconds, cpu_s, protections)


def _parent_protections(limits: SandboxLimits) -> dict[str, str]:
    return {
        "process": "on: own process and session, python -I, empty environment",
        "scratch_folder": "on: fresh temporary folder as working directory, HOME and TMPDIR; deleted afterwards",
        "completion": "on: passed only when a random token comes back after the program's last line",
        "wall_time": f"on: {limits.wall_s:g} s, then the process group is killed",
    }


def sandbox_report(limits: SandboxLimits | None = None) -> dict[str, str]:
    """The protections a program gets on this machine, found by running an empty program.

    Returns:
        dict[str, str]: ``{protection: "on: ..." | "off: reason"}`` (what a run's summary records).
    """
    return run_program("pass", limits=limits).protections
