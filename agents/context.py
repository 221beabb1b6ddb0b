"""What the agent is told: a fixed system prompt, then this repository's context, then the idea."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

from agents import workspace as git
from agents.errors import ServiceError
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

# What the agent reads of the repository's own documents, each under its own heading, cut at a paragraph:
# the README for what the app is (the first found at the root, any case), the contributing guide for how
# its people work, and the notes written for coding agents in full up to their budget.
READMES = ("README.md", "README.rst", "README.txt", "README")
CONTRIBUTING = ("CONTRIBUTING.md", "CONTRIBUTING.rst", "CONTRIBUTING.txt", "CONTRIBUTING", ".github/CONTRIBUTING.md",
                "docs/CONTRIBUTING.md")  # fmt: skip
REPO_NOTES = ("AGENTS.md", "CLAUDE.md")
MAX_README_CHARS = 6_000
MAX_CONTRIBUTING_CHARS = 4_000
MAX_NOTES_CHARS = 8_000
MAX_MAP_FILES = 400
SKIP_PARTS = {"node_modules", "vendor", "third_party", "dist", "build", "__pycache__", ".git"}

# A large repository's map is ranked: these groups first, each bounded by its share of the limit, then
# the shallowest of the rest. The log is read at the build's commit, so the map is the same for every
# build of that commit and its block stays cacheable.
RECENT_COMMITS = 200
ENTRY_SHARE, RECENT_SHARE, TEST_SHARE = 0.1, 0.25, 0.15
MAX_IDEA_FILES = 50
ENTRY_NAMES = {
    "package.json", "manage.py", "main.py", "app.py", "__main__.py", "wsgi.py", "asgi.py", "setup.py",
    "pyproject.toml", "setup.cfg", "Makefile", "Dockerfile", "build.gradle", "build.gradle.kts",
    "settings.gradle", "settings.gradle.kts", "pom.xml", "Cargo.toml", "go.mod", "main.go", "Gemfile",
    "composer.json", "AndroidManifest.xml", "Info.plist", "tsconfig.json", "Package.swift",
}  # fmt: skip
ENTRY_STEMS = {"index", "main", "app", "server", "application", "mainactivity", "appdelegate", "program"}
TEST_FOLDERS = {"test", "tests", "__tests__", "spec", "specs", "androidtest", "e2e", "testing"}
_TEST_FILE = re.compile(
    r"(^test_.*\.py$|_test\.(py|go|rb|exs?)$|\.(test|spec)\.[^.]+$|(Test|Tests|Spec)\.[^.]+$|_spec\.rb$)"
)
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+")
STOPWORDS = set(
    "a an and are as at be but by can could do does for from get give has have how i if in into is it its "
    "let like make me more my new no not of on or our please should show so some than that the their them "
    "then there these they this to too up us use want was we what when where which who will with would you "
    "your add also all any each every just many much only other same see".split()
)  # fmt: skip


def skipped(path: str) -> bool:
    """Vendored dependencies and generated output: never worth the agent's attention in a map."""
    return not SKIP_PARTS.isdisjoint(path.split("/"))


def trim(text: str, limit: int) -> str:
    """The start of a document up to `limit` characters, cut at a paragraph (or at least a line) when
    one ends in its second half, saying how much was left out. Deterministic: caching depends on it."""
    text = text.strip()
    if len(text) <= limit:
        return text
    cut = text.rfind("\n\n", 0, limit)
    if cut < limit // 2:
        cut = text.rfind("\n", 0, limit)
    if cut < limit // 2:
        cut = limit
    return f"{text[:cut].rstrip()}\n\n[… {len(text) - cut:,} more characters not shown]"


def is_test(path: str) -> bool:
    *folders, name = path.split("/")
    return not TEST_FOLDERS.isdisjoint(f.lower() for f in folders) or bool(_TEST_FILE.search(name))


