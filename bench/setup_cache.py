"""Dependencies, once: a second build's time to the agent's first turn against the first build's.

A project whose setup installs a few hundred packages into a virtualenv in the repository
(`python3 -m venv .venv && .venv/bin/pip install --no-index --find-links /packages -r requirements.txt`),
from a local package folder the bench makes: BENCH_SETUP_PACKAGES tiny generated wheels (real wheels,
written with zipfile: a module, METADATA, WHEEL, RECORD), shown read-only to the sandbox through
BuildSpec.sandbox_ro_binds. No internet is involved anywhere.

The same target is built twice through agents.engine.build, with the replay provider playing a short
recorded conversation (one edit, verify, finish), the real sandbox and real git. Measured for each
build: the time from calling build() to the agent's first turn (the sink's stage("running") call, made
right before the first model request). The first build runs setup and keeps what it installed as a
dependency layer; the second finds the layer for the same lock file and runs no setup. Both builds
must succeed, and their tests import packages from the virtualenv.

Goal: the second build reaches its first turn at least 10x faster than the first.

    .venv/bin/python bench/setup_cache.py     # BENCH_SETUP_PACKAGES (300), BENCH_SETUP_KEEP=1 keeps the temp folder
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents import BuildSpec, build  # noqa: E402
from agents.deplayer import layers_dir  # noqa: E402
from agents.providers import ProviderConfig  # noqa: E402
from agents.tools import EDITOR  # noqa: E402

PACKAGES = int(os.environ.get("BENCH_SETUP_PACKAGES", "300"))
GOAL = 10.0
IDEA = "Say hello in the greeting"
RECIPE = """\
[prototype]
name = "Many packages"
kind = "backend"

[setup]
commands = ["python3 -m venv .venv && .venv/bin/pip install --no-index --find-links {packages} -r requirements.txt"]
timeout = 1200

[test]
command = ".venv/bin/python -m unittest discover -v -s tests"
timeout = 120

[build]
command = "mkdir -p dist && tar -cf dist/app.tar app.py"

[artifact]
kind = "archive"
path = "dist/app.tar"
"""
TEST = """\
import importlib
import unittest

import app


class AppTest(unittest.TestCase):
    def test_greets(self):
        self.assertEqual(app.greeting(), "hello")

    def test_every_package_is_installed(self):
        for n in range({count}):
            self.assertEqual(importlib.import_module(f"benchpkg{{n:04d}}").VALUE, n)
