"""Entry points for making prototypes: start one, ask for a change, retry, cancel."""

from __future__ import annotations

from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from prototypes.models import Build, Prototype, Revision, Target, append_events

MAX_IDEA_CHARS = 4000


class NotAllowed(Exception):
    """The person may not do this; the message says why in plain words."""


def unique_slug(title: str) -> str:
    base = slugify(title)[:60].strip("-") or "prototype"
    slug, n = base, 1
    while Prototype.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def _enqueue(build: Build) -> None:
    from prototypes.tasks import run_build

    def send():
        result = run_build.delay(build.pk)
        Build.objects.filter(pk=build.pk, task_id="").update(task_id=result.id or "")

    transaction.on_commit(send)


def trigger_build(revision: Revision, *, attempt: int = 1) -> Build:
    """Create a queued build for a revision and enqueue it once the transaction commits."""
    build = Build.objects.create(revision=revision, attempt=attempt)
    append_events(build.pk, [("status", {"from": None, "to": Build.State.QUEUED})])
    _enqueue(build)
    return build


def create_prototype(
    *, owner, target: Target, idea: str, title: str = "", visibility: str = Prototype.Visibility.COMPANY
) -> Build:
    """A new prototype with its first revision and a queued build."""
    idea = idea.strip()
    if not idea:
        raise NotAllowed("Describe the idea in a few words.")
    if len(idea) > MAX_IDEA_CHARS:
        raise NotAllowed(f"Keep the idea under {MAX_IDEA_CHARS} characters.")
    if not target.enabled:
        raise NotAllowed(f"{target.name} is not taking new prototypes right now.")
    title = (title.strip() or idea.splitlines()[0])[:120]
    for _attempt in range(5):
        try:
            with transaction.atomic():
                prototype = Prototype.objects.create(
                    slug=unique_slug(title), title=title, owner=owner, target=target, visibility=visibility
                )
                revision = Revision.objects.create(prototype=prototype, number=1, prompt=idea, author=owner)
                return trigger_build(revision)
        except IntegrityError:
            continue  # two people took the same slug at once: pick the next one
    raise NotAllowed("Could not create the prototype; please try again.")


def retry_build(build: Build, *, by) -> Build:
    if build.state != Build.State.FAILED and build.state != Build.State.CANCELLED:
        raise NotAllowed("Only a failed or cancelled build can be tried again.")
    if build.revision.prototype.owner_id != by.pk and not by.is_superuser:
        raise NotAllowed("Only the prototype's owner can try its build again.")
    with transaction.atomic():
        latest = build.revision.builds.order_by("-attempt").first()
        return trigger_build(build.revision, attempt=latest.attempt + 1)


def cancel_build(build: Build, *, by) -> bool:
    """Ask a build to stop. A queued build stops at once; a running one at its next check."""
    if build.revision.prototype.owner_id != by.pk and not by.is_superuser:
        raise NotAllowed("Only the prototype's owner can cancel its build.")
    if build.is_final:
        return False
    Build.objects.filter(pk=build.pk).update(cancel_requested=True)
    if build.state == Build.State.QUEUED:
        return build.move(Build.State.CANCELLED, cancel_requested=True, finished_at=timezone.now())
    return True
