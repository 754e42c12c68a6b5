"""The sandbox of model-written code (gcache.scoring.run_program): limits, isolation and what it reports.

Each containment test first reads the protection it relies on from the report: where this OS cannot provide it
(no Landlock, no namespaces), the test is skipped with the reason the sandbox gave, rather than passing vacuously.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from gcache.scoring import SandboxLimits, run_program, sandbox_report

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
                "open_files", "network", "pid_namespace", "filesystem", "tcp", "identity"}
    assert expected <= protections.keys()
    assert all(v.startswith(("on: ", "off: ")) for v in protections.values()), protections
    for always in ("process", "scratch_folder", "wall_time", "cpu_time", "memory", "file_size"):
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
