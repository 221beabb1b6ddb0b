"""Full-stack previews: which version of each backend a served version talks to.

A recipe's [serve] may name backends (`backends = [{ target = "podcast-api", env = "PODCAST_API_URL" }]`).
When its live preview starts, each backend runs beside it (prototypes/instances.backend_sockets) as:
- the version the prototype's owner picked on the prototype page (`Prototype.pairings`, {ENV: artifact id}),
  while it is still a succeeded, serveable version of that target the owner may see; else
- the backend target's **baseline**: its default branch as it is now, built by its recipe alone
  (agents.build_baseline), once per commit, and built again when the branch moves.

The choice lives on the prototype, not on a revision: it says which backend the maker wants to try the
frontend with, and a follow-up version keeps trying it with the same one. An instance records what it was
started with in `PreviewInstance.paired`: filled when the row is made, and whenever the owner picks again
(which restarts the instances that run, so nobody keeps talking to the old backend).
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

import agents
from agents import serve as runtime
from agents.recipe import Backend
from agents.workspace import remove_tree
from prototypes.instances import restart_instance, serve_spec
from prototypes.models import Artifact, Baseline, PreviewInstance, Prototype, Target

log = logging.getLogger(__name__)
BASELINE_POLL_SECONDS = 0.5
BASELINE_GRACE_SECONDS = 120  # beyond the build timeout: a baseline build not done by then was lost with its worker
BASELINE_RETRY_SECONDS = 600  # a baseline that failed to build is tried again by a start after this pause


class PairingError(ValueError):
    """The owner's choice cannot be used; the message says why, in plain words."""


# --- what a served version talks to --------------------------------------------------------------------


def backends_of(artifact: Artifact) -> tuple[Backend, ...]:
    serve = serve_spec(artifact)
    return serve.backends if serve else ()


def candidates(backend: Backend, user):
    """Versions of `backend`'s target that `user` may pick: succeeded, available, runnable live, and
    visible to them. Newest first."""
    artifacts = (
        Artifact.objects.available_to(user)
        .filter(build__revision__prototype__target__slug=backend.target)
        .exclude(kind=Artifact.Kind.PATCH)
        .select_related("build__revision__prototype")
        .order_by("-created_at")
    )
    return [a for a in artifacts if serve_spec(a) is not None]


def chosen_artifact(prototype: Prototype, backend: Backend) -> Artifact | None:
    """The owner's pick for `backend`, when it still qualifies (it may have expired, or been made private
    since): checked again at every use, never trusted from the stored id alone."""
    artifact_id = (prototype.pairings or {}).get(backend.env)
    if not artifact_id:
        return None
    return next((a for a in candidates(backend, prototype.owner) if a.pk == artifact_id), None)


def latest_baseline(target_slug: str) -> Artifact | None:
    """The newest ready baseline of a target (the web tier never asks git whether the branch moved: the
    preview worker does, when it starts the backend)."""
    return (
        Artifact.objects.runnable()
        .filter(baseline__target__slug=target_slug)
        .order_by("-baseline__created_at", "-pk")
        .first()
    )


def pairing_for(artifact: Artifact) -> dict[str, int]:
    """{ENV: artifact id} for a new instance of `artifact`: the owner's picks, else the latest baseline
    known (the worker replaces a baseline by the branch's current one when it starts the instance)."""
    backends = backends_of(artifact)
    if not backends or artifact.build_id is None:
        return {}
    prototype = artifact.build.revision.prototype
    paired = {}
    for backend in backends:
        picked = chosen_artifact(prototype, backend) or latest_baseline(backend.target)
        if picked is not None:
            paired[backend.env] = picked.pk
    return paired


def fill_pairing(instance: PreviewInstance) -> None:
    """Record on a newly made instance what it talks to (prototypes.instances.open_instance)."""
    paired = pairing_for(instance.artifact)
    if paired:
        PreviewInstance.objects.filter(pk=instance.pk).update(paired=paired)
        instance.paired = paired


def describe(prototype: Prototype, artifact: Artifact | None, user) -> list[dict]:
    """For the prototype page: per backend of the shown version, what it is paired with and, for the
    owner, what else may be picked."""
    if artifact is None:
        return []
    rows = []
    for backend in backends_of(artifact):
        picked = chosen_artifact(prototype, backend)
        baseline = latest_baseline(backend.target)
        target = Target.objects.filter(slug=backend.target).first()
        name = target.name if target else backend.target
        branch = f"{name}'s {target.default_branch if target else 'default'} branch"
        if picked is None:
            label = branch
        elif Artifact.objects.visible_to(user).filter(pk=picked.pk).exists():
            label = version_label(picked)
        else:  # the owner's pick is theirs to see: its title is not shown to those who may not open it
            label = f"another version of {name}"
        rows.append({
            "backend": backend,
            "target_name": name,
            "picked": picked,
            "label": label,
            "baseline_commit": baseline.baseline.commit[:10] if baseline and not picked else "",
            "choices": [(a.pk, version_label(a)) for a in candidates(backend, user)] if user.pk == prototype.owner_id else [],
        })  # fmt: skip
    return rows


