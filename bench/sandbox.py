"""What the sandbox costs per command, against a bare subprocess, measured in the same run.

    .venv/bin/python bench/sandbox.py [--runs 200] [--network-runs 30]

For `true` and for `python3 -c pass` it runs each command `--runs` times as a bare `subprocess.run`
and as `BwrapSandbox.run` (per-command cgroup, seccomp, rlimits, output capture: everything a build's
command pays), and prints the median and the 95th percentile of each, the ratio of the medians and
the sandbox's overhead in milliseconds. Two ways of running are measured side by side in the same run:
"session" (what builds use where the worker can make cgroups: the build's long-lived sandbox, entered
by each command, see agents/sandbox/session.py) and "fresh" (a new bwrap sandbox per command: the
fallback, and what every command paid before sessions). Rows with network=True run `true` through the
egress proxy's forwarder, `--network-runs` times (fresh: the proxy and socat started per command).

The goal (issue 16): overhead over a bare process at most 5 ms for `true` and at most 10 ms with network,
on the session path; the last line says `met` or `not met`. The machine is shared: compare the rows of
one run, not runs with each other.
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
        fresh = BwrapSandbox(workspace)
        fresh_networked = BwrapSandbox(workspace, egress_hosts=["pypi.org"])
        for each in (fresh, fresh_networked):
            each._use_sessions = False  # the fallback: a new sandbox per command
        bare_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
        rows = []
        bare_true = None
        for name, argv in COMMANDS.items():
            bare = timed(lambda argv=argv: subprocess.run(argv, env=bare_env, cwd=workspace, check=True), options.runs)
            bare_true = bare_true or bare
            for way, box in (("session", sandbox), ("fresh", fresh)):
                boxed = timed(lambda argv=argv, box=box: box.run(argv, timeout=60), options.runs)
                rows.append((f"{name} ({way})", options.runs, bare, boxed))
        for way, box in (("session", networked), ("fresh", fresh_networked)):
            with_network = timed(lambda box=box: box.run(["true"], network=True, timeout=60), options.network_runs)
            rows.append((f"true, network ({way})", options.network_runs, bare_true, with_network))
        sessions = sandbox.session_processes() != set()
        for each in (sandbox, networked):
            each.close()
    finally:
        shutil.rmtree(workspace, ignore_errors=True)

    probe = cgroup.create(sandbox.limits)
    if probe:
        probe.remove()
    limits = "per-command cgroup" if probe else "rlimits only (no cgroups here)"
    print(f"Sandbox overhead per command, {date.today()}, {platform.node()}, {os.cpu_count()} CPUs, "
          f"{platform.release()}, {'root' if os.geteuid() == 0 else 'unprivileged'}, {limits}")  # fmt: skip
    print()
    print(f"{'command':<32} {'runs':>5} {'bare median':>12} {'p95':>8} {'sandbox median':>15} {'p95':>8} "
          f"{'ratio':>6} {'overhead':>9}")  # fmt: skip
    overhead = {}
    for name, runs, bare, boxed in rows:
        bare_median, boxed_median = statistics.median(bare), statistics.median(boxed)
        overhead[name] = boxed_median - bare_median
        print(
            f"{name:<32} {runs:>5} {ms(bare_median):>9} ms {ms(p95(bare)):>5} ms {ms(boxed_median):>12} ms "
            f"{ms(p95(boxed)):>5} ms {boxed_median / bare_median:>5.1f}x {ms(boxed_median - bare_median):>6} ms"
        )
    print("\n(the network rows are compared with bare `true`)")
    if not sessions:
        print("Sessions could not be used here (no cgroups: not root?), so the session rows are fresh sandboxes.")
    plain, network = overhead["true (session)"], overhead["true, network (session)"]
    print(f"Goal: overhead per command <= 5 ms (`true`) and <= 10 ms with network; "
          f"here {plain * 1000:.1f} ms and {network * 1000:.1f} ms.")  # fmt: skip
    print("met" if sessions and plain <= 0.005 and network <= 0.010 else "not met")


if __name__ == "__main__":
    main()
