"""What the agent is told: the fixed prompt, the repository's own context, and the idea with its images."""

from __future__ import annotations

import base64
import subprocess

import pytest

from agents.context import MAX_NOTES_CHARS, SYSTEM, file_map, first_message, system_blocks
from agents.recipe import parse_recipe
from agents.spec import Attachment, PriorRevision

RECIPE = """\
[prototype]
name = "Tiny"
kind = "backend"
description = "A calculator with one bug."

[test]
command = "python3 -m unittest discover -v -s tests"

[artifact]
kind = "archive"
path = "dist/tiny.tar"

[agent]
notes = "Standard library only."
"""
FILES = {"calc.py": "def add(a, b):\n    return a - b\n", "tests/test_calc.py": "import unittest\n"}
# The smallest valid PNG and GIF: the engine only reads and encodes them.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)
GIF = base64.b64decode("R0lGODlhAQABAAAAACwAAAAAAQABAAA=")


@pytest.fixture
def blocks_for(make_repo):
    """The system blocks for a repository holding `files` (plus a small app)."""

    def blocks(files: dict[str, str] | None = None) -> list[dict]:
        repo = make_repo({**FILES, **(files or {})})
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
        return system_blocks(recipe=parse_recipe(RECIPE), mirror=repo / ".git", commit=commit, target="tiny")

    return blocks


def test_the_fixed_prompt_comes_first_and_the_repository_after_both_cached(blocks_for):
    blocks = blocks_for()

    assert [b["type"] for b in blocks] == ["text", "text"]
    assert blocks[0]["text"] == SYSTEM
    assert all(b["cache_control"] == {"type": "ephemeral"} for b in blocks)
    repository = blocks[1]["text"]
    assert repository.startswith("# The app: Tiny (backend, target 'tiny')\n\nA calculator with one bug.")
    assert f"```toml\n{RECIPE.strip()}\n```" in repository
    assert "## Notes from the app's owners\nStandard library only." in repository
    assert repository.endswith("## Files in the repository\ncalc.py\ntests/test_calc.py")


def test_the_repositorys_agent_notes_come_after_the_recipe_and_before_the_file_map(blocks_for):
    repository = blocks_for({"AGENTS.md": "Run the tests often.\n", "CLAUDE.md": "Be brief.\n"})[1]["text"]

    order = [
        repository.index("## Its recipe"),
        repository.index("## The repository's AGENTS.md\nRun the tests often."),
        repository.index("## The repository's CLAUDE.md\nBe brief."),
        repository.index("## Files in the repository"),
    ]
    assert order == sorted(order)


def test_without_agent_notes_there_is_no_empty_section(blocks_for):
    repository = blocks_for()[1]["text"]

    assert "AGENTS.md" not in repository and "CLAUDE.md" not in repository


def test_long_agent_notes_are_cut(blocks_for):
    repository = blocks_for({"AGENTS.md": "x" * (MAX_NOTES_CHARS + 5000)})[1]["text"]

    assert "x" * MAX_NOTES_CHARS + "\n…" in repository
    assert "x" * (MAX_NOTES_CHARS + 1) not in repository


def test_the_same_repository_gives_byte_identical_blocks_so_the_cache_hits(blocks_for):
    files = {"AGENTS.md": "Notes.\n", "src/a.js": "", "src/b.js": ""}

    assert blocks_for(files) == blocks_for(files)


def test_the_file_map_leaves_out_dependencies_and_build_output():
    paths = ["src/app.js", "node_modules/x/index.js", "dist/app.js", "vendor/lib.py", "a/__pycache__/m.pyc", "README"]

    assert file_map(paths) == "README\nsrc/app.js"


def test_a_large_file_map_keeps_the_shallow_files_sorted_and_counts_the_rest():
    deep = [f"pkg/sub/deeper/file{n:03d}.py" for n in range(50)]
    shallow = ["setup.py", "pkg/__init__.py", "pkg/core.py", "README.md"]

    shown = file_map(deep + shallow, limit=6)

    lines = shown.splitlines()
    assert lines[-1] == "… and 48 more files"
    assert lines[:-1] == sorted(shallow + deep[:2])
    assert file_map(list(reversed(deep + shallow)), limit=6) == shown


def test_attached_images_come_before_the_text_as_base64_blocks(scratch_dir):
    folder = scratch_dir("images-")
    (folder / "mockup.png").write_bytes(PNG)
    (folder / "screen.gif").write_bytes(GIF)
    attachments = (Attachment(folder / "mockup.png", "image/png"), Attachment(folder / "screen.gif", "image/gif"))

    message = first_message("Make the button blue", (), attachments)

    assert message["role"] == "user"
    first, second, text = message["content"]
    assert first == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": base64.standard_b64encode(PNG).decode()}}  # fmt: skip
    assert second["source"]["media_type"] == "image/gif"
    assert base64.b64decode(second["source"]["data"]) == GIF
    assert text["type"] == "text"
    assert "Make the button blue" in text["text"]
    assert "attached 2 images above" in text["text"]


def test_a_first_build_is_just_the_idea():
    message = first_message("  Add a dark mode toggle\n", ())

    assert message == {
        "role": "user",
        "content": [
            {"type": "text", "text": "The idea, in the words of the person who asked:\n\nAdd a dark mode toggle"}
        ],
    }


def test_a_follow_up_tells_the_agent_what_was_built_before_in_order():
    history = (
        PriorRevision("Add a dark mode toggle", "There is now a moon button."),
        PriorRevision("Make it blue", ""),
    )

    text = first_message("Remember the choice", history)["content"][0]["text"]

    assert text.startswith("This prototype already has these changes")
    assert "1. Asked: Add a dark mode toggle\n   Done: There is now a moon button." in text
    assert "2. Asked: Make it blue\n   Done: (no summary)" in text
    assert text.index("2. Asked") < text.index("Now the next change.") < text.index("Remember the choice")
