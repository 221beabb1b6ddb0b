"""Retention: the files of old versions expire, so storage does not grow without end.

Three rules, each off at 0 (settings RETENTION_DAYS, RETENTION_KEEP_REVISIONS, RETENTION_MAX_BYTES):
an artifact expires when it is older than the age limit, when its version is not among the newest N
built versions of its prototype, or — oldest first — while all artifacts together are over the size
limit. Never expired: pinned artifacts, the artifacts of a prototype's current version (what the store
shows and shares by default), patches (small, and the record of what changed) and artifacts of builds
still running. Of a version built in several attempts, the current version's protection covers only the
kept attempt (Revision.kept_build): the others stay until the age or size rule takes them, like any
version's, and the version-count rule treats all attempts of a version alike. Screenshots belong to the
version and are kept.

Expiring deletes the file and the unpacked web preview and sets `expired_at`; the row stays, so pages
can say "this version's files have expired" and the storage page can count what was freed.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import Count, F, Q, Sum
from django.utils import timezone

from prototypes.models import Artifact, Build, Prototype, Revision
from prototypes.pipeline import preview_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Policy:
    days: int = 0
    keep_revisions: int = 0
    max_bytes: int = 0

    @classmethod
    def from_settings(cls) -> Policy:
        return cls(settings.RETENTION_DAYS, settings.RETENTION_KEEP_REVISIONS, settings.RETENTION_MAX_BYTES)

    @property
    def active(self) -> bool:
        return bool(self.days or self.keep_revisions or self.max_bytes)


@dataclass(frozen=True)
class Expiry:
    artifact: Artifact
    reason: str


def live_artifacts():
    return Artifact.objects.filter(expired_at__isnull=True)


def _protected() -> Q:
    current = Prototype.objects.filter(current_revision__isnull=False).values("current_revision")
    # Versions from before attempts were kept by name (no kept_build) protect all their builds, as they did.
    shown = Q(build__revision__kept_build__isnull=True) | Q(build=F("build__revision__kept_build"))
    return (
        Q(pinned=True)
        | Q(kind=Artifact.Kind.PATCH)
        | (Q(build__revision__in=current) & shown)
        | ~Q(build__state__in=Build.FINAL_STATES)
    )


def plan(policy: Policy | None = None, *, now: datetime | None = None) -> list[Expiry]:
    """What would expire now, oldest first, without changing anything."""
    policy = policy or Policy.from_settings()
    now = now or timezone.now()
    if not policy.active:
        return []
    candidates = list(
        live_artifacts().exclude(_protected()).select_related("build__revision__prototype").order_by("created_at", "pk")
    )
    chosen: dict[int, str] = {}
    if policy.days:
        cutoff = now - timedelta(days=policy.days)
        for artifact in candidates:
            if artifact.created_at < cutoff:
                chosen.setdefault(artifact.pk, f"older than {policy.days} days")
    if policy.keep_revisions:
        kept = _newest_built_revisions(policy.keep_revisions)
        for artifact in candidates:
            if artifact.build.revision_id not in kept:
                chosen.setdefault(artifact.pk, f"not among the newest {policy.keep_revisions} versions")
    if policy.max_bytes:
        total = (live_artifacts().aggregate(total=Sum("size"))["total"] or 0) - sum(
            a.size for a in candidates if a.pk in chosen
        )
        for artifact in candidates:
            if total <= policy.max_bytes:
                break
            if artifact.pk not in chosen:
                chosen[artifact.pk] = f"storage over {policy.max_bytes} bytes"
                total -= artifact.size
    return [Expiry(a, chosen[a.pk]) for a in candidates if a.pk in chosen]


def _newest_built_revisions(count: int) -> set[int]:
    """The ids of each prototype's newest `count` versions that were built with something to try."""
    built = (
        Revision.objects.filter(
            builds__state=Build.State.SUCCEEDED,
            builds__artifacts__kind__in=[k for k in Artifact.Kind if k != Artifact.Kind.PATCH],
        )
        .values_list("prototype_id", "pk")
        .distinct()
        .order_by("prototype_id", "-number")
    )
    kept: set[int] = set()
    per_prototype: dict[int, int] = {}
    for prototype_id, revision_id in built:
        if per_prototype.get(prototype_id, 0) < count:
            per_prototype[prototype_id] = per_prototype.get(prototype_id, 0) + 1
            kept.add(revision_id)
    return kept


