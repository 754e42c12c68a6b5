"""The sandbox of model-written code (gcache.scoring.run_program): limits, isolation and what it reports.

Each containment test first reads the protection it relies on from the report: where this OS cannot provide it
(no Landlock, no namespaces), the test is skipped with the reason the sandbox gave, rather than passing vacuously.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
import time
from pathlib import Path

import pytest

from gcache.scoring import SandboxLimits, run_program, sandbox_report
from gcache.scoring.execution import remove_tree

FAST = SandboxLimits(wall_s=3, cpu_s=3, memory_mb=256, max_processes=8)


@pytest.fixture(scope="module")
def protections() -> dict[str, str]:
    return sandbox_report(FAST)


def needs(protections: dict[str, str], name: str) -> None:
    if not protections.get(name, "off: not reported").startswith("on"):
        pytest.skip(f"this OS does not provide it: {name}: {protections.get(name)}")


def test_passing_and_failing_programs():
    ok = run_program("def f(x):\n    return x * 2\nassert f(21) == 42\nprint('fine')\n")
    assert ok.passed and ok.status == "passed" and ok.returncode == 0 and ok.stdout.strip() == "fine"
    bad = run_program("def f(x):\n    return x + 2\nassert f(21) == 42, 'wrong'\n")
    assert not bad.passed and bad.status == "failed" and bad.returncode == 1
    assert "AssertionError: wrong" in bad.stderr


def test_report_names_every_protection(protections):
    expected = {"process", "scratch_folder", "wall_time", "cpu_time", "memory", "processes", "file_size",
                "open_files", "network", "pid_namespace", "filesystem", "tcp", "identity", "completion", "mounts",
                "scratch_size", "proc", "unix_sockets"}
    assert expected <= protections.keys()
    assert all(v.startswith(("on: ", "partial: ", "off: ")) for v in protections.values()), protections
    for always in ("process", "scratch_folder", "wall_time", "cpu_time", "memory", "file_size", "completion"):
        assert protections[always].startswith("on"), (always, protections[always])


def test_infinite_loop_is_killed_in_time():
    start = time.monotonic()
    result = run_program("while True:\n    pass\n", limits=SandboxLimits(wall_s=2, cpu_s=30))
    assert result.status == "timeout" and result.returncode is None and not result.passed
    assert time.monotonic() - start < 6


def test_sleeping_program_is_killed_at_the_wall_limit():
    start = time.monotonic()
    assert run_program("import time\ntime.sleep(60)\n", timeout_s=1.0).status == "timeout"
    assert time.monotonic() - start < 5


def test_cpu_limit_kills_a_busy_program():
    result = run_program("while True:\n    pass\n", limits=SandboxLimits(wall_s=30, cpu_s=1))
    assert result.status == "cpu_limit", result
    assert result.cpu_s is not None and 1 <= result.cpu_s < 3


def test_memory_bomb_is_stopped():
    start = time.monotonic()
    result = run_program("blocks = []\nwhile True:\n    blocks.append(bytearray(10 ** 7))\n", limits=FAST)
    assert result.status == "failed" and "MemoryError" in result.stderr
    assert time.monotonic() - start < 3
    assert run_program("x = bytearray(10 ** 9)\n", limits=FAST).status == "failed"  # 1 GB > 256 MiB


def test_process_count_is_limited(protections):
    needs(protections, "processes")
    program = (
        "import os, sys, time\n"
        "children = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        children += 1\n"
        "except OSError:\n"
        "    print(children)\n"
    )
    result = run_program(program, limits=FAST)
    assert result.status == "passed", result.stderr
    assert 0 < int(result.stdout) < FAST.max_processes  # the launcher and the program count too


def _survivors(folder: str) -> list[int]:
    """Processes whose working directory is (was) ``folder``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/cwd").startswith(folder):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_fork_bomb_is_contained(protections):
    needs(protections, "processes")
    bomb = ("import os, sys\nprint(os.getcwd(), flush=True)\nwhile True:\n    try:\n        os.fork()\n"
            "    except OSError:\n        pass\n")
    start = time.monotonic()
    result = run_program(bomb, limits=FAST)
    assert result.status == "timeout"
    assert time.monotonic() - start < 8
    folder = result.stdout.strip()
    assert folder
    deadline = time.monotonic() + 5
    while _survivors(folder) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _survivors(folder) == []


def test_children_die_with_the_program(protections):
    needs(protections, "pid_namespace")
    escape = ("import os, time\nprint(os.getcwd(), flush=True)\nif os.fork() == 0:\n    os.setsid()\n"
              "    time.sleep(60)\n")
    result = run_program(escape, limits=FAST)
    assert result.status == "passed"
    time.sleep(0.5)
    assert _survivors(result.stdout.strip()) == []


