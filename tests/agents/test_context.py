"""What the agent is told: the fixed prompt, the repository's own context, and the idea with its images."""

from __future__ import annotations

import base64
import subprocess

import pytest

from agents.context import (
    MAX_MAP_FILES,
    MAX_NOTES_CHARS,
    MAX_README_CHARS,
    SYSTEM,
    entry_points,
    file_map,
    first_message,
    idea_files,
    system_blocks,
    trim,
)
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

    assert "x" * MAX_NOTES_CHARS + "\n\n[… 5,000 more characters not shown]" in repository
    assert "x" * (MAX_NOTES_CHARS + 1) not in repository


def test_the_readme_is_read_labelled_and_cut_at_a_paragraph(blocks_for):
    paragraphs = [f"Paragraph {n}: " + "words " * 100 for n in range(20)]  # about 12,000 characters
    repository = blocks_for({"README.md": "\n\n".join(paragraphs) + "\n", "README.rst": "Not this one.\n"})[1]["text"]

    section = repository[repository.index("## The repository's README.md\n") :]
    section = section[: section.index("\n\n## ")]
    assert section.startswith("## The repository's README.md\nParagraph 0: words")
    assert "Not this one." not in repository
    shown, note = section.rsplit("\n\n", 1)
    assert shown.endswith("words")  # the last paragraph shown is whole
    assert len(shown) <= MAX_README_CHARS + 40
    assert note.startswith("[… ") and note.endswith(" more characters not shown]")
    assert repository.index("## Its recipe") < repository.index("## The repository's README.md")


def test_a_readme_named_in_any_case_and_the_contributing_guide_are_read(blocks_for):
    repository = blocks_for({"readme.txt": "What this app is.\n", ".github/CONTRIBUTING.md": "Run make lint.\n"})[1]

    assert "## The repository's readme.txt\nWhat this app is." in repository["text"]
    assert "## The repository's .github/CONTRIBUTING.md\nRun make lint." in repository["text"]


def test_a_short_document_is_kept_whole_and_a_long_line_is_cut_at_the_budget():
    assert trim("  One.\n\nTwo.\n", 100) == "One.\n\nTwo."
    assert trim("y" * 50, 20) == "y" * 20 + "\n\n[… 30 more characters not shown]"


def test_the_same_repository_gives_byte_identical_blocks_so_the_cache_hits(blocks_for):
    files = {"AGENTS.md": "Notes.\n", "src/a.js": "", "src/b.js": ""}

    assert blocks_for(files) == blocks_for(files)


def test_the_file_map_leaves_out_dependencies_and_build_output():
    paths = ["src/app.js", "node_modules/x/index.js", "dist/app.js", "vendor/lib.py", "a/__pycache__/m.pyc", "README"]

    assert file_map(paths) == "README\nsrc/app.js"


def test_a_large_file_map_is_ranked_and_says_how_many_files_there_are_and_how_they_were_chosen():
    deep = [f"pkg/sub/deeper/file{n:03d}.py" for n in range(50)]
    shallow = ["LICENSE", "pkg/__init__.py", "pkg/core.py", "README.md"]
    tests = ["pkg/sub/deeper/tests/test_core.py", "web/src/Player.test.tsx"]
    paths = deep + shallow + tests + ["web/src/deep/start.js", "web/package.json", "node_modules/x/index.js"]
    manifest = '{"main": "web/src/deep/start.js", "scripts": {"test": "node --test"}}'

    shown = file_map(paths, limit=20, recent=["pkg/sub/deeper/file042.py", "gone.py"], package_json=manifest)

    assert shown.startswith("The repository has 58 files (leaving out vendored and generated folders), too many to "
                            "list: these 20 were chosen as entry points and build files, files changed in its last")  # fmt: skip
    groups = dict(part.split(":\n", 1) for part in shown.split("\n\n")[1:])
    assert groups["Entry points and build files"].splitlines() == ["web/package.json", "web/src/deep/start.js"]
    assert groups["Changed recently (most recent first)"] == "pkg/sub/deeper/file042.py"
    assert groups["Tests"].splitlines() == ["pkg/sub/deeper/tests/test_core.py", "web/src/Player.test.tsx"]
    others = groups["Other files (the shallowest)"].splitlines()
    assert others == sorted(others) and "README.md" in others and "LICENSE" in others
    assert sum(len(g.splitlines()) for g in groups.values()) == 20
    assert "node_modules" not in shown
    assert file_map(list(reversed(paths)), limit=20, recent=["pkg/sub/deeper/file042.py", "gone.py"],
                    package_json=manifest) == shown  # fmt: skip


