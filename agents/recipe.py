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

# [serve]: how a built version is run as a live preview (docs/recipes.md, "Live previews").
INSTANCE_MODES = ("shared", "per-person")
DEFAULT_STARTUP_TIMEOUT = 30
MAX_STARTUP_TIMEOUT = 300  # a preview that needs longer than this to answer is not one people will wait for
DEFAULT_IDLE_MINUTES = 15
MAX_IDLE_MINUTES = 24 * 60  # an idle instance holds memory on a shared host; a day is the most we keep one
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A preview runs untrusted code that anyone allowed to open it can make print its environment, so the
# recipe's [serve] env is for plain settings only. Names that look like they hold a secret are refused
# outright rather than trusted to hold demo values: a recipe is committed to the repository, read by the
# agent and shown in the store, and a real credential there would leak three ways at once.
SECRET_WORDS = ("KEY", "TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL")
SERVE_KEYS = (
    "command",
    "port",
    "health",
    "startup_timeout",
    "seed",
    "env",
    "idle_minutes",
    "instances",
    "data",
    "backends",
)


# [setup] inputs: when a recipe names none, the files whose content keys a target's dependency layer
# (agents/deplayer.py) are the lockfiles and manifests of these package managers, wherever they are in
# the repository (outside folders that hold installed packages).
DEFAULT_SETUP_INPUTS = (
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lockb",
    "requirements*.txt", "constraints*.txt", "poetry.lock", "uv.lock", "Pipfile.lock", "pdm.lock",
    "pom.xml", "build.gradle", "build.gradle.kts", "settings.gradle", "settings.gradle.kts",
    "gradle.lockfile", "libs.versions.toml", "gradle-wrapper.properties",
    "go.sum", "Cargo.lock", "Gemfile.lock", "composer.lock",
)  # fmt: skip
SERVICES = ("postgresql", "redis")
TOOLCHAIN_NAME = re.compile(r"[a-z][a-z0-9-]{0,31}")
TOOLCHAIN_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,31}")
MAX_PATTERN_CHARS = 300
RUNNER_LABEL = re.compile(r"[a-z0-9][a-z0-9-]{0,31}")  # the labels of build runners (agents/runner.py)


@dataclass(frozen=True)
class Step:
    command: str
    timeout: int = DEFAULT_TIMEOUT
    # [test] only: how test cases are named when the runner prints none of the known formats
    reports: str = ""  # a glob, relative to the repository, of JUnit XML reports the command writes
    pass_pattern: str = ""  # a regular expression matching one passing test's line; group `name` (or 1)
    fail_pattern: str = ""  # the same for a failing test
    # Labels of the build runner this step must run on (docs/runners.md), like ("macos",); () runs it here.
    runs_on: tuple[str, ...] = ()


@dataclass(frozen=True)
class Services:
    """What the app's commands need running beside them ([services]): started inside each command's own
    sandbox, with the build's own data folder (agents/services.py)."""

    postgresql: bool = False
    redis: bool = False

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name in SERVICES if getattr(self, name))

    def __bool__(self) -> bool:
        return bool(self.names)


@dataclass(frozen=True)
class ArtifactSpec:
    kind: str
    path: str
    entry: str = "index.html"
    # apk and ipa only: the folder of a hybrid app's web part (what its WebView shows), also packaged
    # as a web artifact so people without that phone try it in the store's phone frame; "" for none.
    web_preview: str = ""


@dataclass(frozen=True)
class Backend:
    """A backend target a served version talks to, and the environment variable through which the app
    receives that backend's base URL (e.g. PODCAST_API_URL=http://…/)."""

    target: str
    env: str


@dataclass(frozen=True)
class Serve:
    """How to run a built version as a live preview. Commands run with the unpacked artifact as their
    working directory; `data` is the one folder in it an instance may write."""

    command: str
    port: int
    health: str = "/"
    startup_timeout: int = DEFAULT_STARTUP_TIMEOUT
    seed: str = ""
    env: tuple[tuple[str, str], ...] = ()  # pairs, in the recipe's order (a tuple keeps the recipe hashable)
    idle_minutes: int = DEFAULT_IDLE_MINUTES
    instances: str = "shared"
    data: str = "data"
    backends: tuple[Backend, ...] = ()

    @property
    def environment(self) -> dict[str, str]:
        return dict(self.env)


