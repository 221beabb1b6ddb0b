"""The storefront pages. Views validate input, call one function, and render."""

from __future__ import annotations

import json
import mimetypes
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count, F, Prefetch, Q
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from agents.providers.replay import list_recordings
from prototypes import access, attempts, instances, pairing, samples, screenshots
from prototypes import builds as build_actions
from prototypes.downloads import serve_file
from prototypes.inputs import parse_int
from prototypes.models import Artifact, Attachment, Build, PreviewInstance, Prototype, Revision, Screenshot, Tag, Target
from prototypes.pipeline import ensure_preview
from prototypes.progress import before_after, build_progress
from store import feedback, moderation
from store.catalog import Filters, Pages, cards, catalog, facets
from store.diffs import highlight_css, parse_patch
from store.forms import ChangeForm, DescriptionForm, NewPrototypeForm, RemixForm
from store.markdown import render_markdown
from store.models import Comment, Reaction, Visit
from store.previews import artifact_for_token, live_url, serveable
from store.proof import version_proof, why_no_before
from store.ratelimit import ratelimit

PAGE_SIZE = 24
PREVIEW_CSP = screenshots.CSP  # one policy for previews and for the pictures taken of them


def _require(request, action: str) -> None:
    """Refuse a page the person's roles do not allow, with the plain reason (templates/403.html)."""
    if not access.can(request.user, action):
        raise PermissionDenied(access.refusal(request.user, action))


