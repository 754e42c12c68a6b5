"""Assertions shared by the CLI tests."""

from __future__ import annotations

import logging

from gcache.cli import main


def one_line_exit_2(argv: list[str], capsys, caplog, *expected: str) -> str:
    """``gcache argv`` exits 2 with one stderr line (no traceback) holding every ``expected`` text, and loads no
    model first. Returns the line."""
    capsys.readouterr()
    with caplog.at_level(logging.INFO):
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for text in expected:
        assert text in err, (text, err)
    assert "loading model" not in caplog.text  # refused before any model loaded
    return err