def _named_by_package_json(text: str, present: set[str]) -> set[str]:
    """The files a package.json names: its main file, module, binaries, and files its scripts run."""
    try:
        manifest = json.loads(text)
    except ValueError:
        return set()
    if not isinstance(manifest, dict):
        return set()
    values = [manifest.get("main"), manifest.get("module"), manifest.get("bin")]
    scripts = manifest.get("scripts")
    if isinstance(scripts, dict):
        values.extend(scripts.values())
    texts = [t for v in values for t in (v.values() if isinstance(v, dict) else [v]) if isinstance(t, str)]
    tokens = (token.removeprefix("./") for t in texts for token in re.split(r"[\s=;&|()'\"]+", t))
    return {token for token in tokens if token in present}


def entry_points(paths: list[str], package_json: str | None = None) -> list[str]:
    """Where an app starts and how it is built: build files and the usual entry file names, and what the
    root package.json names as its main file, binaries and script files. Shallowest first."""
    named = _named_by_package_json(package_json, set(paths)) if package_json else set()
    for path in paths:
        name = path.rsplit("/", 1)[-1]
        if name in ENTRY_NAMES or (name.split(".")[0].lower() in ENTRY_STEMS and not is_test(path)):
            named.add(path)
    return sorted(named, key=lambda p: (p.count("/"), p))


def recently_changed(mirror: Path, commit: str, commits: int = RECENT_COMMITS) -> list[str]:
    """Files changed in the last `commits` commits up to `commit`, most recent first, once each. Empty
    when the log cannot be read (a shallow mirror's missing history only shortens it)."""
    try:
        out = git.git("log", "-z", "-n", str(commits), "--name-only", "--no-renames", "--format=", commit, "--",
                      git_dir=mirror, check=False, timeout=60)  # fmt: skip
    except ServiceError:  # git took too long: a map without this group is still a map
        return []
    seen: dict[str, None] = {}
    for name in out.split("\0"):
        name = name.strip("\n")
        if name:
            seen.setdefault(name, None)
    return list(seen)


def file_map(
    paths: list[str], limit: int = MAX_MAP_FILES, *, recent: list[str] = (), package_json: str | None = None
) -> str:
    """A stable map of the repository's files. All of them when they fit in `limit`; otherwise a ranked
    choice, in groups: entry points and build files, recently changed files, tests, then the shallowest
    of the rest, with a line saying how many files there are and how these were chosen."""
    kept = sorted(p for p in paths if not skipped(p))
    if len(kept) <= limit:
        return "\n".join(kept)
    present = set(kept)
    chosen: set[str] = set()

    def take(candidates, share: float) -> list[str]:
        room = min(int(limit * share), limit - len(chosen))
        picked = [p for p in candidates if p in present and p not in chosen][:room]
        chosen.update(picked)
        return picked

    groups = [
        ("Entry points and build files", sorted(take(entry_points(kept, package_json), ENTRY_SHARE))),
        ("Changed recently (most recent first)", take(recent, RECENT_SHARE)),
        ("Tests", sorted(take(sorted((p for p in kept if is_test(p)), key=lambda p: (p.count("/"), p)), TEST_SHARE))),
    ]
    groups.append(("Other files (the shallowest)", sorted(take(sorted(kept, key=lambda p: (p.count("/"), p)), 1.0))))
    lines = [
        f"The repository has {len(kept):,} files (leaving out vendored and generated folders), too many to list: "
        f"these {len(chosen):,} were chosen as entry points and build files, files changed in its last "
        f"{RECENT_COMMITS} commits, tests, then the shallowest of the rest. Use `search` to find the others."
    ]
    for title, group in groups:
        if group:
            lines.append(f"\n{title}:\n" + "\n".join(group))
    return "\n".join(lines)


def _stem(word: str) -> str:
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


def _tokens(text: str) -> set[str]:
    """The words of a path or a sentence, lower-cased and singular: `SleepTimer.kt` → sleep, timer, kt."""
    return {_stem(w.lower()) for w in _WORD.findall(text)}


def idea_words(idea: str) -> list[str]:
    return sorted({w for w in _tokens(idea) if len(w) >= 3 and w not in STOPWORDS and not w.isdigit()})


