"""Targets: registering a repository (its recipe fetched and checked) and turning the bundled example apps
into git repositories."""

from __future__ import annotations

import shutil
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from agents import workspace as git
from agents.errors import ServiceError
from agents.recipe import RecipeError, parse_recipe
from prototypes.models import Target

FIXED_DATE = "2026-01-01T00:00:00+00:00"
RECIPE_FILE = "prototype.toml"


def example_repository(folder: Path, repo_root: Path) -> Path:
    """Make (or refresh) a bare git repository holding the example app in `folder`, on branch main.
    Idempotent: the same files give the same commit, so running it again changes nothing."""
    repo = repo_root / f"{folder.name}.git"
    staging = repo_root / f".{folder.name}.staging"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(folder, staging, ignore=shutil.ignore_patterns("dist", "__pycache__", "*.pyc", "node_modules"))
    try:
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git.git("init", "--bare", "--quiet", "--initial-branch=main", str(repo))
        env = {"GIT_WORK_TREE": str(staging), "GIT_AUTHOR_DATE": FIXED_DATE, "GIT_COMMITTER_DATE": FIXED_DATE}
        git.git("add", "--all", "--", ".", git_dir=repo, env=env)
        has_head = bool(git.git("rev-parse", "--verify", "--quiet", "HEAD", git_dir=repo, check=False).strip())
        if not has_head or git.git("diff", "--cached", "--name-only", "HEAD", git_dir=repo, env=env).strip():
            message = "Update the example app" if has_head else "Import the example app"
            git.git("commit", "--quiet", "-m", message, git_dir=repo, env=env)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return repo


def import_example(folder: Path, repo_root: Path) -> Target:
    """Register an example app as a target (or refresh it)."""
    repo = example_repository(folder, repo_root)
    text = (folder / "prototype.toml").read_text()
    recipe = parse_recipe(text)
    target, _ = Target.objects.update_or_create(
        slug=folder.name,
        defaults={
            "name": recipe.name,
            "kind": recipe.kind,
            "description": recipe.description,
            "git_url": str(repo),
            "default_branch": "main",
            "recipe": text,
        },
    )
    return target


def mirror_path(target: Target) -> Path:
    """The target's bare mirror: the same one builds fetch into (prototypes/pipeline.py)."""
    return settings.MIRROR_ROOT / f"{target.slug}.git"


def check_target(target: Target) -> str | None:
    """Fetch the target's repository, read prototype.toml on its default branch — or, when the repository
    has none, the admin-written recipe override — and validate it. Records what was read, the problem
    and when on the target, and saves it. A valid recipe fills the name and description where they are
    empty (or the name is still the slug, the stand-in used until a recipe could be read) and always sets
    the kind: what a target builds is the recipe's to say. Returns the problem in plain words (naming the line and key of a bad recipe),
    or None when the target can be built."""
    text = None
    try:
        git.sync_mirror(target.git_url, mirror_path(target))
        commit = git.resolve(mirror_path(target), target.default_branch)
        text = git.read_file(mirror_path(target), commit, RECIPE_FILE)
    except ServiceError as exc:
        problem = f"Could not read the repository at {target.git_url} (branch '{target.default_branch}'): {exc.detail}"
    else:
        target.recipe = text or ""
        problem = _check_text(target, text)
    target.recipe_error = problem or ""
    target.recipe_checked_at = timezone.now()
    if not target.name:
        target.name = target.slug
    if not target.kind:
        target.kind = Target.Kind.WEB
    target.save()
    return problem


def _check_text(target: Target, text: str | None) -> str | None:
    if text is None and not target.recipe_override.strip():
        return (
            f"The repository has no {RECIPE_FILE} at the root of its '{target.default_branch}' branch. "
            f"Commit one there (the format is in docs/recipes.md), or write it in “Recipe override” "
            f"to build the repository as it is."
        )
    source = text if text is not None else target.recipe_override
    try:
        recipe = parse_recipe(source)
    except RecipeError as exc:
        return exc.detail if text is not None else f"In the recipe override: {exc.detail}"
    if not target.name or target.name == target.slug:
        target.name = recipe.name[: Target._meta.get_field("name").max_length]
    target.kind = recipe.kind
    target.description = target.description or recipe.description
    return None
