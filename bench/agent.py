"""Replays every sample conversation through the real engine and prints, per build, how much of each
request the loop sent is a byte-identical prefix of the request before it: what prompt caching can reuse.

    .venv/bin/python bench/agent.py

It measures the requests, nothing else. The samples were written by hand (examples/README.md), so the
token counts and cache reads their responses carry are made up: they are not printed, and no model is
called, so nothing is spent or measured about the model itself.

Goal: at least 90% of each request cacheable from the second request on.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import build  # noqa: E402
from agents.providers import ProviderConfig  # noqa: E402
from agents.providers.replay import ReplayProvider, list_recordings  # noqa: E402
from agents.spec import BuildSpec  # noqa: E402

CAPTURED: list[ReplayProvider] = []
GOAL = 0.90  # of every build's request bytes, from the 2nd request on


class CapturingReplay(ReplayProvider):
    """The replay provider, remembered so the bench can read the requests its transport saw."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        CAPTURED.append(self)


class QuietSink:
    def emit(self, kind, data):
        pass

    def stage(self, name):
        pass

    def cancelled(self):
        return False


def canonical(request: dict) -> bytes:
    """The request in the order the API caches it: tools, then system, then messages."""
    return json.dumps([request.get("tools"), request.get("system"), request.get("messages")]).encode()


def common_prefix(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    low, high = 0, n
    while low < high:  # binary search on equal prefixes: fast for long requests
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


def git_repo(folder: Path, scratch: Path) -> Path:
    repo = scratch / "repos" / folder.name
    if repo.exists():
        return repo
    shutil.copytree(folder, repo, ignore=shutil.ignore_patterns("dist", "build", "__pycache__"))
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["-c", "user.name=bench", "-c", "user.email=b@x",
                                                                 "commit", "-qm", "import"]):  # fmt: skip
        subprocess.run(["git", *args], cwd=repo, check=True)
    return repo


def main() -> int:
    recordings = ROOT / "examples" / "recordings"
    scratch = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    scratch.chmod(0o711)
    rows, worst = [], 1.0
    try:
        for recording in list_recordings(recordings):
            repo = git_repo(ROOT / "examples" / "targets" / recording.target, scratch)
            CAPTURED.clear()
            spec = BuildSpec(
                target=recording.target, repo_url=str(repo), base_ref="main", idea=recording.idea,
                mirror=scratch / f"{recording.path.stem}.git", work_dir=scratch / f"{recording.path.stem}-work",
                output_dir=scratch / f"{recording.path.stem}-out", result_ref="refs/prototypes/bench/1",
                provider=ProviderConfig(name="__main__.CapturingReplay", recordings=recordings),
            )  # fmt: skip
            result = build(spec, QuietSink())
            if not result.ok:
                print(f"{recording.path.name}: build failed: {result.error}\nnot met")
                return 1
            requests = [canonical(r) for r in CAPTURED[0].transport.requests]
            pairs = list(zip(requests, requests[1:], strict=False))
            reused = [common_prefix(prev, cur) for prev, cur in pairs]
            shares = [r / len(cur) for r, (_, cur) in zip(reused, pairs, strict=True)]
            overall = sum(reused) / sum(len(cur) for _, cur in pairs)
            worst = min(worst, overall)
            rows.append((f"{recording.target}/{recording.path.stem}", len(requests), overall, min(shares),
                         sum(len(r) for r in requests)))  # fmt: skip
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    print("Cacheable = the part of a request that is byte-identical to the request before it, from the 2nd request on:")
    print("for the whole build (all those requests' bytes together) and for its least cacheable request.")
    print("Sent = the bytes of all the build's requests (tools, system and messages, as the API caches them).")
    print("Sample conversations written by hand: no model was called; their made-up token counts are not shown.\n")
    header = f"{'build':34} {'requests':>8} {'cacheable':>10} {'lowest':>7} {'sent':>12}"
    print(header)
    print("-" * len(header))
    for name, count, overall, lowest, sent in rows:
        print(f"{name:34} {count:>8} {overall:>10.1%} {lowest:>7.1%} {sent:>12,}")
    print(f"\nlowest build: {worst:.1%} of its request bytes cacheable from the 2nd request on (goal: at least 90%)")
    print("met" if worst >= GOAL else "not met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
