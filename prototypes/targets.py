"""Targets: registering a repository and turning the bundled example apps into git repositories."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

from agents import workspace as git
from agents.recipe import RecipeError, parse_recipe
from prototypes.models import Target

FIXED_DATE = "2026-01-01T00:00:00+00:00"


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


def check_recipe(text: str) -> str | None:
    """A plain description of what is wrong with a recipe, or None when it is valid."""
    try:
        parse_recipe(text)
    except RecipeError as exc:
        return exc.detail
    except tomllib.TOMLDecodeError as exc:  # pragma: no cover - parse_recipe wraps these
        return str(exc)
    return None