@dataclass(frozen=True)
class CheckStep:
    """One step of the browser check ([check] steps): on the page at `path`, click the control named
    `click`, or type `text` into the field labelled (or with the placeholder) `fill`; then `expect` must
    show on the page."""

    path: str
    expect: str
    click: str = ""
    fill: str = ""
    text: str = ""

    def describe(self) -> str:
        action = f'click "{self.click}"' if self.click else f'type "{self.text}" into "{self.fill}"'
        return f'on {self.path}: {action}, expect "{self.expect}"'


@dataclass(frozen=True)
class Check:
    """What the browser check opens before a web prototype is published ([check], agents/browser.py).
    When the recipe does not say, `enabled` is true for web artifacts and served apps."""

    paths: tuple[str, ...] = ("/",)
    steps: tuple[CheckStep, ...] = ()
    enabled: bool = True


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
    serve: Serve | None = None
    # Files whose content (with the setup commands) keys the dependency layer; () means the defaults.
    setup_inputs: tuple[str, ...] = ()
    services: Services = field(default_factory=Services)
    toolchain: tuple[tuple[str, str], ...] = ()  # (name, version) pairs, in the recipe's order
    check: Check = field(default_factory=lambda: Check(enabled=False))
    source: str = field(default="", compare=False)

    @property
    def lock_inputs(self) -> tuple[str, ...]:
        """The file patterns whose content keys the dependency layer."""
        return self.setup_inputs or DEFAULT_SETUP_INPUTS


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

    def number(
        self, section: str, table: dict, key: str, *, default: int | None, low: int, high: int, unit: str
    ) -> int:
        value = table.get(key, default)
        if value is None:
            self.fail(f"'{key}' is required in [{section}]", section)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            self.fail(f"'{key}' must be a whole number{unit} from {low} to {high}", section, key)
        return value

    def timeout(self, section: str, table: dict) -> int:
        return self.number(
            section, table, "timeout", default=DEFAULT_TIMEOUT, low=1, high=MAX_TIMEOUT, unit=" of seconds"
        )

    def step(self, section: str, *, required: bool) -> Step | None:
        extra = ("reports", "pass", "fail") if section == "test" else ()
        table = self.table(section, required, ("command", "timeout", "runs_on", *extra))
        if not table:
            return None
        command, timeout = self.string(section, table, "command", required=True), self.timeout(section, table)
        runs_on = self.labels(section, table)
        if not extra:
            return Step(command, timeout, runs_on=runs_on)
        reports = self.string(section, table, "reports")
        if reports:
            _relative_path(self, reports, section, "reports", inside="the repository, like 'build/test-results/*.xml'")
        return Step(
            command, timeout, reports=reports, pass_pattern=self.pattern(section, table, "pass"),
            fail_pattern=self.pattern(section, table, "fail"), runs_on=runs_on,
        )  # fmt: skip

    def labels(self, section: str, table: dict) -> tuple[str, ...]:
        """`runs_on`: the labels a build runner must have to run this step, like ["macos", "xcode"]."""
        value = table.get("runs_on", [])
        if not isinstance(value, list) or not value and "runs_on" in table:
            self.fail("'runs_on' must be a list of runner labels, like runs_on = [\"macos\"]", section, "runs_on")
        for label in value:
            if not isinstance(label, str) or not RUNNER_LABEL.fullmatch(label):
                self.fail(f"{label!r} is not a runner label (lower-case letters, digits and -, up to 32)", section,
                          "runs_on")  # fmt: skip
        return tuple(dict.fromkeys(value))

    def pattern(self, section: str, table: dict, key: str) -> str:
        """A line pattern naming one test: a regular expression with a group `name` (or a first group)."""
        text = self.string(section, table, key)
        if not text:
            return ""
        if len(text) > MAX_PATTERN_CHARS:
            self.fail(f"'{key}' must be at most {MAX_PATTERN_CHARS} characters", section, key)
        try:
            compiled = re.compile(text)
        except re.error as exc:
            self.fail(f"'{key}' is not a valid regular expression ({exc})", section, key)
        if "name" not in compiled.groupindex and compiled.groups < 1:
            self.fail(f"'{key}' must capture the test's name, like '^{key.upper()} (?P<name>.+)$'", section, key)
        return text


