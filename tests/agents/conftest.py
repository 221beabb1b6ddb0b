"""What the engine's tests share: a tiny project in a folder the sandbox's user can reach, the real
bubblewrap sandbox over it, a Toolbox, and real git repositories. No Django: `agents` never imports it."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from agents.recipe import parse_recipe
from agents.sandbox import load_backend
from agents.tools import Toolbox

# Not pytest's tmp_path: its parents are private to the test user, and when the tests run as root the
# sandbox drops to uid 65534, which must be able to reach every workspace.
SCRATCH = Path(tempfile.mkdtemp(prefix="agents-test-"))
SCRATCH.chmod(0o711)
atexit.register(shutil.rmtree, SCRATCH, True)

TINY_RECIPE = """\
[prototype]
name = "Tiny"
kind = "backend"
description = "A calculator with one bug."

[build]
command = "mkdir -p dist && tar -cf dist/tiny.tar calc.py"
timeout = 30

[test]
command = "python3 -m unittest discover -v -s tests"
timeout = 30

[artifact]
kind = "archive"
path = "dist/tiny.tar"
"""

TINY_FILES = {
    "calc.py": "def add(a, b):\n    return a - b\n",
    "tests/test_calc.py": (
        "import unittest\n\nfrom calc import add\n\n\n"
        "class AddTest(unittest.TestCase):\n"
        "    def test_adds_two_numbers(self):\n"
        "        self.assertEqual(add(2, 2), 4)\n"
    ),
    "README.md": "# Tiny\n\nAdds numbers.\n",
}


def scratch_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=SCRATCH))
    path.chmod(0o711)
    return path


def write_files(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def make_repo(files: dict[str, str] | None = None, source: Path | None = None) -> Path:
    """A real git repository on branch main with one commit of `files` (or a copy of `source`)."""
    repo = scratch_dir("repo-")
    if source is not None:
        shutil.copytree(source, repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "dist"))
    write_files(repo, files or {})
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(repo),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        **{f"GIT_{who}_{what}": value for who in ("AUTHOR", "COMMITTER")
           for what, value in (("NAME", "Test"), ("EMAIL", "test@example.invalid"))},
    }  # fmt: skip
    for argv in (["init", "-q", "-b", "main"], ["add", "--all"], ["commit", "-q", "-m", "The app as it is"]):
        subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)
    return repo


@pytest.fixture
def tree():
    path = scratch_dir("tree-")
    write_files(path, TINY_FILES)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def recipe():
    return parse_recipe(TINY_RECIPE)


@pytest.fixture
def sandbox(tree):
    return load_backend("bwrap")(tree)


@pytest.fixture
def toolbox(tree, sandbox, recipe):
    return Toolbox(tree, sandbox, recipe, max_verify_rounds=3, command_timeout=30, remaining=lambda: 600.0)


@pytest.fixture(name="make_repo", scope="session")
def make_repo_fixture():
    return make_repo


@pytest.fixture(name="scratch_dir", scope="session")
def scratch_dir_fixture():
    return scratch_dir
