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
