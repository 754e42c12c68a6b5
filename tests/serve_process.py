"""``gcache serve`` in a subprocess, started as a user would start it, for the tests that talk to it over HTTP."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def gcache_serve(*args: str, log: Path | None = None, timeout: float = 300) -> Iterator[str]:
    """Run ``gcache [global flags] serve ...`` until the block ends; yields its base URL (``.../v1``).

    Args:
        *args: the command after ``gcache``, e.g. ``("serve", "--model", "smollm2")``; ``--port`` is added.
        log (Path | None): file for the server's stderr. Default is None (a temporary file).
        timeout (float): seconds to wait for ``/v1/models`` to answer. Default is 300.
    """
    port = free_port()
    log = log or Path(tempfile.mkstemp(prefix="gcache-serve-", suffix=".log")[1])
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "gcache", *args, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=err,
                                env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"})
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + timeout
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError(f"gcache serve did not start: {log.read_text()[-2000:]}") from None
                time.sleep(0.2)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