def test_entry_points_include_what_package_json_runs_and_the_usual_names():
    paths = ["package.json", "scripts/dev-server.mjs", "lib/cli.js", "src/index.ts", "src/App.tsx", "src/util.ts",
             "app/src/main/AndroidManifest.xml", "tests/index.test.ts"]  # fmt: skip
    manifest = '{"bin": {"tool": "./lib/cli.js"}, "scripts": {"dev": "node scripts/dev-server.mjs --watch"}}'

    found = entry_points(paths, manifest)

    assert set(found) == {"package.json", "scripts/dev-server.mjs", "lib/cli.js", "src/index.ts", "src/App.tsx",
                          "app/src/main/AndroidManifest.xml"}  # fmt: skip
    assert entry_points(paths, "not json") == [p for p in found if p not in ("scripts/dev-server.mjs", "lib/cli.js")]


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


# --- a large repository: a ranked map, and the files the idea names after the cached block ------------------
def commit_change(repo, files: dict[str, str]) -> str:
    """Commit `files` on top of the repository and return the new commit."""
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    identity = ["-c", "user.name=Test", "-c", "user.email=test@example.invalid"]
    subprocess.run(["git", "add", "--all"], cwd=repo, check=True)
    subprocess.run(["git", *identity, "commit", "-q", "-m", "A recent change"], cwd=repo, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def large_repo(make_repo):
    """A few thousand files: many shallow ones, and deep ones where the interesting files hide."""
    files = {f"docs/page{n:03d}.md": "" for n in range(500)}
    files |= {f"src/modules/mod{m:03d}/components/widget{w}.js": "" for m in range(250) for w in range(10)}
    files |= {
        "src/modules/mod077/components/player/SleepTimer.tsx": "export {}\n",
        "src/modules/mod077/components/player/PlaybackControls.tsx": "export {}\n",
        "package.json": '{"main": "src/modules/mod001/components/widget1.js"}\n',
        "README.md": "# Big\n",
    }
    repo = make_repo(files)
    commit = commit_change(repo, {"src/modules/mod123/components/deep/Recent.js": "changed\n"})
    return repo, commit


def large_blocks(large_repo, idea: str) -> list[dict]:
    repo, commit = large_repo
    return system_blocks(recipe=parse_recipe(RECIPE), mirror=repo / ".git", commit=commit, target="big", idea=idea)


def test_a_large_repositorys_map_lists_deep_entry_points_and_recent_changes(large_repo):
    repository = large_blocks(large_repo, "")[1]["text"]
    listed = repository[repository.index("## Files in the repository\n") :]

    assert "The repository has 3,005 files" in listed
    assert "\nsrc/modules/mod123/components/deep/Recent.js\n" in listed  # changed in the last commit, 4 folders deep
    assert "\nsrc/modules/mod001/components/widget1.js\n" in listed  # package.json's main
    assert "\ndocs/page000.md" in listed  # then the shallowest
    assert len([line for line in listed.splitlines() if "/" in line or "." in line]) <= MAX_MAP_FILES + 1


def test_files_matching_the_ideas_words_come_in_a_block_after_the_cached_one(large_repo):
    blocks = large_blocks(large_repo, "Add a sleep timer to the player")

    assert len(blocks) == 3
    assert "cache_control" not in blocks[2]  # the request's breakpoints: tools, two system blocks, the rolling one
    title, *files = blocks[2]["text"].splitlines()
    assert title == "## Files whose names match words of this idea (player, sleep, timer), best first"
    assert files[0] == "src/modules/mod077/components/player/SleepTimer.tsx"
    assert "src/modules/mod077/components/player/PlaybackControls.tsx" in files
    assert "SleepTimer" not in blocks[1]["text"]


def test_the_per_commit_block_is_the_same_for_every_idea_and_every_block_the_same_for_the_same_idea(large_repo):
    sleep = large_blocks(large_repo, "Add a sleep timer to the player")
    recent = large_blocks(large_repo, "Make the recent widget bigger")

    assert sleep[:2] == recent[:2]
    assert sleep[2] != recent[2]
    assert large_blocks(large_repo, "Add a sleep timer to the player") == sleep


def test_a_small_repository_gets_no_idea_block(blocks_for, make_repo):
    repo = make_repo({**FILES, "player/sleep_timer.py": ""})
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()

    blocks = system_blocks(recipe=parse_recipe(RECIPE), mirror=repo / ".git", commit=commit, target="tiny",
                           idea="Add a sleep timer")  # fmt: skip

    assert len(blocks) == 2 and "player/sleep_timer.py" in blocks[1]["text"]


def test_words_found_in_every_path_weigh_nothing_and_a_files_own_name_weighs_most():
    paths = ["notes_app/server.py", "notes_app/count/helpers.py", "notes_app/pages.py", "notes_app/counts.py"]

    best, words = idea_files("Show how many notes I have, with a count", paths)

    assert words == ["count"]  # "notes" is in every path; "show", "how", "many" are not about code
    assert best == ["notes_app/counts.py", "notes_app/count/helpers.py"]