def test_cannot_write_outside_its_folder(protections, tmp_path):
    needs(protections, "filesystem")
    target = tmp_path / "escaped.txt"
    result = run_program(f"open({str(target)!r}, 'w').write('x')\n", limits=FAST)
    assert result.status == "failed" and "PermissionError" in result.stderr
    assert not target.exists()
    inside = run_program("import os\nos.mkdir('d')\nopen('d/f.txt', 'w').write('ok')\nprint(open('d/f.txt').read())\n",
                         limits=FAST)
    assert inside.passed and inside.stdout.strip() == "ok"


def test_cannot_read_the_project(protections, tmp_path):
    needs(protections, "filesystem")
    secret = tmp_path / ".env"
    secret.write_text("API_KEY=sk-secret\n")
    result = run_program(f"print(open({str(secret)!r}).read())\n", limits=FAST)
    assert result.status == "failed" and "sk-secret" not in result.stdout


def test_cannot_reach_a_server_on_this_machine(protections):
    needs(protections, "network")
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        program = (f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
                   "s.sendall(b'leak')\nprint('connected')\n")
        result = run_program(program, limits=FAST)
        assert result.status == "failed" and "connected" not in result.stdout
        server.settimeout(0.2)
        with pytest.raises(TimeoutError):
            server.accept()  # nobody connected


def test_no_outside_network_for_udp(protections):
    needs(protections, "network")
    program = "import socket\nsocket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('192.0.2.1', 53))\n"
    result = run_program(program, limits=FAST)
    assert result.status == "failed" and "unreachable" in result.stderr.lower()


def test_parent_environment_does_not_leak(monkeypatch):
    monkeypatch.setenv("API_KEY", "sk-must-not-leak")
    assert run_program("import os\nassert 'API_KEY' not in os.environ\n").passed


def test_runs_in_a_fresh_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_program("import os\nassert os.listdir('.') == ['program.py'], os.listdir('.')\nprint(os.getcwd())\n")
    assert result.passed and Path(result.stdout.strip()) != tmp_path


def test_bad_limits():
    with pytest.raises(ValueError, match="timeout_s"):
        run_program("pass", timeout_s=0)
    with pytest.raises(ValueError, match="memory_mb"):
        SandboxLimits(memory_mb=0)


# ------------------------------------------------------------------------- probes of issue 20


def test_exit_zero_before_the_tests_is_not_a_pass():
    program = "def f(x):\n    return False\nimport sys\nsys.exit(0)\nassert f(1) is True\n"
    result = run_program(program, limits=FAST)
    assert result.returncode == 0 and result.status == "failed" and not result.passed
    assert "not a pass" in result.stderr
    hard = run_program("import os\nos._exit(0)\nassert False\n", limits=FAST)
    assert hard.returncode == 0 and hard.status == "failed"
    # The token is in no file, argv or environment the program can read.
    snoop = ("import os, sys\nseen = open('program.py').read() + ' '.join(sys.argv) + str(os.environ)\n"
             "seen += open('/proc/self/cmdline', 'rb').read().decode(errors='replace')\nprint(len(seen))\n")
    assert run_program(snoop, limits=FAST).passed


