"""Several attempts of one idea, and which one is the version.

A revision asks for `attempts` builds of the same idea (Revision.attempts, 1 unless the maker or the
target's default asks for more); each is a Build with its own attempt number, run as its own Celery task.
A retry of a failed attempt is one more Build of the revision: it joins the others and is ranked with them.

Whatever the number, one path makes a result the version: `keep(build)` copies the build's result to its
revision (Revision.kept_build, result commit, summary, diffstat), points the version's ref in the mirror at
its commit, makes the revision the prototype's current one and its pictures the gallery.

- One attempt (the default): the build is kept the moment it succeeds, in the transaction that marks it
  ready, as it always was.
- Several: when the last attempt ends, `choose` ranks them with the judge's order (agents.judge.rank:
  succeeded first, then the checklist score, tests passed, fewer turns, lower cost), writes each one's rank
  in its log and keeps the best that succeeded, so the prototype is usable at once. None succeeded: the
  revision has no result, like a failed build. The owner may keep another succeeded attempt later; an
  attempt that ends after something was kept (a retry) is ranked but never replaces that choice.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal
from functools import partial

from django.conf import settings
from django.db import transaction

from agents import workspace as git
from agents.errors import ServiceError
from agents.judge import rank
from prototypes.access import NotAllowed, require
from prototypes.models import Artifact, Build, Prototype, Revision, append_events
from prototypes.screenshots import show_in_gallery

log = logging.getLogger(__name__)


def result_ref(build: Build) -> str:
    """Where the engine commits a build's result in the mirror. A single attempt commits straight to the
    version's ref (refs/prototypes/<slug>/<n>); with several, each attempt has its own ref under
    refs/prototype-attempts/, and keeping one points the version's ref at its commit."""
    revision = build.revision
    if revision.attempts <= 1:
        return revision.result_ref
    return f"refs/prototype-attempts/{revision.prototype.slug}/{revision.number}/{build.attempt}"


def settled(revision: Revision) -> bool:
    """True when every attempt of the revision has ended (succeeded, failed or cancelled)."""
    return not revision.builds.exclude(state__in=Build.FINAL_STATES).exists()


@dataclass(frozen=True)
class _Ranked:
    """What agents.judge.rank reads of a result, taken from a Build row."""

    ok: bool
    judge: dict
    verify: dict
    turns: int
    cost: Decimal


def ranked(revision: Revision) -> list[Build]:
    """The revision's attempts, best first: the ended ones in the judge's order, then those still running
    (by attempt number)."""
    builds = list(revision.builds.order_by("attempt"))
    ended = [build for build in builds if build.is_final]
    order = rank([
        _Ranked(build.state == Build.State.SUCCEEDED, build.judge or {}, build.verify or {}, build.turns, build.cost)
        for build in ended
    ])  # fmt: skip
    return [ended[index] for index in order] + [build for build in builds if not build.is_final]


def keep(build: Build, *, by=None) -> None:
    """Make this attempt's result the version. `by` is the person asking (None: the store itself, which
    keeps an attempt when it succeeds or when all have ended). Raises NotAllowed, with the reason in plain
    words, when the person is not the prototype's owner or the attempt has nothing to keep."""
    if by is not None:
        require(by, "edit")
        if build.revision.prototype.owner_id != by.pk:
            raise NotAllowed("Only the prototype's owner can choose which attempt is kept.")
    with transaction.atomic():
        # The revision's row is the lock every decision about its attempts takes (see `choose`).
        revision = Revision.objects.select_for_update().select_related("prototype").get(pk=build.revision_id)
        build = Build.objects.get(pk=build.pk)
        if build.state != Build.State.SUCCEEDED:
            raise NotAllowed("Only an attempt that was built successfully can be kept.")
        files = build.artifacts.exclude(kind=Artifact.Kind.PATCH)
        if files.exists() and not files.filter(expired_at__isnull=True).exists():
            raise NotAllowed("This attempt's files have expired, so it can no longer be kept.")
        revision.kept_build = build
        revision.base_commit = build.base_commit
        revision.result_commit = build.result_commit
        revision.summary = build.summary
        revision.diffstat = build.diffstat
        revision.save(update_fields=["kept_build", "base_commit", "result_commit", "summary", "diffstat"])
        _make_current(revision, build)
        if by is not None:  # the store's own choice is written with the ranks (`choose`)
            append_events(build.pk, [("log", {"text": f"Kept as version {revision.number} by its owner."})])
        if build.result_commit and result_ref(build) != revision.result_ref:
            transaction.on_commit(partial(_point_version_ref, revision, build))
        # Pictures after the commit: nobody waits for them, and a failure there changes nothing above.
        transaction.on_commit(partial(show, build))