def _relative_path(
    reader: _Reader, value: str, section: str, key: str, *, inside: str = "the repository, like 'dist'"
) -> str:
    path = PurePosixPath(value)
    if path.is_absolute() or ".." in path.parts or not value.strip():
        reader.fail(f"must be a path inside {inside}", section, key)
    return str(path)


def _env_name(reader: _Reader, name: object, key: str) -> str:
    """A variable name for a served app's environment: a plain name, never one that looks like a secret."""
    if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
        reader.fail(f"{name!r} is not a variable name (letters, digits and _, not starting with a digit)", "serve", key)
    looks_secret = [word for word in SECRET_WORDS if word in name.upper()]
    if looks_secret:
        reader.fail(
            f"'{name}' looks like a secret (it contains {looks_secret[0]}); a preview must not be given secrets, "
            "and the recipe is readable by everyone who can see the target: use demo values the app needs no "
            "secret for",
            "serve",
            key,
        )
    return name


def _serve_env(reader: _Reader, table: dict) -> dict[str, str]:
    env = table.get("env", {})
    if not isinstance(env, dict):
        reader.fail("'env' must be a table of names and texts, like env = { LOG_LEVEL = \"info\" }", "serve", "env")
    for name, value in env.items():
        _env_name(reader, name, "env")
        # Only text: TOML numbers and booleans have no single spelling as an environment value, and a NUL
        # cannot be passed to a process at all.
        if not isinstance(value, str) or "\0" in value:
            reader.fail(f"the value of '{name}' must be a text in quotes", "serve", "env")
    return env