"""


def make_wheel(folder: Path, n: int) -> str:
    """A minimal valid wheel of package benchpkg<n> 1.0: one module and its dist-info."""
    name = f"benchpkg{n:04d}"
    info = f"{name}-1.0.dist-info"
    files = {
        f"{name}.py": f"VALUE = {n}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: bench\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
    return f"{name}==1.0"


def make_repo(place: Path, packages: Path, requirements: list[str]) -> Path:
    repo = place / "repo"
    repo.mkdir()
    files = {
        "prototype.toml": RECIPE.format(packages=packages),
        ".gitignore": ".venv/\ndist/\n",
        "requirements.txt": "\n".join(requirements) + "\n",
        "app.py": 'def greeting():\n    return "hi"\n',
        "tests/test_app.py": TEST.format(count=len(requirements)),
    }
    for path, text in files.items():
        (repo / path).parent.mkdir(parents=True, exist_ok=True)
        (repo / path).write_text(text)
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_AUTHOR_NAME": "Bench", "GIT_AUTHOR_EMAIL": "bench@example.invalid",
           "GIT_COMMITTER_NAME": "Bench", "GIT_COMMITTER_EMAIL": "bench@example.invalid"}  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "Many packages"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)
    return repo


def cassette(place: Path, name: str) -> Path:
    usage = {"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}

    def reply(n: int, tool: str, **tool_input) -> dict:
        return {"id": f"msg_{name}_{n}", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
                "content": [{"type": "tool_use", "id": f"toolu_{name}_{n}", "name": tool, "input": tool_input}],
                "stop_reason": "tool_use", "stop_sequence": None, "usage": usage}  # fmt: skip

    responses = [
        reply(1, EDITOR, command="str_replace", path="app.py", old_str='"hi"', new_str='"hello"'),
        reply(2, "verify"),
        reply(3, "finish", summary="The greeting says hello."),
    ]
    path = place / f"{name}.json"
    path.write_text(json.dumps({"format": 1, "target": "many", "idea": IDEA, "responses": responses}))
    return path


class TimingSink:
    """Records when the agent's first turn starts (stage "running") and the build's log lines."""

    def __init__(self, started: float):
        self.started = started
        self.first_turn: float | None = None
        self.logs: list[str] = []
        self.setup_commands = 0

    def emit(self, kind: str, data: dict) -> None:
        if kind == "log":
            self.logs.append(data["text"])
        if kind == "command" and self.first_turn is None:
            self.setup_commands += 1

    def stage(self, name: str) -> None:
        if name == "running" and self.first_turn is None:
            self.first_turn = time.monotonic() - self.started

    def cancelled(self) -> bool:
        return False


def run(repo: Path, place: Path, packages: Path, name: str) -> tuple[float, TimingSink, float]:
    spec = BuildSpec(
        target="many", repo_url=str(repo), base_ref="main", idea=IDEA, mirror=place / "mirror.git",
        work_dir=place / f"work-{name}", output_dir=place / f"out-{name}", result_ref=f"refs/prototypes/bench/{name}",
        provider=ProviderConfig(name="replay", cassette=cassette(place, name)), sandbox_ro_binds=(str(packages),),
        build_timeout=3600,
    )  # fmt: skip
    started = time.monotonic()
    sink = TimingSink(started)
    result = build(spec, sink)
    total = time.monotonic() - started
    if not result.ok:
        raise SystemExit(f"The {name} build failed: {result.error}\n" + "\n".join(sink.logs))
    if sink.first_turn is None:
        raise SystemExit(f"The {name} build never reached the agent's first turn.")
    return sink.first_turn, sink, total


def main() -> None:
    place = Path(tempfile.mkdtemp(prefix="bench-setup-cache-"))
    place.chmod(0o711)  # the sandbox's user reaches the workspaces and the package folder inside
    try:
        packages = place / "packages"
        packages.mkdir(mode=0o755)
        made = time.monotonic()
        requirements = [make_wheel(packages, n) for n in range(PACKAGES)]
        for wheel in packages.iterdir():
            wheel.chmod(0o644)
        print(f"{PACKAGES} wheels made in {time.monotonic() - made:.1f} s in a local folder (no index, no internet).")
        repo = make_repo(place, packages, requirements)
        overlay = os.geteuid() == 0
        print(f"Workspaces: {'overlay (layer mounted read-only)' if overlay else 'full checkout (layer copied in)'}.")

        first, first_sink, first_total = run(repo, place, packages, "first")
        second, second_sink, second_total = run(repo, place, packages, "second")

        layers = [p for p in layers_dir(place / "mirror.git").iterdir() if not p.name.startswith(".")]
        size = sum(f.stat().st_size for layer in layers for f in layer.rglob("*") if f.is_file())
        print("\n| build | setup commands run | to the agent's first turn | whole build |")
        print("| --- | --- | --- | --- |")
        print(
            f"| first (miss: setup runs, layer kept) | {first_sink.setup_commands} | {first:.2f} s | {first_total:.2f} s |"
        )
        print(f"| second (hit: layer mounted) | {second_sink.setup_commands} | {second:.2f} s | {second_total:.2f} s |")
        hit = [line for line in second_sink.logs if line.startswith("Dependencies from the layer")]
        print(f"\nSecond build's log: {hit[0] if hit else '(no layer used)'}")
        print(f"Layers stored: {len(layers)}, {size / 2**20:.1f} MiB of files.")
        ratio = first / second
        print(f"Ratio: the second build reaches its first turn {ratio:.1f}x faster (goal >= {GOAL:.0f}x).")
        print("met" if ratio >= GOAL and second_sink.setup_commands == 0 else "not met")
    finally:
        if os.environ.get("BENCH_SETUP_KEEP") != "1":
            shutil.rmtree(place, ignore_errors=True)
        else:
            print(f"Kept {place}")


if __name__ == "__main__":
    main()