@login_required
def home(request):
    filters = Filters.from_query(request.GET)
    page = Pages(catalog(request.user, filters), PAGE_SIZE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    return render(request, "store/home.html", {
        "page": page, "cards": cards(page.object_list), "filters": filters, "facets": facets(),
        "query": query.urlencode(),
    })  # fmt: skip


def _suggestions(revision: Revision | None = None):
    """The sample ideas the offline demo offers. For a new prototype, every sample of an app on offer: each
    was written for its app's default branch (tests/test_sample_fit.py checks they fit it). For a follow-up
    or a remix of `revision`, only those that fit that version's code: the others would build it broken."""
    if settings.AGENT_PROVIDER != "replay":
        return []
    if revision is not None:
        fitting = samples.fitting_samples(revision.prototype.target, revision.result_commit)
        return [{"target": r.target, "idea": r.idea, "title": r.title} for r in fitting]
    offered = set(Target.objects.offered().values_list("slug", flat=True))  # no idea for an app not offered
    return [{"target": r.target, "idea": r.idea, "title": r.title} for r in list_recordings(settings.RECORDINGS_DIR)
            if r.target in offered]  # fmt: skip


@login_required
@ratelimit("builds")
def new_prototype(request):
    _require(request, "build")
    # ?target=&idea=&title= fill the form: the ideas on the first-run page (/start/) link here.
    initial = {name: request.GET.get(name) for name in ("target", "idea", "title") if request.GET.get(name)}
    form = NewPrototypeForm(request.POST or None, request.FILES or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            build = build_actions.create_prototype(
                owner=request.user, target=data["target"], idea=data["idea"], title=data["title"],
                visibility=data["visibility"], images=data["images"], attempts=data["attempts"],
            )  # fmt: skip
        except build_actions.NotAllowed as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(build)
    return render(request, "store/new.html", {"form": form, "suggestions": _suggestions()})


def _visible_prototype(request, slug):
    return get_object_or_404(
        Prototype.objects.visible_to(request.user, by_link=True).select_related("owner", "target"), slug=slug
    )


def _visible_build(request, pk, slug=""):
    """A build by its id: with `slug` (the /p/<slug>/builds/<id>/ form) as its prototype's page
    allows, without it only for those who see the prototype without its link."""
    builds = Build.objects.visible_to(request.user, slug=slug).select_related(
        "revision__prototype__target", "revision__author"
    )
    return get_object_or_404(builds, pk=pk)


def _revision_artifacts(revision) -> list:
    """The artifacts of a revision's newest succeeded build (prefetched in prototype_detail: `ready`
    holds those `Artifact.objects.available()` still hands out); `revision.files_expired` then tells
    the page that retention removed the rest."""
    revision.files_expired = False
    # The kept attempt first (Revision.kept_build): with several attempts it is the version, whichever is newest.
    for build in sorted(revision.builds.all(), key=lambda build: build.pk != revision.kept_build_id):
        if build.state == Build.State.SUCCEEDED:
            files = [a for a in build.artifacts.all() if a.kind != Artifact.Kind.PATCH]
            live = [a for a in build.ready if a.kind != Artifact.Kind.PATCH]
            revision.files_expired = bool(files) and not live
            return live
    return []


PICTURES_GRACE = timedelta(minutes=10)


def _pictures_pending(current: Revision | None, screenshots: list) -> bool:
    """Whether the page should say the version's pictures are still being taken: a web version with none
    yet, built in the last few minutes (the gallery is filled once the build is kept, after it ended).
    Later, no pictures means none will come (their reason is in the build's log), so nothing is promised."""
    if current is None or screenshots or not any(a.previewable for a in current.ready_artifacts):
        return False
    kept = next((b for b in current.builds.all() if b.pk == current.kept_build_id), None)
    return kept is not None and kept.finished_at is not None and timezone.now() - kept.finished_at < PICTURES_GRACE


@login_required
def prototype_detail(request, slug, change_form=None, comment_error=None):
    prototype = _visible_prototype(request, slug)
    revisions = list(
        Revision.objects.filter(prototype=prototype)
        .select_related("author")
        .prefetch_related(
            "attachments",
            Prefetch(
                "builds",
                queryset=Build.objects.order_by("-attempt").prefetch_related(
                    "artifacts", Prefetch("artifacts", queryset=Artifact.objects.available(), to_attr="ready")
                ),
            ),
        )
        .order_by("-number")
    )
    for revision in revisions:
        revision.ready_artifacts = _revision_artifacts(revision)
    current = next((r for r in revisions if r.pk == prototype.current_revision_id), None)
    is_owner = prototype.owner_id == request.user.pk
    if current is not None:
        Visit.objects.create(revision=current, kind=Visit.Kind.VIEW, user=request.user)
    forked = prototype.forked_from
    comments = (
        Comment.objects.visible_to(request.user, slug=slug)
        .filter(prototype=prototype, parent=None)
        .select_related("author", "revision", "follow_up")
        .prefetch_related(
            Prefetch("replies", queryset=Comment.objects.visible_to(request.user, slug=slug).select_related("author"))
        )
    )
    reactions = dict(
        Reaction.objects.filter(prototype=prototype).values_list("kind").annotate(n=Count("*")).values_list("kind", "n")
    )
    mine = set(Reaction.objects.filter(prototype=prototype, user=request.user).values_list("kind", flat=True))
    counts = {
        row["revision"]: row
        for row in Visit.objects.filter(revision__prototype=prototype)
        .values("revision")
        .annotate(
            views=Count("pk", filter=Q(kind=Visit.Kind.VIEW)),
            viewers=Count("user", filter=Q(kind=Visit.Kind.VIEW), distinct=True),
            downloads=Count("pk", filter=Q(kind=Visit.Kind.DOWNLOAD)),
        )
    }
    for revision in revisions:
        revision.counts = counts.get(revision.pk, {})
    live_instances = _live_instances(request.user, prototype, current.ready_artifacts if current else [])
    screenshots = list(current.screenshots.gallery()) if current else []
    served = next((a for a in (current.ready_artifacts if current else []) if instances.serve_spec(a)), None)
    return render(request, "store/prototype.html", {
        "live_instances": live_instances,
        "pairings": pairing.describe(prototype, served, request.user),
        "prototype": prototype, "revisions": revisions, "current": current,
        "artifacts": current.ready_artifacts if current else [], "is_owner": is_owner,
        "replaying": samples.replaying(),
        "change_suggestions": _suggestions(current) if current is not None and is_owner else [],
        "change_form": change_form
        or (ChangeForm(target=prototype.target) if is_owner and access.can(request.user, "build") else None),
        # Named only to those who see the source without its link: a remix must not hand out the
        # address of a link-only prototype to everyone who sees the remix.
        "forked_from": forked if forked and Prototype.objects.visible_to(request.user).filter(pk=forked.prototype_id).exists() else None,
        "description": render_markdown(prototype.description),
        "screenshots": screenshots,
        "pictures_pending": _pictures_pending(current, screenshots),
        # The agent's summary of the version shown, not of the first one (Prototype.summary keeps that).
        "summary": (current.summary if current else "") or prototype.summary,
        "comments": comments, "comment_error": comment_error,
        "reactions": [(kind, label, reactions.get(kind, 0), kind in mine) for kind, label in Reaction.Kind.choices],
        "share_links": prototype.share_links.all() if is_owner else [],
        "moderation_notice": moderation.moderation_notice(prototype, request.user),
        "tags": prototype.tags.all(),
    })  # fmt: skip


@login_required
def edit_prototype(request, slug):
    prototype = _visible_prototype(request, slug)
    if prototype.owner_id != request.user.pk:
        raise Http404("Only the owner can edit this prototype.")
    _require(request, "edit")
    form = DescriptionForm(request.POST or None, initial={
        "title": prototype.title, "description": prototype.description,
        "tags": " ".join(prototype.tags.values_list("name", flat=True)), "visibility": prototype.visibility,
    })  # fmt: skip
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        prototype.title, prototype.description = data["title"], data["description"]
        prototype.set_visibility(data["visibility"])  # becoming link-only gives it a new, unguessable address
        prototype.save(update_fields=["title", "description", "visibility", "slug", "updated_at"])
        prototype.tags.set([Tag.objects.get_or_create(name=name)[0] for name in data["tags"]])
        messages.info(request, "Saved.")
        return redirect(prototype)
    return render(request, "store/edit.html", {"prototype": prototype, "form": form})


@login_required
def phone_view(request, slug):
    prototype = _visible_prototype(request, slug)
    # ?version=N: an older version's web part (an Android app's install page links to its own version).
    version = request.GET.get("version", "")
    wanted = version.isdigit() and len(version) <= 9  # a number the database column can hold
    revision = (
        Q(build__revision__number=int(version)) if wanted else Q(build__revision_id=prototype.current_revision_id)
    )
    candidates = Artifact.objects.available_to(request.user, slug=slug).filter(
        revision, build__revision__prototype=prototype, kind=Artifact.Kind.WEB
    )
    # The version's kept attempt (Revision.kept_build), else its newest.
    artifact = (
        candidates.filter(build=F("build__revision__kept_build")).first()
        or candidates.order_by("-build__attempt").first()
    )
    if artifact is None:
        raise Http404("This prototype has no web preview yet.")
    return render(request, "store/phone.html", {"prototype": prototype, "artifact": artifact})


@login_required
def screenshot(request, pk, thumbnail=False, slug=""):
    # A picture is seen by whoever sees its version; evidence (a build's before/after pictures) only
    # when it is of a build of that same version, so it can never be seen where its build is not.
    shots = Screenshot.objects.visible_to(request.user, slug=slug).filter(
        Q(build=None) | Q(build__revision=F("revision"))
    )
    shot = get_object_or_404(shots, pk=pk)
    field = shot.thumbnail if thumbnail else shot.image
    response = FileResponse(field.open("rb"), content_type="image/webp" if thumbnail else "image/png")
    response["Cache-Control"] = "private, max-age=86400"
    return response


@login_required
@require_POST
@ratelimit("comments")
def comment(request, slug):
    prototype = _visible_prototype(request, slug)
    revision = (
        prototype.revisions.filter(number=parse_int(request.POST.get("revision")) or 0).first()
        or prototype.current_revision
    )
    parent = None
    if parse_int(request.POST.get("parent")):
        parent = (
            Comment.objects.visible_to(request.user, slug=slug)
            .filter(pk=parse_int(request.POST["parent"]), prototype=prototype)
            .first()
        )
    try:
        if revision is None:
            raise feedback.NotAllowed("Comments open once the first version is ready.")
        made = feedback.add_comment(prototype=prototype, revision=revision, author=request.user,
                                    body=request.POST.get("body", ""), parent=parent)  # fmt: skip
    except feedback.NotAllowed as exc:
        return prototype_detail(request, slug, comment_error=(str(exc), request.POST.get("body", "")))
    return redirect(f"{prototype.get_absolute_url()}#comment-{made.pk}")


def _owned_comment(request, pk):
    return get_object_or_404(Comment.objects.visible_to(request.user).select_related("prototype", "author"), pk=pk)


@login_required
@require_POST
def comment_addressed(request, pk):
    item = _owned_comment(request, pk)
    try:
        feedback.set_addressed(item, by=request.user, addressed=request.POST.get("addressed") != "0")
    except feedback.NotAllowed as exc:
        messages.error(request, str(exc))
    return redirect(f"{item.prototype.get_absolute_url()}#comment-{item.pk}")


@login_required
@require_POST
@ratelimit("builds")
def comment_to_agent(request, pk):
    item = _owned_comment(request, pk)
    try:
        build = feedback.send_to_agent(item, by=request.user)
    except feedback.NotAllowed as exc:
        messages.error(request, str(exc))
        return redirect(f"{item.prototype.get_absolute_url()}#comment-{item.pk}")
    return redirect(build)


@login_required
@require_POST
def react(request, slug):
    prototype = _visible_prototype(request, slug)
    try:
        feedback.toggle_reaction(prototype=prototype, user=request.user, kind=request.POST.get("kind", ""))
    except feedback.NotAllowed as exc:
        messages.error(request, str(exc))
    return redirect(f"{prototype.get_absolute_url()}#reactions")


@login_required
@require_POST
@ratelimit("builds")
def ask_for_change(request, slug):
    prototype = _visible_prototype(request, slug)
    form = ChangeForm(request.POST, request.FILES, target=prototype.target)
    if form.is_valid():
        data = form.cleaned_data
        try:
            build = build_actions.ask_for_change(
                prototype, by=request.user, idea=data["idea"], images=data["images"], attempts=data["attempts"]
            )
        except build_actions.NotAllowed as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(build)
    return prototype_detail(request, slug, change_form=form)


def _visible_revision(request, slug, number):
    prototype = _visible_prototype(request, slug)
    return get_object_or_404(Revision.objects.select_related("prototype__target"), prototype=prototype, number=number)


@login_required
@ratelimit("builds")
def remix(request, slug, number):
    revision = _visible_revision(request, slug, number)
    _require(request, "build")
    form = RemixForm(request.POST or None, request.FILES or None, target=revision.prototype.target)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            build = build_actions.remix(revision, by=request.user, idea=data["idea"], title=data["title"],
                                        images=data["images"], attempts=data["attempts"])  # fmt: skip
        except build_actions.NotAllowed as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(build)
    return render(request, "store/remix.html", {
        "revision": revision, "prototype": revision.prototype, "form": form,
        "replaying": samples.replaying(), "suggestions": _suggestions(revision),
    })  # fmt: skip


@login_required
@require_POST
def make_current(request, slug, number):
    revision = _visible_revision(request, slug, number)
    try:
        build_actions.make_current(revision, by=request.user)
    except build_actions.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Version {revision.number} is now the current version.")
    return redirect(revision.prototype)


def _patch(revision):
    """The version's change: the kept attempt's patch (Revision.kept_build), else the newest attempt's."""
    patches = Artifact.objects.available().filter(build__revision=revision, kind=Artifact.Kind.PATCH)
    kept = patches.filter(build_id=revision.kept_build_id).first() if revision.kept_build_id else None
    return kept or patches.order_by("-build__attempt").first()


@login_required
def changes(request, slug, number):
    revision = _visible_revision(request, slug, number)
    patch = _patch(revision)
    files = []
    if patch is not None:
        with patch.file.open("rb") as handle:
            files = parse_patch(handle.read().decode("utf-8", errors="replace"))
    return render(request, "store/changes.html", {
        "revision": revision, "prototype": revision.prototype, "files": files, "patch": patch,
        "css": highlight_css(),
    })  # fmt: skip


@login_required
def version(request, slug, number):
    """One version with its proof: what was asked, what changed, the browser check, the checklist,
    pictures before and after, and its attempts side by side. The same lookup as the changes page: a
    person who may not see the prototype by this address gets a 404, whatever the number."""
    revision = _visible_revision(request, slug, number)
    prototype = revision.prototype
    return render(request, "store/version.html", {
        "revision": revision, "prototype": prototype, "patch": _patch(revision),
        "is_owner": prototype.owner_id == request.user.pk, **version_proof(revision, request.user, prototype.slug),
    })  # fmt: skip


@login_required
@require_POST
def keep_attempt(request, slug, number, attempt):
    """The owner keeps one attempt as the version; prototypes.attempts.keep says who may and why not."""
    revision = _visible_revision(request, slug, number)
    build = get_object_or_404(Build, revision=revision, attempt=attempt)
    try:
        attempts.keep(build, by=request.user)
    except build_actions.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, f"Attempt {build.attempt} is now version {revision.number}.")
    return redirect("version", revision.prototype.slug, revision.number)


@login_required
def patch_download(request, slug, number):
    revision = _visible_revision(request, slug, number)
    patch = _patch(revision)
    if patch is None:
        raise Http404("This version has no recorded change.")
    return serve_file(request, patch.file, filename=patch.filename, content_type="text/x-diff; charset=utf-8")


@login_required
def build_detail(request, pk, slug=""):
    build = _visible_build(request, pk, slug)
    is_owner = build.revision.prototype.owner_id == request.user.pk
    # The build's own pictures before and after its change (evidence of the browser check): visible exactly
    # when the build is, which _visible_build has just decided.
    evidence = Screenshot.objects.filter(build=build).exclude(moment=Screenshot.Moment.GALLERY)
    return render(request, "store/build.html", {
        "build": build, "progress": build_progress(build), "is_owner": is_owner,
        "pictures": before_after(list(evidence)), "no_before": why_no_before(build),
        "sample_ideas": _sample_ideas(build),
    })  # fmt: skip


def _sample_ideas(build: Build) -> list[str]:
    """For a build that failed because the offline demo has no sample for its idea: the ideas it has for
    this app (for a follow-up or a remix, those that fit the version it starts from), as the forms offer."""
    if build.error_code != "no_recording":
        return []
    revision = build.revision
    start = revision.parent or revision.prototype.forked_from
    slug = revision.prototype.target.slug
    return [s["idea"] for s in _suggestions(start) if s["target"] == slug]


@login_required
def build_log(request, pk, slug=""):
    """Every event of the build as plain text, for the curious and for bug reports."""
    build = _visible_build(request, pk, slug)
    lines = [f"Build {build.pk} of {build.revision}: {build.get_state_display()}"]
    for event in build.events.order_by("seq"):
        data = json.dumps(event.data, ensure_ascii=False, sort_keys=True)
        lines.append(f"{event.seq:5d} {event.created_at:%H:%M:%S} {event.kind:12} {data}")
    return HttpResponse("\n".join(lines) + "\n", content_type="text/plain; charset=utf-8")


@login_required
@require_POST
def cancel_build(request, pk):
    build = _visible_build(request, pk)
    try:
        build_actions.cancel_build(build, by=request.user)
    except build_actions.NotAllowed as exc:
        messages.error(request, str(exc))
    else:
        messages.info(request, "Cancelling the build…")
    return redirect(build)


@login_required
@require_POST
@ratelimit("builds")
def retry_build(request, pk):
    build = _visible_build(request, pk)
    try:
        new = build_actions.retry_build(build, by=request.user)
    except build_actions.NotAllowed as exc:
        messages.error(request, str(exc))
        return redirect(build)
    return redirect(new)


@login_required
def open_live(request, pk, slug=""):
    """Open a serveable version live: the link to its instance is minted now, for this person, so the
    pages never carry a lasting capability (the proxy takes it only for a couple of minutes)."""
    artifact = get_object_or_404(Artifact.objects.available_to(request.user, slug=slug), pk=pk)
    if not serveable(artifact):
        raise Http404("This version does not run live.")
    return redirect(live_url(artifact, user=request.user, slug=slug))


@login_required
def download(request, pk, slug=""):
    artifact = get_object_or_404(
        Artifact.objects.available_to(request.user, slug=slug).select_related("build__revision"), pk=pk
    )
    Visit.objects.create(revision=artifact.build.revision, kind=Visit.Kind.DOWNLOAD, user=request.user)
    response = serve_file(request, artifact.file, filename=artifact.filename, content_type=artifact.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@xframe_options_sameorigin
def preview(request, token, path=""):
    """Serve a web prototype. Its code is untrusted: the CSP sandbox gives it an opaque origin, so its
    scripts can neither read the store's cookies nor call the store as the viewer. Access comes from
    the signed token in the URL, not from the session: it names the person or share link it was
    issued for, whose access is checked again on this request — for every file of the preview, so a
    prototype made private, a revoked link or a takedown stops it at once (see store/previews.py)."""
    artifact = artifact_for_token(token)
    if artifact is None:
        return render(request, "store/preview_expired.html", status=404)
    if not path:
        if not request.path.endswith("/"):
            return redirect(request.path + "/")
        path = artifact.metadata.get("entry", "index.html")
    try:
        root = ensure_preview(artifact).resolve()  # unpacked from storage when this host has no copy yet
    except (ValueError, OSError):
        raise Http404("This preview is no longer available.") from None
    target = (root / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    if root not in target.parents or not target.is_file():
        raise Http404("No such file in this prototype.")
    content_type, _ = mimetypes.guess_type(target.name)
    response = FileResponse(open(target, "rb"), content_type=content_type or "application/octet-stream")
    # Who may frame it: the store's pages. On a separate preview origin X-Frame-Options SAMEORIGIN would
    # block the store's own iframes; browsers follow frame-ancestors instead when it is there.
    ancestors = settings.SITE_URL if settings.PREVIEW_ORIGIN else "'self'"
    response["Content-Security-Policy"] = f"{PREVIEW_CSP}; frame-ancestors {ancestors}"
    response["Access-Control-Allow-Origin"] = "*"  # module scripts from the opaque origin are CORS requests
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, max-age=300"
    return response


@login_required
def attachment(request, pk, slug=""):
    image = get_object_or_404(Attachment.objects.visible_to(request.user, slug=slug), pk=pk)
    response = FileResponse(image.image.open("rb"), content_type=image.media_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")


# --- live previews: the owner's (and admins') view of the running apps -----------------------------------


def _manages_live(user, prototype) -> bool:
    """The owner and admins restart, reset and read the log of a prototype's live previews. The owner
    manages the shared instance and their own; per-person instances of other people (their data, their
    log) only admins."""
    return user.is_authenticated and (prototype.owner_id == user.pk or user.is_superuser)


def _manageable_instances(user, prototype):
    instances = PreviewInstance.objects.filter(artifact__build__revision__prototype=prototype)
    if user.is_superuser:
        return instances
    return instances.filter(viewer__in=("shared", f"u{user.pk}"))


def _live_instances(user, prototype, artifacts) -> list:
    if not _manages_live(user, prototype) or not artifacts:
        return []
    rows = list(_manageable_instances(user, prototype).filter(artifact__in=artifacts).order_by("viewer"))
    ids = [int(row.viewer[1:]) for row in rows if row.viewer[:1] == "u"]
    people = {person.pk: person for person in get_user_model().objects.filter(pk__in=ids)}
    for row in rows:
        if row.viewer == "shared":
            row.who = "Everyone (shared)"
        elif row.viewer.startswith("u"):
            person = people.get(int(row.viewer[1:]))
            row.who = "You" if person == user else (person.get_full_name() or person.username if person else row.viewer)
        else:
            row.who = f"Share link {row.viewer[1:]}"
    return rows


def _managed_instance(request, slug, pk) -> PreviewInstance:
    prototype = _visible_prototype(request, slug)
    if not _manages_live(request.user, prototype):
        raise PermissionDenied("Only the prototype's owner and admins manage its live preview.")
    return get_object_or_404(_manageable_instances(request.user, prototype).select_related("artifact"), pk=pk)


@login_required
@require_POST
def restart_instance(request, slug, pk):
    instances.restart_instance(_managed_instance(request, slug, pk))
    messages.success(request, "Restarting the live preview: it opens again in a few seconds.")
    return redirect(reverse("prototype", args=[slug]) + "#live-instances")


@login_required
@require_POST
def reset_instance(request, slug, pk):
    instances.reset_instance(_managed_instance(request, slug, pk))
    messages.success(request, "The live preview's data is being reset to the demo data; it starts again fresh.")
    return redirect(reverse("prototype", args=[slug]) + "#live-instances")


@login_required
@require_POST
def pair_backend(request, slug):
    """The owner pairs the live preview with another version of a backend it talks to, or (no version
    given) with that backend's default branch again."""
    prototype = _visible_prototype(request, slug)
    chosen = request.POST.get("artifact", "")
    artifact_id = parse_int(chosen) if chosen else None
    if chosen and artifact_id is None:
        messages.error(request, "Pick a version from the list.")
    else:
        try:
            pairing.choose(prototype, request.user, request.POST.get("env", ""), artifact_id)
        except PermissionError as exc:
            raise PermissionDenied(str(exc)) from None
        except pairing.PairingError as exc:
            messages.error(request, str(exc))
        else:
            messages.success(request, "Paired: the live preview starts again with that backend.")
    return redirect(reverse("prototype", args=[slug]) + "#pairings")


@login_required
def instance_log(request, slug, pk):
    """The app's recent output: the live log while it runs on this host, else what was kept of its last run."""
    instance = _managed_instance(request, slug, pk)
    log = instance.log_tail
    if instance.state == PreviewInstance.State.RUNNING and instance.run_dir:
        from agents.serve import log_tail

        log = log_tail(Path(instance.run_dir) / "app.log") or log
    prototype = instance.artifact.build.revision.prototype
    return render(request, "store/instance_log.html", {"prototype": prototype, "instance": instance, "log": log})
