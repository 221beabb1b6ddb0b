"""Targets: registering a repository (its recipe fetched and checked), what an admin reads about one
(its recipe, its recent builds and how they went), and turning the bundled example apps into git
repositories.

The admin's command (`manage.py target`), the API (prototypes/api.py) and the Django admin all register
and check targets through `register_target` / `check_target`; which targets makers are offered is
`Target.objects.offered()` (prototypes/models.py)."""

from __future__ import annotations

import shutil
import statistics
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path, PurePosixPath

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from agents import workspace as git
from agents.egress import check_hosts
from agents.errors import ServiceError
from agents.recipe import Recipe, RecipeError, parse_recipe
from prototypes.models import Build, Target

FIXED_DATE = "2026-01-01T00:00:00+00:00"
RECIPE_FILE = "prototype.toml"
RECENT_BUILDS = 20
STATS_DAYS = 30


class TargetError(ValueError):
    """What the admin gave cannot register a target; the message says what to change."""


def slug_from_url(git_url: str) -> str:
    """The slug a repository gets unless the admin chooses one: the last part of its URL or path, less
    `.git` (`https://git.example.com/team/web-player.git` → `web-player`). "" when nothing is left."""
    name = PurePosixPath(git_url.strip().rstrip("/")).name.removesuffix(".git")
    name = name.rsplit(":", 1)[-1]  # scp-like `git@host:app` (no slash before the name)
    return slugify(name)[: Target._meta.get_field("slug").max_length].strip("-")


def allowed_hosts(hosts) -> list[str]:
    """The hosts setup commands may reach, checked the way the egress proxy reads them
    (agents.egress.check_hosts). Raises TargetError naming the first entry that is not a host name."""
    try:
        return list(check_hosts(hosts or []))
    except ValueError as exc:
        raise TargetError(f"Allowed hosts: {exc}.") from None


def register_target(
    git_url: str,
    *,
    branch: str = "",
    slug: str = "",
    name: str = "",
    recipe_override: str | None = None,
    egress_hosts=None,
) -> tuple[Target, str | None, bool]:
    """Register a repository as a target and check its recipe at once (`check_target`). Registering the
    same git URL under its slug again updates what is given (branch, name, recipe override, hosts) and
    checks again, so the command can be re-run; `enabled`, the admin's switch, is never changed here.
    Returns (target, the check's problem or None, created). Raises TargetError for an empty URL, a slug
    that is not one, a slug another repository holds, or hosts that are not host names."""
    git_url = git_url.strip()
    if not git_url:
        raise TargetError("Give the repository's git URL (or its path on the workers).")
    for label, field, value in [("The git URL", "git_url", git_url), ("The branch", "default_branch", branch.strip())]:
        try:
            Target._meta.get_field(field).run_validators(value)  # the model's rules (not_a_git_option)
        except ValidationError as exc:
            raise TargetError(f"{label} '{value}' cannot be used. {' '.join(exc.messages)}") from None
    slug = slug.strip() or slug_from_url(git_url)
    try:
        validate_slug(slug)
    except ValidationError:
        raise TargetError(
            f"'{slug}' cannot be a target's slug: use letters, digits, - and _ only." if slug else
            f"No slug can be made from {git_url}: choose one."
        ) from None  # fmt: skip
    if len(slug) > Target._meta.get_field("slug").max_length:
        raise TargetError(f"'{slug}' is too long for a slug: keep it to 50 characters.")
    hosts = allowed_hosts(egress_hosts) if egress_hosts is not None else None
    with transaction.atomic():
        target = Target.objects.select_for_update().filter(slug=slug).first()
        if target is not None and target.git_url != git_url:
            raise TargetError(
                f"The slug '{slug}' is already taken by {target.name} ({target.git_url}): choose another."
            )
        created = target is None
        if created:
            target = Target(slug=slug, git_url=git_url)
        if branch.strip():
            target.default_branch = branch.strip()
        if name.strip():
            target.name = name.strip()[: Target._meta.get_field("name").max_length]
        if recipe_override is not None:
            target.recipe_override = recipe_override
        if hosts is not None:
            target.egress_hosts = hosts
        target.save()
    return target, check_target(target), created


def read_recipe(target: Target) -> tuple[Recipe | None, str]:
    """The recipe the target's last check read and where it came from ("prototype.toml" or "the recipe
    override"); (None, "") when it has none that is valid."""
    for text, source in [(target.recipe, RECIPE_FILE), (target.recipe_override, "the recipe override")]:
        if text.strip():
            try:
                return parse_recipe(text), source
            except RecipeError:
                return None, ""
    return None, ""


def recipe_lines(recipe: Recipe) -> list[tuple[str, str]]:
    """What a recipe runs, as (label, value) rows for people: the command's output and the target page."""
    rows = [("name", recipe.name), ("kind", recipe.kind)]
    rows += [("setup", command) for command in recipe.setup]
    if recipe.build is not None:
        rows.append(("build", recipe.build.command))
    rows.append(("test", recipe.test.command))
    rows.append(("artifact", f"{recipe.artifact.kind} {recipe.artifact.path}"))
    if recipe.serve is not None:
        rows.append(("serve", recipe.serve.command))
    if recipe.services:
        rows.append(("services", ", ".join(recipe.services.names)))
    rows += [("toolchain", f"{tool} {version}") for tool, version in recipe.toolchain]
    return rows


@dataclass(frozen=True)
class BuildStats:
    """How a target's builds went over the last `days` days."""

    days: int
    finished: int  # builds that ended succeeded or failed (cancelled ones say nothing about the target)
    succeeded: int
    median_seconds: float | None  # of the succeeded builds, from start to finish; None when there is none

    @property
    def success_rate(self) -> float | None:
        return self.succeeded / self.finished if self.finished else None


def build_stats(target: Target, *, days: int = STATS_DAYS, now=None) -> BuildStats:
    """Success rate and median build time of the target's builds that ended in the last `days` days,
    from one query (the median is taken in Python: SQLite has no median, and a month of one target's
    builds is small)."""
    since = (now or timezone.now()) - timedelta(days=days)
    rows = Build.objects.filter(
        revision__prototype__target=target, finished_at__gte=since,
        state__in=[Build.State.SUCCEEDED, Build.State.FAILED],
    ).values_list("state", "started_at", "finished_at")  # fmt: skip
    rows = list(rows)
    durations = [
        (finished - started).total_seconds()
        for state, started, finished in rows
        if state == Build.State.SUCCEEDED and started is not None
    ]
    return BuildStats(
        days=days, finished=len(rows), succeeded=sum(1 for state, _, _ in rows if state == Build.State.SUCCEEDED),
        median_seconds=statistics.median(durations) if durations else None,
    )  # fmt: skip


def recent_builds(target: Target, limit: int = RECENT_BUILDS):
    """The target's last builds, newest first, with what their rows on the target page show."""
    return (
        Build.objects.filter(revision__prototype__target=target)
        .select_related("revision__prototype")
        .order_by("-created_at", "-pk")[:limit]
    )


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
    # The recipe just parsed is the one committed to the repository's main branch, so this is the
    # target's check (no fetch needed: the repository is local and was written from these very files).
    target, _ = Target.objects.update_or_create(
        slug=folder.name,
        defaults={
            "name": recipe.name,
            "kind": recipe.kind,
            "description": recipe.description,
            "git_url": str(repo),
            "default_branch": "main",
            "recipe": text,
            "recipe_error": "",
            "recipe_checked_at": timezone.now(),
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
