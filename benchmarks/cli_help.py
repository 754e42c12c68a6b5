"""Wall time of ``gcache --help`` (and the other commands that must not load torch), as fresh processes.

    python benchmarks/cli_help.py --runs 5

Prints a table: median, min and max over the runs, and whether torch got imported. The CLI's help, the method
registry and config validation import no torch, so these should take a fraction of a second; ``import torch``
alone is shown for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    "gcache --help": ["-m", "gcache", "--help"],
    "gcache eval --help": ["-m", "gcache", "eval", "--help"],
    "gcache --version": ["-m", "gcache", "--version"],
    "python -m gcache.methods": ["-m", "gcache.methods"],
    "import torch (reference)": ["-c", "import torch"],
}
TORCH_PROBE = ("import runpy, sys; sys.argv = {argv!r}; "
               "exec('try:\\n runpy.run_module(sys.argv[0], run_name=\"__main__\")\\nexcept SystemExit: pass'); "
               "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)")


def _time(args: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def _loads_torch(args: list[str], env: dict[str, str]) -> str:
    if args[0] != "-m":
        return "yes" if "torch" in args[-1] else "?"
    probe = TORCH_PROBE.format(argv=args[1:])
    err = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stderr
    return "yes" if "NO-TORCH" not in err else "no"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (default 5)")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    print(f"python {sys.version.split()[0]} on {os.cpu_count()} CPUs; {args.runs} runs each, after one warm-up run")
    print(f"| {'command':28s} | median s | min s | max s | loads torch |")
    print(f"|{'-' * 30}|----------|-------|-------|-------------|")
    for name, cmd in COMMANDS.items():
        _time(cmd, env)  # warm the file cache
        times = [_time(cmd, env) for _ in range(args.runs)]
        print(f"| {name:28s} | {statistics.median(times):8.3f} | {min(times):5.3f} | {max(times):5.3f} | "
              f"{_loads_torch(cmd, env):11s} |")


if __name__ == "__main__":
    main()