def _make_current(revision: Revision, build: Build) -> None:
    prototype = revision.prototype
    prototype.current_revision = revision
    update = ["current_revision", "updated_at"]
    if prototype.listing == Prototype.Listing.DRAFT:
        # With MODERATION_REQUIRED a prototype for the whole company waits for a moderator's approval
        # (store/moderation.py) before it is listed; until then only its owner and moderators see it.
        reviewed = settings.MODERATION_REQUIRED and prototype.visibility == Prototype.Visibility.COMPANY
        prototype.listing = Prototype.Listing.PENDING if reviewed else Prototype.Listing.LISTED
        update.append("listing")
    if not prototype.summary:
        prototype.summary = build.summary
        update.append("summary")
    prototype.save(update_fields=update)


def _point_version_ref(revision: Revision, build: Build) -> None:
    """Point refs/prototypes/<slug>/<n> at the kept attempt's commit. The database is the record of what
    the version is (graduation pushes Revision.result_commit); the ref keeps the commit in the mirror and
    lets people fetch the version by name. A host without the mirror (a web host apart from the workers)
    logs and leaves it: the next keep on a worker, or graduation, finds the commit by its id."""
    mirror = settings.MIRROR_ROOT / f"{revision.prototype.target.slug}.git"
    if not (mirror / "HEAD").exists():
        log.warning("revision %s: no mirror of %s here; its ref is not moved", revision.pk, mirror.name)
        return
    try:
        git.update_ref(mirror, revision.result_ref, build.result_commit)
    except ServiceError:
        log.warning("revision %s: its ref could not be pointed at build %s", revision.pk, build.pk, exc_info=True)


def show(build: Build) -> None:
    """Make the kept build's pictures the version's gallery in the store, and say so in its log."""
    reason = show_in_gallery(build)
    if reason:
        append_events(build.pk, [("log", {"text": f"Screenshots skipped: {reason}"})])
    elif build.revision.screenshots.gallery().exists():
        append_events(build.pk, [("log", {"text": "Screenshots taken for the store."})])


def choose(revision: Revision) -> Build | None:
    """Call when an attempt of the revision has ended. Once all have, rank them, write each one's rank in
    its log (several attempts only) and, when nothing is kept yet, keep the best that succeeded. Returns
    the build kept now, or None.

    Attempts end in different workers at the same moment: each takes the revision's row lock first, so
    the last one to end always sees all the others ended."""
    with transaction.atomic():
        revision = Revision.objects.select_for_update().get(pk=revision.pk)
        if not settled(revision):
            return None
        order = ranked(revision)
        best = next((build for build in order if build.state == Build.State.SUCCEEDED), None)
        chosen = best if best is not None and revision.kept_build_id is None else None
        if revision.attempts > 1:
            for position, build in enumerate(order, start=1):
                append_events(build.pk, [("log", {
                    "text": _rank_text(build, position, len(order), kept=chosen is not None and build.pk == chosen.pk),
                    "rank": position, "of": len(order),
                })])  # fmt: skip
        if chosen is not None:
            keep(chosen)
        return chosen


def _rank_text(build: Build, position: int, total: int, *, kept: bool) -> str:
    text = f"Attempt {build.attempt} ranked {position} of {total}"
    if build.state != Build.State.SUCCEEDED:
        return f"{text} (it did not succeed)."
    score = (build.judge or {}).get("score")
    if score is not None:
        text += f", {round(float(score) * 100)}% of the checklist passed"
    return f"{text}; kept as the version." if kept else f"{text}."
