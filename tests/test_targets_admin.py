"""Targets admin: an admin registers a target from a git URL; its recipe is fetched, validated, fills the
target's fields, and what is wrong with it is shown — with the line and key."""

import html
import subprocess

import pytest

from prototypes.models import Target

pytestmark = pytest.mark.django_db
ADD_URL = "/admin/prototypes/target/add/"
GOOD = """\
[prototype]
name = "Podcast API"
kind = "backend"
description = "Episodes and shows over HTTP."

[test]
command = "python3 -m unittest"

[artifact]
kind = "pyz"
path = "dist/podcast.pyz"
"""
# An android target cannot package a web bundle: line 7 holds the offending key.
BROKEN = """\
[prototype]
name = "Phone App"
kind = "android"
[test]
command = "true"
[artifact]
kind = "web"
path = "dist"
"""


def git_repo(folder, files: dict[str, str]):
    """A real git repository (branch main) holding `files`, committed."""
    folder.mkdir()
    run = ["git", "-C", str(folder), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*run, "init", "--quiet", "--initial-branch=main"], check=True)
    commit(folder, files, "Start")
    return folder


def commit(folder, files: dict[str, str], message: str):
    for name, text in files.items():
        (folder / name).write_text(text)
    run = ["git", "-C", str(folder), "-c", "user.name=Test", "-c", "user.email=test@example.com"]
    subprocess.run([*run, "add", "--all"], check=True)
    subprocess.run([*run, "commit", "--quiet", "-m", message], check=True)


def register(client, git_url, **fields):
    data = {
        "git_url": git_url, "default_branch": "main", "name": "", "slug": "", "kind": "", "description": "",
        "enabled": "on", "recipe_override": "", "concurrency_limit": "2", "egress_hosts": "[]", "model": "",
        "github_repo": "", "github_api_url": "https://api.github.com", "github_token_env": "",
    }  # fmt: skip
    data.update(fields)
    response = client.post(ADD_URL, data, follow=True)
    assert response.status_code == 200
    return html.unescape(response.content.decode())


@pytest.fixture
def admin_client(client, ada):
    client.force_login(ada)
    return client


def test_an_admin_registers_a_target_from_a_git_url_and_the_recipe_fills_it_in(admin_client, tmp_path):
    form = admin_client.get(ADD_URL).content.decode()
    assert "From the recipe" in form and "Saving fetches the repository" in form
    repo = git_repo(tmp_path / "podcast-api", {"prototype.toml": GOOD, "README.md": "hi"})
    page = register(admin_client, f"file://{repo}")
    target = Target.objects.get()
    assert (target.slug, target.name, target.kind) == ("podcast-api", "Podcast API", "backend")
    assert target.description == "Episodes and shows over HTTP."
    assert target.recipe == GOOD and target.recipe_error == "" and target.recipe_checked_at is not None
    assert "Podcast API: prototype.toml is valid." in page
    # What the admin typed wins over the recipe.
    other = git_repo(tmp_path / "other", {"prototype.toml": GOOD})
    register(admin_client, str(other), name="Our API", slug="our-api")
    assert Target.objects.get(slug="our-api").name == "Our API"


def test_a_broken_recipe_is_shown_with_its_line_and_key(admin_client, tmp_path):
    repo = git_repo(tmp_path / "phone.git", {"prototype.toml": BROKEN})
    page = register(admin_client, str(repo))
    target = Target.objects.get(slug="phone")
    assert "prototype.toml line 7, key 'artifact.kind'" in target.recipe_error
    assert "the recipe was not accepted" in page and "line 7, key 'artifact.kind'" in page
    assert target.name == "phone" and target.kind == "web"  # nothing to fill from; the admin can fix it
    listing = html.unescape(admin_client.get("/admin/prototypes/target/").content.decode())
    assert "✗ prototype.toml line 7, key 'artifact.kind'" in listing


def test_without_a_recipe_it_explains_how_to_add_one_or_uses_the_override(admin_client, tmp_path):
    repo = git_repo(tmp_path / "bare-app", {"README.md": "no recipe here"})
    page = register(admin_client, str(repo))
    target = Target.objects.get(slug="bare-app")
    assert "has no prototype.toml at the root of its 'main' branch" in page
    assert "Recipe override" in target.recipe_error and "docs/recipes.md" in target.recipe_error
    # The recipe override is validated in its place, and a bad one says where.
    page = register(admin_client, str(repo), slug="bare-app-1", recipe_override=BROKEN)
    assert "In the recipe override: prototype.toml line 7, key 'artifact.kind'" in page
    page = register(admin_client, str(repo), slug="bare-app-2", recipe_override=GOOD)
    assert Target.objects.get(slug="bare-app-2").name == "Podcast API"
    assert "The recipe override is valid." in page


def test_the_check_recipe_action_reads_the_repository_again(admin_client, tmp_path):
    repo = git_repo(tmp_path / "phone", {"prototype.toml": BROKEN})
    register(admin_client, str(repo))
    target = Target.objects.get(slug="phone")
    assert target.recipe_error
    commit(repo, {"prototype.toml": BROKEN.replace('kind = "web"', 'kind = "apk"')}, "Fix the recipe")
    response = admin_client.post(
        "/admin/prototypes/target/", {"action": "check_recipe", "_selected_action": [target.pk]}, follow=True
    )
    assert "Phone App: prototype.toml is valid." in html.unescape(response.content.decode())
    target.refresh_from_db()
    assert target.recipe_error == "" and 'kind = "apk"' in target.recipe
    assert (target.name, target.kind) == ("Phone App", "android")  # the stand-in name gives way to the recipe's


def test_a_repository_that_cannot_be_fetched_is_explained(admin_client, tmp_path):
    page = register(admin_client, str(tmp_path / "missing.git"))
    target = Target.objects.get(slug="missing")
    assert target.recipe_error.startswith("Could not read the repository at")
    assert "Could not read the repository" in page
