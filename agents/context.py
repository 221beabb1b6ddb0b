"""What the agent is told: a fixed system prompt, then this repository's context, then the idea."""

from __future__ import annotations

import base64
from pathlib import Path

from agents import workspace as git
from agents.recipe import Recipe

SYSTEM = """\
You are the engineer inside Prototype Store. Someone at the company, often not an engineer, described a \
change to one of the company's real apps in plain words. Make that change in the repository you are given, \
as a working prototype they can try.

How to work:
- Read before you write: use `search` and the editor's `view` to find where the change belongs.
- Make small, targeted edits with `str_replace` or `insert`; never rewrite a whole existing file. Follow the \
code style and structure you find, and the repository's own notes.
- Add or update a test for the change when the project has tests.
- Call `verify` to run the project's own build and tests. When it fails, read the lines it returns, fix the \
cause, and verify again.
- When `verify` has passed, call `finish` with two or three plain sentences for the person who asked: what \
they will see and how to use it. No code, no file names.
- Commands run in a sandbox with no network: do not try to install anything or reach the internet.
- Keep your messages short and friendly; the person watches them live.
- If the idea is unclear, make the most reasonable small version of it and say what you assumed in the summary.
"""

REPO_NOTES = ("AGENTS.md", "CLAUDE.md")
MAX_NOTES_CHARS = 8_000
MAX_MAP_FILES = 400
SKIP_PARTS = {"node_modules", "vendor", "third_party", "dist", "build", "__pycache__", ".git"}


def file_map(paths: list[str], limit: int = MAX_MAP_FILES) -> str:
    """A trimmed, stable list of the repository's files: shallow paths first."""
    kept = [p for p in paths if not SKIP_PARTS.intersection(Path(p).parts)]
    kept.sort(key=lambda p: (p.count("/"), p))
    shown = sorted(kept[:limit])
    more = f"\n… and {len(kept) - limit} more files" if len(kept) > limit else ""
    return "\n".join(shown) + more


def system_blocks(*, recipe: Recipe, mirror: Path, commit: str, target: str) -> list[dict]:
    """The static prompt and this repository's context, each a cache breakpoint (they never change
    within a build, and the static one never changes at all)."""
    parts = [f"# The app: {recipe.name} ({recipe.kind}, target '{target}')"]
    if recipe.description:
        parts.append(recipe.description)
    parts.append("## Its recipe (prototype.toml): how the store builds, tests and packages it\n```toml\n"
                 f"{recipe.source.strip()}\n```")  # fmt: skip
    if recipe.agent_notes:
        parts.append(f"## Notes from the app's owners\n{recipe.agent_notes.strip()}")
    for name in REPO_NOTES:
        text = git.read_file(mirror, commit, name)
        if text:
            clipped = text[:MAX_NOTES_CHARS] + ("\n…" if len(text) > MAX_NOTES_CHARS else "")
            parts.append(f"## The repository's {name}\n{clipped.strip()}")
    parts.append(f"## Files in the repository\n{file_map(git.list_files(mirror, commit))}")
    cache = {"type": "ephemeral"}
    return [
        {"type": "text", "text": SYSTEM, "cache_control": cache},
        {"type": "text", "text": "\n\n".join(parts), "cache_control": cache},
    ]


def image_blocks(attachments) -> list[dict]:
    blocks = []
    for attachment in attachments:
        data = base64.standard_b64encode(Path(attachment.path).read_bytes()).decode()
        blocks.append(
            {"type": "image", "source": {"type": "base64", "media_type": attachment.media_type, "data": data}}
        )
    return blocks


def first_message(idea: str, history, attachments=()) -> dict:
    text = ""
    if history:
        lines = [
            "This prototype already has these changes, built one after the other (the code you see includes them):"
        ]
        for number, prior in enumerate(history, 1):
            lines.append(f"{number}. Asked: {prior.prompt.strip()}\n   Done: {prior.summary.strip() or '(no summary)'}")
        text = "\n".join(lines) + "\n\nNow the next change.\n\n"
    text += f"The idea, in the words of the person who asked:\n\n{idea.strip()}"
    if attachments:
        count = len(attachments)
        text += f"\n\n(They attached {count} image{'s' if count > 1 else ''} above: mockups or screenshots to follow.)"
    return {"role": "user", "content": [*image_blocks(attachments), {"type": "text", "text": text}]}
