"""The recipe (`prototype.toml`): how a target is built, tested and packaged. Format: docs/recipes.md.

A build reads the recipe from its base commit (or the admin-written one when the repository has none),
so the agent's edits to prototype.toml never change what that build runs.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from agents.errors import UserError

KINDS = ("web", "backend", "android", "ios")
ARTIFACT_KINDS = {
    "web": ("web",),
    "backend": ("pyz", "wheel", "archive"),
    "android": ("apk",),
    "ios": ("ipa",),
}
DEFAULT_TIMEOUT = 300
MAX_TIMEOUT = 3600


@dataclass(frozen=True)
class Step:
    command: str
    timeout: int = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class ArtifactSpec:
    kind: str
    path: str
    entry: str = "index.html"


@dataclass(frozen=True)
class Recipe:
    name: str
    kind: str
    artifact: ArtifactSpec
    test: Step
    build: Step | None = None
    description: str = ""
    setup: tuple[str, ...] = ()
    setup_timeout: int = DEFAULT_TIMEOUT
    agent_notes: str = ""
    source: str = field(default="", compare=False)


class RecipeError(UserError):
    """The recipe is not valid. `line` is 1-based when known."""

    def __init__(self, problem: str, *, key: str = "", line: int | None = None):
        where = f"prototype.toml line {line}" if line else "prototype.toml"
        if key:
            where += f", key '{key}'"
        super().__init__("recipe_invalid", f"{where}: {problem}")
        self.problem = problem
        self.key = key
        self.line = line


def _locate(text: str, section: str, key: str | None = None) -> int | None:
    """The line of `[section]` (or of `key` inside it) in the TOML text, for error messages."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(section) + r"\s*\]\s*(#.*)?$")
    any_header = re.compile(r"^\s*\[")
    start = None
    for number, line in enumerate(lines, 1):
        if header.match(line):
            start = number
            break
    if start is None or key is None:
        return start
    key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
    for number in range(start + 1, len(lines) + 1):
        line = lines[number - 1]
        if any_header.match(line):
            break
        if key_re.match(line):
            return number
    return start


class _Reader:
    def __init__(self, text: str, data: dict):
        self.text = text
        self.data = data

    def fail(self, problem: str, section: str, key: str | None = None):
        dotted = f"{section}.{key}" if key else section
        raise RecipeError(problem, key=dotted, line=_locate(self.text, section, key))

    def table(self, section: str, required: bool, keys: tuple[str, ...]) -> dict:
        value = self.data.get(section)
        if value is None:
            if required:
                raise RecipeError(f"the [{section}] section is missing", key=section)
            return {}
        if not isinstance(value, dict):
            self.fail(f"'{section}' must be a table like [{section}]", section)
        for key in value:
            if key not in keys:
                self.fail(f"unknown key '{key}'; [{section}] takes {', '.join(keys)}", section, key)
        return value

    def string(self, section: str, table: dict, key: str, *, required: bool = False, default: str = "") -> str:
        value = table.get(key)
        if value is None:
            if required:
                self.fail(f"'{key}' is required in [{section}]", section)
            return default
        if not isinstance(value, str) or (required and not value.strip()):
            self.fail(f"'{key}' must be a non-empty text in quotes", section, key)
        return value

    def timeout(self, section: str, table: dict) -> int:
        value = table.get("timeout", DEFAULT_TIMEOUT)
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TIMEOUT:
            self.fail(f"'timeout' must be a whole number of seconds from 1 to {MAX_TIMEOUT}", section, "timeout")
        return value

    def step(self, section: str, *, required: bool) -> Step | None:
        table = self.table(section, required, ("command", "timeout"))
        if not table:
            return None
        return Step(self.string(section, table, "command", required=True), self.timeout(section, table))


def _relative_path(reader: _Reader, value: str, section: str, key: str) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        reader.fail("must be a path inside the repository, like 'dist'", section, key)
    return str(path)


def parse_recipe(text: str) -> Recipe:
    """Parse and validate prototype.toml text. Raises RecipeError naming the line and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise RecipeError(f"this is not valid TOML ({exc})", line=int(match.group(1)) if match else None) from None

    reader = _Reader(text, data)
    known = {"prototype", "setup", "build", "test", "artifact", "agent"}
    for section in data:
        if section not in known:
            raise RecipeError(
                f"unknown section [{section}]; expected one of {', '.join(sorted(known))}",
                key=section,
                line=_locate(text, section),
            )

    head = reader.table("prototype", required=True, keys=("name", "kind", "description"))
    name = reader.string("prototype", head, "name", required=True)
    kind = reader.string("prototype", head, "kind", required=True)
    if kind not in KINDS:
        reader.fail(f"'kind' must be one of {', '.join(KINDS)}, not '{kind}'", "prototype", "kind")
    description = reader.string("prototype", head, "description")

    setup_table = reader.table("setup", required=False, keys=("commands", "timeout"))
    commands = setup_table.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) and c.strip() for c in commands):
        reader.fail("'commands' must be a list of commands in quotes", "setup", "commands")
    setup_timeout = reader.timeout("setup", setup_table) if setup_table else DEFAULT_TIMEOUT

    build = reader.step("build", required=False)
    test = reader.step("test", required=True)

    art = reader.table("artifact", required=True, keys=("kind", "path", "entry"))
    art_kind = reader.string("artifact", art, "kind", required=True)
    allowed = ARTIFACT_KINDS[kind]
    if art_kind not in allowed:
        reader.fail(f"a {kind} target packages {' or '.join(allowed)}, not '{art_kind}'", "artifact", "kind")
    art_path = _relative_path(reader, reader.string("artifact", art, "path", required=True), "artifact", "path")
    entry = reader.string("artifact", art, "entry", default="index.html")
    if art_kind == "web":
        entry = _relative_path(reader, entry, "artifact", "entry")

    agent = reader.table("agent", required=False, keys=("notes",))
    notes = reader.string("agent", agent, "notes")

    return Recipe(
        name=name,
        kind=kind,
        description=description,
        setup=tuple(commands),
        setup_timeout=setup_timeout,
        build=build,
        test=test,
        artifact=ArtifactSpec(art_kind, art_path, entry),
        agent_notes=notes,
        source=text,
    )