def version_label(artifact: Artifact) -> str:
    revision = artifact.build.revision
    return f"{revision.prototype.title} v{revision.number}"


def choose(prototype: Prototype, user, env: str, artifact_id: int | None) -> None:
    """The owner pairs `env`'s backend with another version (None: back to the default branch). Raises
    PermissionError for anyone but the owner, PairingError for a choice that cannot be used. Instances
    of the prototype take the new pairing, and running ones restart with it."""
    if user.pk != prototype.owner_id:
        raise PermissionError("Only the prototype's owner chooses which backend it talks to.")
    current = prototype.current_revision
    artifact = None
    if current is not None:
        artifact = (
            Artifact.objects.available().filter(build__revision=current).exclude(kind=Artifact.Kind.PATCH).first()
        )
    backend = next((b for b in backends_of(artifact) if b.env == env), None) if artifact else None
    if backend is None:
        raise PairingError("This version talks to no backend of that name.")
    pairings = dict(prototype.pairings or {})
    if artifact_id is None:
        pairings.pop(env, None)
    else:
        if not any(a.pk == artifact_id for a in candidates(backend, user)):
            raise PairingError(f"That version of {backend.target} cannot be paired: it is not one you may open live.")
        pairings[env] = artifact_id
    Prototype.objects.filter(pk=prototype.pk).update(pairings=pairings)
    prototype.pairings = pairings
    instances = PreviewInstance.objects.filter(artifact__build__revision__prototype=prototype)
    for instance in instances.select_related("artifact__build__revision__prototype"):
        paired = pairing_for(instance.artifact)
        PreviewInstance.objects.filter(pk=instance.pk).update(paired=paired)
        if instance.state in (PreviewInstance.State.RUNNING, PreviewInstance.State.STARTING):
            restart_instance(instance)


# --- the preview worker ------------------------------------------------------------------------------------


def backend_artifact(instance: PreviewInstance, backend: Backend) -> Artifact:
    """The artifact `backend` runs from for this start of `instance`: the owner's pick recorded on it, or
    the backend target's baseline at its default branch's current commit (built here when the branch
    moved). Records the baseline used on the instance. Raises runtime.AppFailed in plain words."""
    artifact_id = (instance.paired or {}).get(backend.env)
    if artifact_id and instance.artifact.build_id is not None:
        # A picked version, checked again at every start: still available, serveable, of that target and
        # visible to the owner (the backend's prototype may have been made private since it was picked).
        owner = instance.artifact.build.revision.prototype.owner
        picked = next((a for a in candidates(backend, owner) if a.pk == artifact_id), None)
        if picked is not None:
            return picked
    target = Target.objects.filter(slug=backend.target).first()
    if target is None:
        raise runtime.AppFailed(f"The backend {backend.target} is not a target of this store.", "")
    artifact = ensure_baseline(target)
    if (instance.paired or {}).get(backend.env) != artifact.pk:
        instance.paired = {**(instance.paired or {}), backend.env: artifact.pk}
        PreviewInstance.objects.filter(pk=instance.pk).update(paired=instance.paired)
    return artifact


def ensure_baseline(target: Target) -> Artifact:
    """The ready baseline artifact of `target` at its default branch's current commit, built once per
    commit: the first start to need it builds it, concurrent ones wait for that build. Raises
    runtime.AppFailed when it cannot be built or cannot run live."""
    try:
        commit = agents.baseline_commit(
            target.git_url, settings.MIRROR_ROOT / f"{target.slug}.git", target.default_branch
        )
    except Exception as exc:  # noqa: BLE001 - git's own words, for the owner's log
        known = latest_baseline(target.slug)
        if known is not None:  # the repository is out of reach for now: the last build of the branch will do
            log.warning("baseline of %s: could not fetch, using commit %s", target.slug, known.baseline.commit)
            return known
        raise runtime.AppFailed(f"Could not read {target.name}'s {target.default_branch} branch.", str(exc)) from exc
    deadline = time.monotonic() + settings.BUILD_TIMEOUT + BASELINE_GRACE_SECONDS
    while True:
        baseline, claimed = _claim(target, commit)
        if claimed:
            return _build(baseline)
        if baseline.state == Baseline.State.READY:
            artifact = baseline.artifacts.filter(expired_at__isnull=True).first()
            if artifact is not None:
                return artifact
        if baseline.state == Baseline.State.FAILED:
            raise runtime.AppFailed(
                f"{target.name}'s {target.default_branch} branch could not be built to run beside this preview.",
                baseline.error,
            )
        if time.monotonic() > deadline:
            raise runtime.AppFailed(f"{target.name}'s {target.default_branch} branch took too long to build.", "")
        time.sleep(BASELINE_POLL_SECONDS)


