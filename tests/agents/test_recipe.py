"""Recipes: valid ones parse; bad ones are refused naming the line and the key."""

from pathlib import Path

import pytest

from agents.recipe import RecipeError, parse_recipe

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "targets"

GOOD = """\
[prototype]
name = "Web Player"
kind = "web"

[build]
command = "node build.mjs"

[test]
command = "node --test"
timeout = 60

[artifact]
kind = "web"
path = "dist"
"""


def refused(text: str) -> RecipeError:
    with pytest.raises(RecipeError) as caught:
        parse_recipe(text)
    assert caught.value.code == "recipe_invalid"
    return caught.value


@pytest.mark.parametrize("folder", sorted(p.name for p in EXAMPLES.iterdir()))
def test_every_example_target_has_a_valid_recipe(folder):
    recipe = parse_recipe((EXAMPLES / folder / "prototype.toml").read_text())
    assert recipe.name and recipe.test.command


def test_a_minimal_recipe_parses_with_defaults():
    recipe = parse_recipe(GOOD)
    assert recipe.kind == "web"
    assert recipe.build.command == "node build.mjs" and recipe.build.timeout == 300
    assert recipe.test.timeout == 60
    assert recipe.artifact.entry == "index.html"
    assert recipe.setup == ()


def test_broken_toml_is_refused_with_its_line():
    error = refused(GOOD.replace('kind = "web"\n\n[build]', 'kind = "web\n\n[build]'))
    assert error.line == 3
    assert "line 3" in error.detail


def test_an_unknown_kind_names_the_key_and_line():
    error = refused(GOOD.replace('kind = "web"', 'kind = "desktop"', 1))
    assert error.key == "prototype.kind"
    assert error.line == 3
    assert "web, backend, android, ios" in error.detail


def test_an_artifact_that_does_not_fit_the_kind_is_refused():
    error = refused(GOOD.replace('kind = "web"\npath', 'kind = "apk"\npath'))
    assert error.key == "artifact.kind"
    assert error.line == 13


def test_a_missing_test_section_is_refused():
    error = refused(GOOD.replace('[test]\ncommand = "node --test"\ntimeout = 60\n', ""))
    assert "[test]" in error.detail


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (("timeout = 60", 'timeout = "soon"'), "test.timeout"),
        (("timeout = 60", "timeout = 99999"), "test.timeout"),
        (("timeout = 60", "timeout = true"), "test.timeout"),
        (('command = "node --test"', "command = 3"), "test.command"),
        (('path = "dist"', 'path = "../outside"'), "artifact.path"),
        (('path = "dist"', 'path = "/etc"'), "artifact.path"),
        (("timeout = 60", "retries = 2"), "test.retries"),
    ],
)
def test_bad_values_are_refused_naming_the_key(change, key):
    error = refused(GOOD.replace(*change))
    assert error.key == key
    assert error.line is not None and f"line {error.line}" in error.detail


def test_an_unknown_section_is_refused():
    error = refused(GOOD + '\n[deploy]\ntarget = "prod"\n')
    assert error.key == "deploy"
    assert error.line == 16


def test_setup_commands_must_be_a_list_of_text():
    error = refused(GOOD + '\n[setup]\ncommands = "npm ci"\n')
    assert error.key == "setup.commands"


# --- [serve]: how a built version runs as a live preview ------------------------------------------------
SERVED = (
    GOOD.replace('kind = "web"\n\n', 'kind = "backend"\n\n', 1).replace(
        'kind = "web"\npath = "dist"', 'kind = "pyz"\npath = "dist/app.pyz"'
    )
    + """
[serve]
command = "python3 app.pyz --port 8080 --data data"
port = 8080
"""
)  # [serve] starts on line 16


def test_a_recipe_without_serve_has_none():
    assert parse_recipe(GOOD).serve is None


def test_serve_parses_with_defaults():
    serve = parse_recipe(SERVED).serve
    assert serve.command == "python3 app.pyz --port 8080 --data data" and serve.port == 8080
    assert (serve.health, serve.startup_timeout, serve.idle_minutes) == ("/", 30, 15)
    assert (serve.instances, serve.data, serve.seed) == ("shared", "data", "")
    assert serve.env == () and serve.backends == ()