def idea_files(idea: str, paths: list[str], limit: int = MAX_IDEA_FILES) -> tuple[list[str], list[str]]:
    """The files whose paths share words with the idea, best first, and the words that matched. A word
    counts more the fewer paths it appears in (`app` in every path says nothing), and twice in the
    file's own name; ties go to the shallower path."""
    words = idea_words(idea)
    kept = [p for p in paths if not skipped(p)]
    if not words or not kept:
        return [], []
    known: dict[str, frozenset[str]] = {}  # folders repeat: tokenize each name once

    def of(part: str) -> frozenset[str]:
        if part not in known:
            known[part] = frozenset(_tokens(part))
        return known[part]

    tokens = {}
    for path in kept:
        parts = path.split("/")
        tokens[path] = (of(parts[-1]), frozenset().union(*map(of, parts)))
    frequency = {w: sum(w in everywhere for _, everywhere in tokens.values()) for w in words}
    weight = {w: math.log(len(kept) / n) for w, n in frequency.items() if n}
    scored = []
    for path, (own, everywhere) in tokens.items():
        score = sum(weight[w] * (2 if w in own else 1) for w in weight if w in everywhere)
        if score > 0:
            scored.append((-round(score, 6), path.count("/"), path))
    scored.sort()
    best = [path for _, _, path in scored[:limit]]
    matched = sorted(w for w in weight if weight[w] > 0 and any(w in tokens[p][1] for p in best))
    return best, matched


def system_blocks(*, recipe: Recipe, mirror: Path, commit: str, target: str, idea: str = "") -> list[dict]:
    """The static prompt and this repository's context, each a cache breakpoint (they never change
    within a build, and the static one never changes at all; the repository's is the same for every
    build of a commit). A repository too large to list gets a third block, after that breakpoint and
    without one of its own (a request may carry four), naming the files that match the idea's words: it
    differs per idea, and in the per-commit block it would spoil the cache for every other idea."""
    paths = git.list_files(mirror, commit)
    root = {p.lower(): p for p in paths if "/" not in p}
    shallow = {p for p in paths if p.count("/") <= 1}
    parts = [f"# The app: {recipe.name} ({recipe.kind}, target '{target}')"]
    if recipe.description:
        parts.append(recipe.description)
    parts.append("## Its recipe (prototype.toml): how the store builds, tests and packages it\n```toml\n"
                 f"{recipe.source.strip()}\n```")  # fmt: skip
    if recipe.agent_notes:
        parts.append(f"## Notes from the app's owners\n{recipe.agent_notes.strip()}")
    documents = [
        (next((root[n.lower()] for n in READMES if n.lower() in root), None), MAX_README_CHARS),
        (next((n for n in CONTRIBUTING if n in shallow), None), MAX_CONTRIBUTING_CHARS),
        *((n, MAX_NOTES_CHARS) for n in REPO_NOTES),
    ]
    for name, limit in documents:
        text = git.read_file(mirror, commit, name) if name else None
        if text and text.strip():
            parts.append(f"## The repository's {name}\n{trim(text, limit)}")
    large = sum(not skipped(p) for p in paths) > MAX_MAP_FILES
    recent = recently_changed(mirror, commit) if large else []
    package_json = git.read_file(mirror, commit, "package.json") if large and "package.json" in root else None
    parts.append(f"## Files in the repository\n{file_map(paths, recent=recent, package_json=package_json)}")
    cache = {"type": "ephemeral"}
    blocks = [
        {"type": "text", "text": SYSTEM, "cache_control": cache},
        {"type": "text", "text": "\n\n".join(parts), "cache_control": cache},
    ]
    matches, words = idea_files(idea, paths) if large else ([], [])
    if matches:
        blocks.append({"type": "text", "text": (
            f"## Files whose names match words of this idea ({', '.join(words)}), best first\n" + "\n".join(matches)
        )})  # fmt: skip
    return blocks


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
