"""The storefront pages. Views validate input, call one function, and render."""

from __future__ import annotations

import mimetypes

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db.models import Prefetch
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.clickjacking import xframe_options_sameorigin
from django.views.decorators.http import require_POST

from agents.providers.replay import list_recordings
from prototypes import builds as build_actions
from prototypes.models import Artifact, Build, Prototype, Revision
from prototypes.pipeline import preview_dir
from store.forms import NewPrototypeForm
from store.previews import artifact_for_token
from store.progress import build_progress

PREVIEW_CSP = (
    "sandbox allow-scripts allow-forms allow-popups allow-modals; default-src 'self' data: blob: 'unsafe-inline'"
)


def _catalog_queryset(user):
    latest_web = Artifact.objects.filter(kind=Artifact.Kind.WEB).order_by("-created_at")
    return (
        Prototype.objects.visible_to(user)
        .select_related("owner", "target", "current_revision")
        .prefetch_related(Prefetch("current_revision__builds__artifacts", queryset=latest_web))
    )


@login_required
def home(request):
    visible = _catalog_queryset(request.user)
    listed = visible.filter(listing=Prototype.Listing.LISTED, visibility=Prototype.Visibility.COMPANY)
    mine = visible.filter(owner=request.user)
    return render(request, "store/home.html", {"listed": listed[:48], "mine": mine[:24]})


def _suggestions():
    if settings.AGENT_PROVIDER != "replay":
        return []
    return [{"target": r.target, "idea": r.idea, "title": r.title} for r in list_recordings(settings.RECORDINGS_DIR)]


@login_required
def new_prototype(request):
    form = NewPrototypeForm(request.POST or None, initial={"target": request.GET.get("target")})
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        try:
            build = build_actions.create_prototype(
                owner=request.user, target=data["target"], idea=data["idea"], title=data["title"],
                visibility=data["visibility"],
            )  # fmt: skip
        except build_actions.NotAllowed as exc:
            form.add_error(None, str(exc))
        else:
            return redirect(build)
    return render(request, "store/new.html", {"form": form, "suggestions": _suggestions()})


def _visible_prototype(request, slug):
    return get_object_or_404(Prototype.objects.visible_to(request.user).select_related("owner", "target"), slug=slug)


def _visible_build(request, pk):
    return get_object_or_404(
        Build.objects.select_related("revision__prototype__target", "revision__author").filter(
            revision__prototype__in=Prototype.objects.visible_to(request.user)
        ),
        pk=pk,
    )


@login_required
def prototype_detail(request, slug):
    prototype = _visible_prototype(request, slug)
    revisions = (
        Revision.objects.filter(prototype=prototype)
        .select_related("author")
        .prefetch_related(Prefetch("builds", queryset=Build.objects.order_by("-attempt").prefetch_related("artifacts")))
        .order_by("-number")
    )
    current = prototype.current_revision
    artifacts = []
    if current is not None:
        succeeded = current.builds.filter(state=Build.State.SUCCEEDED).order_by("-attempt").first()
        artifacts = list(succeeded.artifacts.all()) if succeeded else []
    return render(request, "store/prototype.html", {
        "prototype": prototype, "revisions": revisions, "current": current, "artifacts": artifacts,
        "is_owner": prototype.owner_id == request.user.pk,
    })  # fmt: skip


@login_required
def build_detail(request, pk):
    build = _visible_build(request, pk)
    context = {
        "build": build,
        "progress": build_progress(build),
        "is_owner": build.revision.prototype.owner_id == request.user.pk,
    }
    if request.headers.get("HX-Request"):
        response = render(request, "store/_build_progress.html", context)
        if build.is_final:
            response["HX-Refresh"] = "true"  # swap in the finished page (links to preview and download)
        return response
    return render(request, "store/build.html", context)


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
def retry_build(request, pk):
    build = _visible_build(request, pk)
    try:
        new = build_actions.retry_build(build, by=request.user)
    except build_actions.NotAllowed as exc:
        messages.error(request, str(exc))
        return redirect(build)
    return redirect(new)


def _visible_artifact(request, pk):
    return get_object_or_404(
        Artifact.objects.select_related("build__revision__prototype").filter(
            build__revision__prototype__in=Prototype.objects.visible_to(request.user),
            build__state=Build.State.SUCCEEDED,
        ),
        pk=pk,
    )


@login_required
def download(request, pk):
    artifact = _visible_artifact(request, pk)
    response = FileResponse(artifact.file.open("rb"), as_attachment=True, filename=artifact.filename,
                            content_type=artifact.content_type)  # fmt: skip
    response["X-Content-Type-Options"] = "nosniff"
    return response


@xframe_options_sameorigin
def preview(request, token, path=""):
    """Serve a web prototype. Its code is untrusted: the CSP sandbox gives it an opaque origin, so its
    scripts can neither read the store's cookies nor call the store as the viewer. Access comes from
    the signed token in the URL (see store/previews.py), not from the session."""
    artifact_id = artifact_for_token(token)
    artifact = (
        Artifact.objects.filter(pk=artifact_id, kind=Artifact.Kind.WEB, build__state=Build.State.SUCCEEDED).first()
        if artifact_id
        else None
    )
    if artifact is None:
        return render(request, "store/preview_expired.html", status=404)
    if not path:
        if not request.path.endswith("/"):
            return redirect(request.path + "/")
        path = artifact.metadata.get("entry", "index.html")
    root = preview_dir(artifact).resolve()
    target = (root / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    if root not in target.parents or not target.is_file():
        raise Http404("No such file in this prototype.")
    content_type, _ = mimetypes.guess_type(target.name)
    response = FileResponse(open(target, "rb"), content_type=content_type or "application/octet-stream")
    response["Content-Security-Policy"] = PREVIEW_CSP
    response["Access-Control-Allow-Origin"] = "*"  # module scripts from the opaque origin are CORS requests
    response["X-Content-Type-Options"] = "nosniff"
    response["Referrer-Policy"] = "no-referrer"
    response["Cache-Control"] = "private, max-age=300"
    return response


def healthz(request):
    return HttpResponse("ok", content_type="text/plain")