def _serve_backends(reader: _Reader, table: dict, env: dict[str, str]) -> tuple[Backend, ...]:
    backends_value = table.get("backends", [])
    if not isinstance(backends_value, list):
        reader.fail(
            '\'backends\' must be a list like [{ target = "podcast-api", env = "PODCAST_API_URL" }]',
            "serve",
            "backends",
        )
    backends: list[Backend] = []
    for item in backends_value:
        if not isinstance(item, dict) or set(item) != {"target", "env"}:
            reader.fail(
                'each backend must be written { target = "podcast-api", env = "PODCAST_API_URL" }: the backend '
                "target's slug and the variable through which the app receives its base URL",
                "serve",
                "backends",
            )
        target, variable = item["target"], item["env"]
        if not isinstance(target, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", target):
            reader.fail(f"{target!r} is not a target's slug, like 'podcast-api'", "serve", "backends")
        _env_name(reader, variable, "backends")
        if variable in env or any(b.env == variable for b in backends):
            reader.fail(f"'{variable}' is given twice; each variable can hold one value", "serve", "backends")
        if any(b.target == target for b in backends):
            reader.fail(f"the backend '{target}' is listed twice", "serve", "backends")
        backends.append(Backend(target, variable))
    return tuple(backends)


def _serve(reader: _Reader) -> Serve | None:
    if "serve" not in reader.data:
        return None
    table = reader.table("serve", required=False, keys=SERVE_KEYS)
    command = reader.string("serve", table, "command", required=True)
    port = reader.number("serve", table, "port", default=None, low=1, high=65535, unit="")
    health = reader.string("serve", table, "health", default="/")
    # A path on the app itself: never a full URL or a scheme-relative one ("//host/") that could point
    # the health check somewhere else, and nothing a request line cannot carry.
    if not health.startswith("/") or health.startswith("//") or any(c.isspace() or not c.isprintable() for c in health):
        reader.fail("'health' must be a path on the app starting with '/', like '/health'", "serve", "health")
    startup_timeout = reader.number(
        "serve",
        table,
        "startup_timeout",
        default=DEFAULT_STARTUP_TIMEOUT,
        low=1,
        high=MAX_STARTUP_TIMEOUT,
        unit=" of seconds",
    )
    seed = reader.string("serve", table, "seed", required="seed" in table)
    idle_minutes = reader.number(
        "serve", table, "idle_minutes", default=DEFAULT_IDLE_MINUTES, low=1, high=MAX_IDLE_MINUTES, unit=" of minutes"
    )
    instances = reader.string("serve", table, "instances", default="shared")
    if instances not in INSTANCE_MODES:
        reader.fail(
            f"'instances' must be \"shared\" (one per version) or \"per-person\", not '{instances}'",
            "serve",
            "instances",
        )
    data = _relative_path(
        reader,
        reader.string("serve", table, "data", default="data"),
        "serve",
        "data",
        inside="the artifact, like 'data'",
    )
    if data == ".":
        reader.fail("must be a folder inside the artifact, like 'data', not the artifact itself", "serve", "data")

    env = _serve_env(reader, table)
    backends = _serve_backends(reader, table, env)
    return Serve(
        command=command,
        port=port,
        health=health,
        startup_timeout=startup_timeout,
        seed=seed,
        env=tuple(env.items()),
        idle_minutes=idle_minutes,
        instances=instances,
        data=data,
        backends=backends,
    )


def _services(reader: _Reader) -> Services:
    table = reader.table("services", required=False, keys=SERVICES)
    for name, value in table.items():
        if not isinstance(value, bool):
            reader.fail(f"'{name}' must be true or false", "services", name)
    return Services(**{name: table.get(name, False) for name in SERVICES})


def _toolchain(reader: _Reader) -> tuple[tuple[str, str], ...]:
    value = reader.data.get("toolchain", {})
    if not isinstance(value, dict):
        reader.fail("'toolchain' must be a table like [toolchain]", "toolchain")
    pairs = []
    for name, version in value.items():
        if not TOOLCHAIN_NAME.fullmatch(name):
            reader.fail(f"'{name}' is not a toolchain name (lower-case letters, digits and -)", "toolchain", name)
        if not isinstance(version, str) or not TOOLCHAIN_VERSION.fullmatch(version):
            reader.fail(f"the version of '{name}' must be a text in quotes, like \"22\"", "toolchain", name)
        pairs.append((name, version))
    return tuple(pairs)


CHECK_STEP_KEYS = ("path", "click", "fill", "text", "expect")
MAX_CHECK_PATHS = 10
MAX_CHECK_STEPS = 20


def _page_path(reader: _Reader, value: object, key: str) -> str:
    """A page of the prototype, like "/" or "/about.html": never a full URL or "//host/"."""
    if (
        not isinstance(value, str) or not value.startswith("/") or value.startswith("//") or ".." in value.split("/")
        or any(c.isspace() or not c.isprintable() for c in value) or len(value) > 300
    ):  # fmt: skip
        reader.fail(f"{value!r} is not a page of the prototype: a path starting with '/', like \"/\"", "check", key)
    return value


def _check(reader: _Reader, *, default: bool) -> Check:
    table = reader.table("check", required=False, keys=("paths", "steps", "enabled"))
    enabled = table.get("enabled", default)
    if not isinstance(enabled, bool):
        reader.fail("'enabled' must be true or false", "check", "enabled")
    paths = table.get("paths", ["/"])
    if not isinstance(paths, list) or not paths or len(paths) > MAX_CHECK_PATHS:
        reader.fail(f"'paths' must be a list of 1 to {MAX_CHECK_PATHS} pages, like [\"/\"]", "check", "paths")
    paths = tuple(dict.fromkeys(_page_path(reader, path, "paths") for path in paths))
    steps_value = table.get("steps", [])
    if not isinstance(steps_value, list) or len(steps_value) > MAX_CHECK_STEPS:
        reader.fail(f"'steps' must be a list of at most {MAX_CHECK_STEPS} steps", "check", "steps")
    steps = []
    example = '{ click = "Dark mode", expect = "Light mode" } or { fill = "Search", text = "jazz", expect = "Jazz" }'
    for item in steps_value:
        if not isinstance(item, dict) or set(item) - set(CHECK_STEP_KEYS):
            reader.fail(f"each step is written like {example}", "check", "steps")
        if not all(isinstance(value, str) for value in item.values()):
            reader.fail(f"the values of a step are texts in quotes, like {example}", "check", "steps")
        click, fill, text, expect = (item.get(k, "").strip() for k in ("click", "fill", "text", "expect"))
        if not expect or bool(click) == bool(fill) or bool(fill) != ("text" in item):
            reader.fail(f"a step clicks or fills one thing and expects a text, like {example}", "check", "steps")
        path = _page_path(reader, item.get("path", paths[0]), "steps")
        steps.append(CheckStep(path=path, expect=expect, click=click, fill=fill, text=item.get("text", "")))
    return Check(paths=paths, steps=tuple(steps), enabled=enabled)


def parse_recipe(text: str) -> Recipe:
    """Parse and validate prototype.toml text. Raises RecipeError naming the line and key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"line (\d+)", str(exc))
        raise RecipeError(f"this is not valid TOML ({exc})", line=int(match.group(1)) if match else None) from None

    reader = _Reader(text, data)
    known = {"prototype", "setup", "build", "test", "artifact", "agent", "serve", "services", "toolchain", "check"}
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

    setup_table = reader.table("setup", required=False, keys=("commands", "timeout", "inputs"))
    commands = setup_table.get("commands", [])
    if not isinstance(commands, list) or not all(isinstance(c, str) and c.strip() for c in commands):
        reader.fail("'commands' must be a list of commands in quotes", "setup", "commands")
    setup_timeout = reader.timeout("setup", setup_table) if setup_table else DEFAULT_TIMEOUT
    inputs = setup_table.get("inputs", [])
    if not isinstance(inputs, list) or not all(isinstance(i, str) and i.strip() for i in inputs):
        reader.fail("'inputs' must be a list of files in quotes, like [\"package-lock.json\"]", "setup", "inputs")
    inputs = [_relative_path(reader, i, "setup", "inputs") for i in inputs]

    build = reader.step("build", required=False)
    test = reader.step("test", required=True)

    art = reader.table("artifact", required=True, keys=("kind", "path", "entry", "web_preview"))
    art_kind = reader.string("artifact", art, "kind", required=True)
    allowed = ARTIFACT_KINDS[kind]
    if art_kind not in allowed:
        reader.fail(f"a {kind} target packages {' or '.join(allowed)}, not '{art_kind}'", "artifact", "kind")
    art_path = _relative_path(reader, reader.string("artifact", art, "path", required=True), "artifact", "path")
    entry = reader.string("artifact", art, "entry", default="index.html")
    web_preview = reader.string("artifact", art, "web_preview")
    if web_preview and art_kind not in ("apk", "ipa"):
        reader.fail("'web_preview' is for an app's web part (an apk or ipa artifact)", "artifact", "web_preview")
    if web_preview:
        web_preview = _relative_path(
            reader, web_preview, "artifact", "web_preview", inside="the repository, like 'www'"
        )
    if art_kind == "web" or web_preview:
        entry = _relative_path(reader, entry, "artifact", "entry")

    agent = reader.table("agent", required=False, keys=("notes",))
    notes = reader.string("agent", agent, "notes")
    serve = _serve(reader)

    return Recipe(
        name=name,
        kind=kind,
        description=description,
        setup=tuple(commands),
        setup_timeout=setup_timeout,
        setup_inputs=tuple(inputs),
        services=_services(reader),
        toolchain=_toolchain(reader),
        build=build,
        test=test,
        artifact=ArtifactSpec(art_kind, art_path, entry, web_preview),
        agent_notes=notes,
        serve=serve,
        check=_check(reader, default=art_kind == "web" or serve is not None),
        source=text,
    )