def _claim(target: Target, commit: str) -> tuple[Baseline, bool]:
    """(baseline, True) when this caller is to build it: it is new, or its build was lost (older than
    any build may take). The claim is the row's creation, or a conditional update of its created_at."""
    try:
        with transaction.atomic():
            return Baseline.objects.create(target=target, commit=commit), True
    except IntegrityError:
        pass
    baseline = Baseline.objects.get(target=target, commit=commit)
    now = timezone.now()
    lost = now - timedelta(seconds=settings.BUILD_TIMEOUT + BASELINE_GRACE_SECONDS)
    retry = now - timedelta(seconds=BASELINE_RETRY_SECONDS)
    lost_build = baseline.state == Baseline.State.BUILDING and baseline.created_at < lost
    # A failure is tried again after a pause (it may have been ours: a sandbox that could not start), not
    # at every start.
    stale_failure = baseline.state == Baseline.State.FAILED and (baseline.finished_at or now) < retry
    if lost_build or stale_failure:
        mine = Baseline.objects.filter(pk=baseline.pk, state=baseline.state, created_at=baseline.created_at)
        if mine.update(state=Baseline.State.BUILDING, created_at=now, error="", finished_at=None):
            baseline.state, baseline.created_at, baseline.error, baseline.finished_at = "building", now, "", None
            return baseline, True
    return baseline, False


def _build(baseline: Baseline) -> Artifact:
    target = baseline.target
    out = settings.BUILD_ROOT / f"baseline-{baseline.pk}-out"
    spec = agents.BaselineSpec(
        target=target.slug, repo_url=target.git_url, commit=baseline.commit,
        mirror=settings.MIRROR_ROOT / f"{target.slug}.git", work_dir=settings.BUILD_ROOT / f"baseline-{baseline.pk}",
        output_dir=out, recipe_text=target.recipe_override or None, sandbox=settings.SANDBOX_BACKEND,
        sandbox_ro_binds=tuple(settings.SANDBOX_RO_BINDS), egress_hosts=tuple(target.egress_hosts or ()),
        egress_networks=tuple(settings.EGRESS_PRIVATE_NETWORKS), build_timeout=settings.BUILD_TIMEOUT,
        disk_quota_bytes=settings.BUILD_DISK_QUOTA_MB * 2**20,
        secrets=tuple(s for s in (settings.ANTHROPIC_API_KEY, settings.SECRET_KEY) if s),
        toolchain_root=settings.TOOLCHAIN_ROOT,
    )  # fmt: skip
    try:
        result = agents.build_baseline(spec)
        problem = result.error.message if result.error else ""
        detail = result.error.detail if result.error else ""
        if not problem and result.serve is None:
            problem = f"{target.name}'s recipe has no [serve]: its default branch cannot run live."
        if problem:
            Baseline.objects.filter(pk=baseline.pk).update(
                state=Baseline.State.FAILED, error=f"{problem}\n{detail}".strip(), finished_at=timezone.now()
            )
            raise runtime.AppFailed(
                f"{target.name}'s {target.default_branch} branch could not be built: {problem}", detail
            )
        item = result.artifacts[0]
        with transaction.atomic():
            artifact = Artifact.store(item, serve=result.serve, services=result.services, baseline=baseline)
            baseline.state, baseline.finished_at = Baseline.State.READY, timezone.now()
            Baseline.objects.filter(pk=baseline.pk).update(state=baseline.state, finished_at=baseline.finished_at)
        return artifact
    except runtime.AppFailed:
        raise
    except Exception:
        # Ours (storage, disk): recorded, so that starts waiting for this build stop waiting.
        Baseline.objects.filter(pk=baseline.pk, state=Baseline.State.BUILDING).update(
            state=Baseline.State.FAILED, error="The build could not be stored.", finished_at=timezone.now()
        )
        raise
    finally:
        remove_tree(out)