def test_serve_reads_every_key():
    recipe = parse_recipe(
        SERVED
        + """health = "/health?deep=1"
startup_timeout = 90
seed = "python3 app.pyz seed --data data"
idle_minutes = 60
instances = "per-person"
data = "var/db"
env = { LOG_LEVEL = "debug", GREETING = "hi" }
backends = [{ target = "podcast-api", env = "PODCAST_API_URL" }, { target = "auth", env = "AUTH_URL" }]
"""
    )
    serve = recipe.serve
    assert serve.health == "/health?deep=1" and serve.startup_timeout == 90 and serve.idle_minutes == 60
    assert serve.seed == "python3 app.pyz seed --data data"
    assert serve.instances == "per-person" and serve.data == "var/db"
    assert serve.environment == {"LOG_LEVEL": "debug", "GREETING": "hi"}
    assert [(b.target, b.env) for b in serve.backends] == [("podcast-api", "PODCAST_API_URL"), ("auth", "AUTH_URL")]
    hash(recipe)  # frozen all the way down: a recipe can be a cache key


def test_any_target_kind_may_be_served():
    web = GOOD + '\n[serve]\ncommand = "node server.js"\nport = 3000\n'
    assert parse_recipe(web).serve.port == 3000


@pytest.mark.parametrize(
    ("addition", "key", "words"),
    [
        ("port = 0\n", "serve.port", "from 1 to 65535"),  # replaces the port below
        ('port = "8080"\n', "serve.port", "from 1 to 65535"),
        ("port = 70000\n", "serve.port", "from 1 to 65535"),
        ('health = "health"\n', "serve.health", "starting with '/'"),
        ('health = "//evil.example/"\n', "serve.health", "starting with '/'"),
        ('health = "/a b"\n', "serve.health", "starting with '/'"),
        ("startup_timeout = 0\n", "serve.startup_timeout", "from 1 to 300"),
        ("startup_timeout = 3600\n", "serve.startup_timeout", "from 1 to 300"),
        ("idle_minutes = 0\n", "serve.idle_minutes", "from 1 to 1440"),
        ("idle_minutes = 100000\n", "serve.idle_minutes", "from 1 to 1440"),
        ('instances = "per-team"\n', "serve.instances", '"shared"'),
        ('seed = ""\n', "serve.seed", "non-empty"),
        ('data = "../outside"\n', "serve.data", "inside the artifact"),
        ('data = "/var/lib"\n', "serve.data", "inside the artifact"),
        ('data = "."\n', "serve.data", "not the artifact itself"),
        ("env = { LEVEL = 3 }\n", "serve.env", "text in quotes"),
        ('env = { "1ST" = "x" }\n', "serve.env", "not a variable name"),
        ('env = "LEVEL=3"\n', "serve.env", "table of names"),
        ('backends = "podcast-api"\n', "serve.backends", "must be a list"),
        ('backends = ["podcast-api"]\n', "serve.backends", "PODCAST_API_URL"),
        ('backends = [{ target = "podcast-api" }]\n', "serve.backends", "PODCAST_API_URL"),
        ('backends = [{ target = "../x", env = "X_URL" }]\n', "serve.backends", "target's slug"),
        ('backends = [{ target = "a", env = "A-URL" }]\n', "serve.backends", "not a variable name"),
        ('backends = [{ target = "a", env = "URL" }, { target = "b", env = "URL" }]\n', "serve.backends", "twice"),
        ('backends = [{ target = "a", env = "A" }, { target = "a", env = "B" }]\n', "serve.backends", "twice"),
        ('env = { A_URL = "x" }\nbackends = [{ target = "a", env = "A_URL" }]\n', "serve.backends", "twice"),
        ("restart = true\n", "serve.restart", "unknown key"),
    ],
)
def test_bad_serve_values_are_refused_naming_the_key_and_line(addition, key, words):
    text = SERVED.replace("port = 8080\n", addition) if addition.startswith("port") else SERVED + addition
    error = refused(text)
    assert error.key == key
    assert words in error.detail
    # The line is the key's own line in [serve] (an unknown key, or a key given the wrong value).
    name = key.split(".")[1]
    assert error.line == next(n for n, line in enumerate(text.splitlines(), 1) if line.startswith(f"{name} ="))
    assert f"line {error.line}" in error.detail


def test_serve_needs_a_command_and_a_port():
    assert (
        "'command' is required in [serve]"
        in refused(SERVED.replace('command = "python3 app.pyz --port 8080 --data data"\n', "")).detail
    )
    error = refused(SERVED.replace("port = 8080\n", ""))
    assert error.key == "serve" and error.line == 16 and "'port' is required" in error.detail
    assert "'command' is required" in refused(GOOD + "\n[serve]\n").detail


@pytest.mark.parametrize("name", ["API_KEY", "GITHUB_TOKEN", "Session_Secret", "DB_PASSWORD", "AWS_CREDENTIALS"])
def test_serve_env_refuses_names_that_look_like_secrets(name):
    error = refused(SERVED + f'env = {{ {name} = "demo" }}\n')
    assert error.key == "serve.env" and error.line == 19
    assert f"'{name}' looks like a secret" in error.detail


