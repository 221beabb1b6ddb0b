"""What the sandbox costs per command, against a bare subprocess, measured in the same run.

    .venv/bin/python bench/sandbox.py [--runs 200] [--network-runs 30]

For `true` and for `python3 -c pass` it runs each command `--runs` times as a bare `subprocess.run`
and as `BwrapSandbox.run` (per-run cgroup, bwrap, seccomp, rlimits, output capture: everything a
build's command pays), and prints the median and the 95th percentile of each, the ratio of the
medians and the sandbox's overhead in milliseconds. One more row: `true` with `network=True` (the
egress proxy started and stopped, socat started inside and waited for), `--network-runs` times.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from agents.sandbox import cgroup  # noqa: E402
from agents.sandbox.bwrap import BwrapSandbox  # noqa: E402

COMMANDS = {"true": ["true"], "python3 -c pass": ["python3", "-c", "pass"]}


def timed(call, runs: int) -> list[float]:
    call()  # warm the page cache and the first-use paths
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return times


def p95(times: list[float]) -> float:
    return sorted(times)[max(0, round(0.95 * len(times)) - 1)]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:7.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--network-runs", type=int, default=30)
    options = parser.parse_args()

    workspace = Path(tempfile.mkdtemp(prefix="bench-sandbox-"))
    workspace.chmod(0o755)
    try:
        sandbox = BwrapSandbox(workspace)
        networked = BwrapSandbox(workspace, egress_hosts=["pypi.org"])
        bare_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        rows = []
        for name, argv in COMMANDS.items():
            bare = timed(lambda argv=argv: subprocess.run(argv, env=bare_env, cwd=workspace, check=True), options.runs)
            boxed = timed(lambda argv=argv: sandbox.run(argv, timeout=60), options.runs)
            rows.append((name, options.runs, bare, boxed))
        with_network = timed(lambda: networked.run(["true"], network=True, timeout=60), options.network_runs)
        rows.append(("true, network=True", options.network_runs, rows[0][2], with_network))
    finally:
        shutil.rmtree(workspace, ignore_errors=True)

    probe = cgroup.create(sandbox.limits)
    if probe:
        probe.remove()
    limits = "per-run cgroup" if probe else "rlimits only (no cgroups here)"
    print(f"Sandbox overhead per command, {date.today()}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.release()}, {'root' if os.geteuid() == 0 else 'unprivileged'}, {limits}")  # fmt: skip
    print()
    print(f"{'command':<20} {'runs':>5} {'bare median':>12} {'p95':>8} {'sandbox median':>15} {'p95':>8} "
          f"{'ratio':>6} {'overhead':>9}")  # fmt: skip
    for name, runs, bare, boxed in rows:
        bare_median, boxed_median = statistics.median(bare), statistics.median(boxed)
        print(
            f"{name:<20} {runs:>5} {ms(bare_median):>9} ms {ms(p95(bare)):>5} ms {ms(boxed_median):>12} ms "
            f"{ms(p95(boxed)):>5} ms {boxed_median / bare_median:>5.1f}x {ms(boxed_median - bare_median):>6} ms"
        )
    print("\n(the network row is compared with bare `true`)")


if __name__ == "__main__":
    main()