def expire(artifact: Artifact, *, now: datetime | None = None) -> bool:
    """Remove an artifact's file and unpacked preview and mark it expired. Returns False, removing
    nothing, when it was already expired (another run got there first) or has been pinned since."""
    now = now or timezone.now()
    claimed = Artifact.objects.filter(pk=artifact.pk, expired_at__isnull=True, pinned=False).update(expired_at=now)
    if not claimed:
        return False
    artifact.expired_at = now
    if artifact.file.name:
        artifact.file.storage.delete(artifact.file.name)
    if artifact.previewable:
        shutil.rmtree(preview_dir(artifact), ignore_errors=True)
    return True


def apply_retention(
    policy: Policy | None = None, *, dry_run: bool = False, now: datetime | None = None
) -> list[Expiry]:
    """Expire what the policy says (or only list it with `dry_run`). Returns what expired."""
    expiries = plan(policy, now=now)
    if dry_run:
        return expiries
    done = [item for item in expiries if expire(item.artifact, now=now)]
    if done:
        log.info("retention expired %d artifacts, %d bytes", len(done), sum(e.artifact.size for e in done))
    return done


def files_expired(revision: Revision | None) -> bool:
    """True when the version had files to try and retention removed them all."""
    if revision is None:
        return False
    files = Artifact.objects.filter(build__revision=revision, build__state=Build.State.SUCCEEDED).exclude(
        kind=Artifact.Kind.PATCH
    )
    if revision.kept_build_id:  # several attempts: the version's files are the kept one's
        files = files.filter(build_id=revision.kept_build_id)
    return files.filter(expired_at__isnull=False).exists() and not files.filter(expired_at__isnull=True).exists()


def storage_summary() -> dict:
    """What the artifacts take, for the admins' storage page."""

    def totals(queryset) -> dict:
        row = queryset.aggregate(files=Count("pk"), bytes=Sum("size"))
        return {"files": row["files"], "bytes": row["bytes"] or 0}

    live = live_artifacts()
    by_target = (
        # Baselines (a target's default branch, run beside live previews) belong to no prototype: counted
        # in the totals, not per target here.
        Artifact.objects.filter(build__isnull=False)
        .values("build__revision__prototype__target__name")
        .annotate(
            files=Count("pk", filter=Q(expired_at__isnull=True)),
            bytes=Sum("size", filter=Q(expired_at__isnull=True)),
            pinned=Sum("size", filter=Q(expired_at__isnull=True, pinned=True)),
            expired=Count("pk", filter=Q(expired_at__isnull=False)),
            freed=Sum("size", filter=Q(expired_at__isnull=False)),
        )
        .order_by("-bytes", "build__revision__prototype__target__name")
    )
    by_kind = live.values("kind").annotate(files=Count("pk"), bytes=Sum("size")).order_by("-bytes")
    current = Prototype.objects.filter(current_revision__isnull=False).values("current_revision")
    policy = Policy.from_settings()
    pending = plan(policy)
    return {
        "policy": policy,
        "live": totals(live),
        "pinned": totals(live.filter(pinned=True)),
        "current": totals(live.filter(build__revision__in=current)),
        "expired": totals(Artifact.objects.filter(expired_at__isnull=False)),
        "by_target": [
            {
                "name": row["build__revision__prototype__target__name"],
                "files": row["files"],
                "bytes": row["bytes"] or 0,
                "pinned": row["pinned"] or 0,
                "expired": row["expired"],
                "freed": row["freed"] or 0,
            }
            for row in by_target
        ],
        "by_kind": [
            {"kind": Artifact.Kind(row["kind"]).label, "files": row["files"], "bytes": row["bytes"] or 0}
            for row in by_kind
        ],
        "pending": {"files": len(pending), "bytes": sum(e.artifact.size for e in pending)},
    }