def test_a_backend_variable_that_looks_like_a_secret_is_refused_too():
    error = refused(SERVED + 'backends = [{ target = "auth", env = "AUTH_TOKEN" }]\n')
    assert error.key == "serve.backends" and "looks like a secret" in error.detail


def test_serve_backends_may_be_written_as_an_array_of_tables():
    serve = parse_recipe(SERVED + '\n[[serve.backends]]\ntarget = "podcast-api"\nenv = "PODCAST_API_URL"\n').serve
    assert serve.backends[0].target == "podcast-api" and serve.command.startswith("python3")


# --- onboarding keys: [setup] inputs, [services], [toolchain], [test] reports/pass/fail ---------------------


def test_onboarding_keys_parse():
    recipe = parse_recipe(
        GOOD.replace('[test]\ncommand = "node --test"', '[test]\ncommand = "node run-tests.mjs"\n'
                     'reports = "reports/*.xml"\npass = "^PASS (?P<name>.+)$"\nfail = "^FAIL (.+)$"')
        + '\n[setup]\ncommands = ["npm ci"]\ninputs = ["package-lock.json"]\n'
        + "\n[services]\npostgresql = true\n"
        + '\n[toolchain]\nnode = "22"\npython = "3.12"\n'
    )  # fmt: skip
    assert recipe.setup_inputs == ("package-lock.json",) and recipe.lock_inputs == ("package-lock.json",)
    assert recipe.services.names == ("postgresql",) and recipe.services
    assert recipe.toolchain == (("node", "22"), ("python", "3.12"))
    assert (recipe.test.reports, recipe.test.pass_pattern) == ("reports/*.xml", "^PASS (?P<name>.+)$")


def test_without_the_onboarding_keys_nothing_changes():
    recipe = parse_recipe(GOOD)
    assert not recipe.services and recipe.toolchain == () and recipe.setup_inputs == ()
    assert "package-lock.json" in recipe.lock_inputs and "requirements*.txt" in recipe.lock_inputs
    assert (recipe.test.reports, recipe.test.pass_pattern, recipe.test.fail_pattern) == ("", "", "")


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ("\n[services]\nmysql = true\n", "services.mysql", "takes postgresql, redis"),
        ('\n[services]\npostgresql = "yes"\n', "services.postgresql", "true or false"),
        ('\n[toolchain]\nNode = "22"\n', "toolchain.Node", "not a toolchain name"),
        ("\n[toolchain]\nnode = 22\n", "toolchain.node", "text in quotes"),
        ('\n[toolchain]\nnode = "../../etc"\n', "toolchain.node", "text in quotes"),
        ('\n[setup]\ninputs = ["../secrets"]\n', "setup.inputs", "path inside"),
        ('\n[setup]\ninputs = "package-lock.json"\n', "setup.inputs", "list of files"),
    ],
)
def test_bad_onboarding_keys_are_refused(extra, key, words):
    error = refused(GOOD + extra)
    assert error.key == key and words in error.detail


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ('pass = "(("', "not a valid regular expression"),
        ('pass = "^PASS .+$"', "must capture the test's name"),
        ('reports = "/etc/*.xml"', "path inside"),
    ],
)
def test_bad_test_patterns_are_refused(line, words):
    error = refused(GOOD.replace("timeout = 60", f"timeout = 60\n{line}"))
    assert error.key.startswith("test.") and words in error.detail


@pytest.mark.parametrize("folder", sorted(p.name for p in (EXAMPLES.parents[1] / "tests" / "repos").iterdir()))
def test_every_onboarding_repository_has_a_valid_recipe(folder):
    """The repositories docs/onboarding.md walks through (tests/repos/) parse, the Java one included, which
    needs a Maven mirror to build and so is only built by hand."""
    recipe = parse_recipe((EXAMPLES.parents[1] / "tests" / "repos" / folder / "prototype.toml").read_text())
    assert recipe.setup and recipe.test.command


def test_a_step_can_require_runner_labels():
    recipe = parse_recipe(
        GOOD.replace('command = "node build.mjs"', 'command = "xcodebuild"\nruns_on = ["macos", "xcode"]')
    )
    assert recipe.build.runs_on == ("macos", "xcode"), recipe.build
    assert recipe.test.runs_on == (), "a step without runs_on runs on this machine"


@pytest.mark.parametrize(
    "value, problem",
    [('"macos"', "must be a list of runner labels"), ("[]", "must be a list of runner labels"),
     ('["Mac OS"]', "is not a runner label")],
)  # fmt: skip
def test_runs_on_must_name_runner_labels(value, problem):
    error = refused(GOOD.replace("timeout = 60", f"timeout = 60\nruns_on = {value}"))
    assert error.key == "test.runs_on" and problem in error.problem, error.detail
