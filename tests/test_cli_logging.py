"""The CLI's logging: HTTP client libraries stay quiet at INFO whatever their logger is called, and an API key
given as a flag (readable by every process in /proc/PID/cmdline) is warned about."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

TINY = str(Path(__file__).parent / "assets" / "tiny_gsm8k.jsonl")


def test_http_client_info_lines_are_dropped_and_the_key_flag_warns(tmp_path):
    code = (
        "import logging, sys\n"
        "from gcache.cli import configure_logging, main\n"
        "configure_logging('INFO')\n"
        "for name in ('httpx', 'httpx2', 'httpx2._client', 'httpcore2.connection', 'openai._base_client'):\n"
        "    logging.getLogger(name).info('HTTP Request: POST %s', name)\n"
        "logging.getLogger('httpx2').warning('kept: a warning')\n"
        "logging.getLogger('gcache.x').info('kept: our own info')\n"
        f"sys.exit(main(['eval', '--method', 'single', '--data', {TINY!r}, '--split', 'validation', '--out', "
        f"{str(tmp_path / 'o')!r}, '--api-key', 'sk-flag-key-123456']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "HTTP Request" not in proc.stderr
    assert "kept: a warning" in proc.stderr and "kept: our own info" in proc.stderr
    assert "--api-key on the command line is visible to every process" in proc.stderr
    assert "sk-flag-key-123456" not in proc.stderr
