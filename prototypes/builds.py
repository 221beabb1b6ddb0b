"""Entry points for making prototypes: start one, ask for a change, retry, cancel."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max
from django.utils import timezone
from django.utils.module_loading import import_string

from prototypes.access import NotAllowed, require  # NotAllowed: still imported from here by callers
from prototypes.attempts import choose
from prototypes.images import MAX_IMAGES, check_image
from prototypes.inputs import is_visibly_empty
from prototypes.models import Attachment, Build, Prototype, Revision, Target, append_events, unique_slug
from prototypes.samples import sample_refusal

MAX_IDEA_CHARS = 4000
log = logging.getLogger(__name__)


def send_build(build_id: int) -> bool:
    """Send a build's task to the broker. When the broker cannot take it (down, restarting) this logs why
    and returns False: the build stays queued and pipeline.requeue_lost_builds sends it again later, so
    the person who asked never sees an error for it."""
    from prototypes.tasks import run_build

    try:
        result = run_build.delay(build_id)
    except Exception:  # noqa: BLE001 - any broker failure: the periodic resend covers it
        log.warning("build %s: the broker did not take its task; it stays queued and is sent again later",
                    build_id, exc_info=True)  # fmt: skip
        return False
    Build.objects.filter(pk=build_id, task_id="").update(task_id=result.id or "")
    return True


def _enqueue(build: Build) -> None:
    def send():
        send_build(build.pk)

    transaction.on_commit(send)


def trigger_build(revision: Revision, *, attempt: int = 1) -> Build:
    """Create a queued build for a revision and enqueue it once the transaction commits."""
    build = Build.objects.create(revision=revision, attempt=attempt)
    append_events(build.pk, [("status", {"from": None, "to": Build.State.QUEUED})])
    _enqueue(build)
    return build


def trigger_attempts(revision: Revision) -> Build:
    """Create the revision's `attempts` builds (attempt 1..N), each sent as its own task once the
    transaction commits, so they run side by side (the target's concurrency limit still applies).
    Returns the first; the others are its revision's builds."""
    first = trigger_build(revision, attempt=1)
    for attempt in range(2, revision.attempts + 1):
        trigger_build(revision, attempt=attempt)
    return first


def _check_attempts(attempts: int | None, target: Target) -> int:
    """How many attempts to build: the maker's number, else the target's default; 1..MAX_ATTEMPTS."""
    count = target.default_attempts if attempts is None else attempts
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= settings.MAX_ATTEMPTS:
        raise NotAllowed(f"Ask for 1 to {settings.MAX_ATTEMPTS} attempts.")
    return count


def _check_gate(user, target: Target, count: int = 1) -> None:
    """Ask the site's build gate (settings.BUILD_GATE: the pause switch and budgets) before anything is
    created, for all `count` builds at once. It is a dotted path, imported on first use, because
    prototypes never imports store; the gate returns why not in plain words, or None."""
    if settings.BUILD_GATE:
        reason = import_string(settings.BUILD_GATE)(user, target, count=count)
        if reason:
            raise NotAllowed(reason)


def _check_idea(idea: str) -> str:
    idea = idea.strip()
    if is_visibly_empty(idea):  # zero-width and bidi characters alone are no idea either
        raise NotAllowed("Describe the idea in a few words.")
    if len(idea) > MAX_IDEA_CHARS:
        raise NotAllowed(f"Keep the idea under {MAX_IDEA_CHARS} characters.")
    return idea


def _check_images(images) -> list:
    images = list(images or [])
    if len(images) > MAX_IMAGES:
        raise NotAllowed(f"Attach at most {MAX_IMAGES} images.")
    for upload in images:
        try:
            check_image(upload)
        except ValidationError as exc:
            raise NotAllowed(" ".join(exc.messages)) from None
    return images


def _attach(revision: Revision, images) -> None:
    for upload in images:
        checked = check_image(upload)
        Attachment.objects.create(revision=revision, image=upload, media_type=checked.media_type, size=checked.size)


def create_prototype(
    *,
    owner,
    target: Target,
    idea: str,
    title: str = "",
    visibility: str = Prototype.Visibility.COMPANY,
    images=(),
    forked_from: Revision | None = None,
    attempts: int | None = None,
) -> Build:
    """A new prototype with its first revision and its queued builds (`attempts` of them, None: the
    target's default); returns the first. With `forked_from` it is a remix: it starts from that
    revision's result, and the original never changes."""
    require(owner, "build")  # the role first: a viewer hears why, not about budgets
    count = _check_attempts(attempts, target)
    _check_gate(owner, target, count)
    idea = _check_idea(idea)
    images = _check_images(images)
    if refusal := target.refusal():  # switched off, or its recipe check failed or never ran: not offered
        raise NotAllowed(refusal)
    if is_visibly_empty(title):  # an invisible name is no name: take the idea's first line that shows
        title = next(line for line in idea.splitlines() if not is_visibly_empty(line))
    title = title.strip()[:120]
    for _attempt in range(5):
        try:
            with transaction.atomic():
                prototype = Prototype.objects.create(
                    slug=unique_slug(title, unguessable=visibility == Prototype.Visibility.LINK),
                    title=title,
                    owner=owner,
                    target=target,
                    visibility=visibility,
                    forked_from=forked_from,
                )
                revision = Revision.objects.create(prototype=prototype, number=1, prompt=idea, author=owner,
                                                   attempts=count)  # fmt: skip
                _attach(revision, images)
                return trigger_attempts(revision)
        except IntegrityError:
            continue  # two people took the same slug at once: pick the next one
    raise NotAllowed("Could not create the prototype; please try again.")


def ask_for_change(prototype: Prototype, *, by, idea: str, images=(), attempts: int | None = None) -> Build:
    """The next revision of a prototype, built on top of its current version (`attempts` builds, None:
    the target's default); returns the first build."""
    require(by, "build")
    count = _check_attempts(attempts, prototype.target)
    _check_gate(by, prototype.target, count)
    if prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can ask for changes. Remix it to make your own version.")
    if refusal := prototype.target.build_refusal():
        raise NotAllowed(refusal)
    idea = _check_idea(idea)
    images = _check_images(images)
    parent = prototype.current_revision
    if parent is None or not parent.result_commit:
        raise NotAllowed("Wait until the first version is ready, then ask for a change.")
    if refusal := sample_refusal(prototype.target, parent.result_commit, idea):
        raise NotAllowed(refusal)  # the offline demo: a sample written for other code would build a broken version
    for _attempt in range(5):
        try:
            with transaction.atomic():
                number = (prototype.revisions.aggregate(m=Max("number"))["m"] or 0) + 1
                revision = Revision.objects.create(prototype=prototype, number=number, parent=parent, prompt=idea,
                                                   author=by, attempts=count)  # fmt: skip
                _attach(revision, images)
                return trigger_attempts(revision)
        except IntegrityError:
            continue  # another change was asked at the same moment: take the next number
    raise NotAllowed("Could not save the change; please try again.")


def remix(revision: Revision, *, by, idea: str, title: str = "", images=(), attempts: int | None = None) -> Build:
    """Start your own prototype from someone's revision (which must be visible to you and built)."""
    require(by, "build")
    _check_gate(by, revision.prototype.target, _check_attempts(attempts, revision.prototype.target))
    if not Prototype.objects.visible_to(by, by_link=True).filter(pk=revision.prototype_id).exists():
        raise NotAllowed("You cannot see that prototype.")
    if not revision.result_commit:
        raise NotAllowed("Only a version that was built can be remixed.")
    source = revision.prototype
    if refusal := sample_refusal(revision.prototype.target, revision.result_commit, idea):
        raise NotAllowed(refusal)  # as for a follow-up: the remix starts from this version's code
    return create_prototype(owner=by, target=source.target, idea=idea, title=title or f"{source.title} (remix)",
                            images=images, forked_from=revision, attempts=attempts)  # fmt: skip


def make_current(revision: Revision, *, by) -> None:
    """Show an earlier version as the prototype's current one (later versions are kept)."""
    require(by, "edit")
    prototype = revision.prototype
    if prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can choose its current version.")
    # Several attempts make a version once one is kept (attempts.keep), not when the first succeeds.
    built = revision.builds.filter(state=Build.State.SUCCEEDED).exists()
    if not built or (revision.attempts > 1 and revision.kept_build_id is None):
        raise NotAllowed("Only a version that was built can be made current.")
    prototype.current_revision = revision
    prototype.save(update_fields=["current_revision", "updated_at"])


def retry_build(build: Build, *, by) -> Build:
    """Build a failed or cancelled attempt again, as the revision's next attempt number: it is ranked with
    the revision's other attempts, and kept when it succeeds and nothing is kept yet (attempts.choose)."""
    require(by, "build")
    _check_gate(by, build.revision.prototype.target)
    if build.state != Build.State.FAILED and build.state != Build.State.CANCELLED:
        raise NotAllowed("Only a failed or cancelled build can be tried again.")
    if build.revision.prototype.owner_id != by.pk and not by.is_superuser:
        raise NotAllowed("Only the prototype's owner can try its build again.")
    if refusal := build.revision.prototype.target.build_refusal():
        raise NotAllowed(refusal)
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
        moved = build.move(Build.State.CANCELLED, cancel_requested=True, finished_at=timezone.now())
        if moved:  # it may have been the last attempt still to end: the others may now be ranked
            choose(build.revision)
        return moved
    return True