def _deep_tree(root: Path, depth: int) -> None:
    """``depth`` nested folders under ``root`` (deeper than PATH_MAX allows to name in one path)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)


@pytest.mark.slow
def test_remove_tree_survives_5000_nested_folders(tmp_path):
    top = tmp_path / "tree"
    top.mkdir()
    _deep_tree(top, 5000)
    (top / "d" / "f.txt").write_text("x")
    os.chmod(top / "d", 0)  # a folder its program made unreadable
    remove_tree(top)  # shutil.rmtree raises RecursionError here
    assert not top.exists()
    remove_tree(top)  # absent: no error either


def test_nested_folder_answer_is_scored_and_the_next_one_too():
    bomb = ("import os\nfd = os.open('.', os.O_RDONLY)\nfor _ in range(5000):\n    os.mkdir('d', dir_fd=fd)\n"
            "    fd = os.open('d', os.O_RDONLY, dir_fd=fd)\n")
    before = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("gcache-sandbox-")}
    first = run_program(bomb, limits=FAST)
    assert first.status in ("passed", "failed"), first
    assert run_program("assert 1 + 1 == 2\n", limits=FAST).passed
    after = {n for n in os.listdir(tempfile.gettempdir()) if n.startswith("gcache-sandbox-")}
    assert after <= before  # nothing left behind


def test_leftovers_of_a_killed_run_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / "gcache-sandbox-999999999-abc"  # no such pid
    dead.mkdir()
    _deep_tree(dead, 3)
    alive = tmp_path / f"gcache-sandbox-{os.getppid()}-abc"
    alive.mkdir()
    assert run_program("pass\n", limits=FAST).passed
    assert not dead.exists() and alive.exists()


def test_a_sandbox_failure_is_the_programs_error_not_an_exception(monkeypatch):
    import subprocess

    def refuse(*args, **kwargs):  # a fault we cannot cause for real: the launcher cannot be started
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(subprocess, "Popen", refuse)
    result = run_program("pass\n", limits=FAST)
    assert result.status == "sandbox_error" and "Too many open files" in result.stderr


def test_scratch_folder_total_size_is_capped(protections):
    needs(protections, "scratch_size")
    small = SandboxLimits(wall_s=5, cpu_s=5, memory_mb=256, max_processes=8, max_file_mb=4, max_scratch_mb=8)
    # Many files each under the per-file cap: only the total cap stops them.
    program = ("import os\nn = 0\ntry:\n    for i in range(100):\n        with open(f'f{i}', 'wb') as f:\n"
               "            f.write(b'x' * 2**20)\n        n += 1\nexcept OSError as err:\n    print(n, err.errno)\n")
    result = run_program(program, limits=small)
    written, errno = map(int, result.stdout.split())
    assert written < 9 and errno == 28  # ENOSPC


def test_other_processes_command_lines_are_out_of_sight(protections):
    needs(protections, "proc")
    program = ("import os\nseen = []\nfor p in os.listdir('/proc') if os.path.isdir('/proc') else []:\n"
               "    if p.isdigit():\n        try:\n            seen.append(open(f'/proc/{p}/cmdline', 'rb').read())\n"
               "        except OSError:\n            pass\nprint(sum(b'--api-key' in c for c in seen), len(seen))\n")
    result = run_program(program, limits=FAST)
    assert result.passed, result.stderr
    leaked, visible = map(int, result.stdout.split())
    assert leaked == 0 and visible <= 2  # at most the program itself (and its bootstrap's view of it)


def test_cannot_connect_to_a_host_unix_socket(protections, tmp_path):
    if not protections.get("unix_sockets", "").startswith("on"):
        assert protections["network"].startswith(("partial", "off")), protections  # said, not hidden
        pytest.skip(protections.get("unix_sockets"))
    path = tmp_path / "s.sock"
    received = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        os.chmod(tmp_path, 0o777)
        os.chmod(path, 0o777)
        server.listen(1)
        server.settimeout(3)

        def accept():
            try:
                conn, _ = server.accept()
                received.append(conn.recv(100))
            except OSError:
                pass

        thread = threading.Thread(target=accept)
        thread.start()
        program = (f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({str(path)!r})\n"
                   "s.sendall(b'sk-leak')\n")
        result = run_program(program, limits=FAST)
        thread.join()
    assert result.status == "failed" and "PermissionError" in result.stderr
    assert received == []


def test_humaneval_scoring_of_hostile_answers_goes_on():
    """Through the task's own scoring: an early exit fails, a 5,000-level folder tree is scored like any answer
    (not an exception for the whole run), and the next answer is scored as usual."""
    from gcache.tasks._base import Example
    from gcache.tasks.humaneval import HumanEval

    task = HumanEval(timeout_s=5)
    example = Example(id="humaneval-0", question='def add(a, b):\n    """Sum."""\n',
                      answer="def check(candidate):\n    assert candidate(1, 2) == 3\n",
                      meta={"entry_point": "add", "task_id": "HumanEval/0", "canonical_solution": ""})

    def score(code: str) -> dict:
        return task.score(f"```python\n{code}\n```", example)

    early_exit = score("def add(a, b):\n    return False\nimport sys\nsys.exit(0)\n")
    assert early_exit["status"] == "failed" and not early_exit["correct"]
    tree = score("import os\nfd = os.open('.', os.O_RDONLY)\nfor _ in range(5000):\n    os.mkdir('d', dir_fd=fd)\n"
                 "    fd = os.open('d', os.O_RDONLY, dir_fd=fd)\ndef add(a, b):\n    return a + b\n")
    assert tree["status"] in ("passed", "failed", "sandbox_error")  # scored, whatever the outcome
    right = score("def add(a, b):\n    return a + b\n")
    assert right["status"] == "passed" and right["correct"]
