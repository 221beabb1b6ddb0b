"""Share links: one prototype (optionally one version) for anyone who has the link, signed in or not,
and nothing else. Tokens are random, shown once, and stored only as a hash."""

from __future__ import annotations

from datetime import timedelta

from django.contrib.auth.decorators import login_required
from django.db.models import F
from django.http import FileResponse, Http404
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path, reverse
from django.utils import timezone
from django.views.decorators.http import require_POST

from prototypes.access import require
from prototypes.builds import NotAllowed
from prototypes.downloads import serve_file
from prototypes.inputs import INT_MAX, parse_int
from prototypes.models import Artifact, Prototype
from prototypes.retention import files_expired
from store import install
from store.markdown import render_markdown
from store.models import ShareLink, Visit
from store.ratelimit import ratelimit

EXPIRY_CHOICES = {"1": 1, "7": 7, "30": 30, "never": None}
GONE = (Prototype.Listing.HIDDEN, Prototype.Listing.REMOVED)


def create_link(prototype: Prototype, *, by, revision=None, days: int | None = 7) -> tuple[ShareLink, str]:
    require(by, "share")
    if prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can share it by link.")
    if prototype.listing in GONE:
        raise NotAllowed("This prototype was taken down by a moderator and cannot be shared.")
    expires = timezone.now() + timedelta(days=days) if days else None
    return ShareLink.create(prototype=prototype, created_by=by, revision=revision, expires_at=expires)


def resolve(token: str) -> ShareLink | None:
    """The usable link for a token: not revoked, not expired, and its prototype not taken down."""
    link = ShareLink.find(token)
    if link is None or link.prototype.listing in GONE:
        return None
    return link


def resolve_id(pk: int) -> ShareLink | None:
    """The same for a link named by its id, which only the store's own signed URLs do (previews)."""
    link = ShareLink.objects.usable().select_related("prototype", "revision").filter(pk=pk).first()
    if link is None or link.prototype.listing in GONE:
        return None
    return link


def shared_revision(link: ShareLink):
    return link.revision or link.prototype.current_revision


def shared_artifacts(link: ShareLink):
    revision = shared_revision(link)
    if revision is None:
        return Artifact.objects.none()
    return (
        Artifact.objects.available()
        .filter(build__revision=revision)
        .exclude(kind=Artifact.Kind.PATCH)
        .order_by("-build__attempt")
    )


def _link_or_404(token: str) -> ShareLink:
    link = resolve(token)
    if link is None:
        raise Http404("This link has expired, was revoked, or never existed.")
    return link


@login_required
@require_POST
def create(request, slug):
    prototype = get_object_or_404(Prototype.objects.visible_to(request.user, by_link=True), slug=slug)
    days = EXPIRY_CHOICES.get(request.POST.get("expires", "7"), 7)
    revision = None
    if request.POST.get("revision"):
        # A version that is not a number or does not exist is refused, never widened to the whole prototype.
        number = parse_int(request.POST["revision"], minimum=1, maximum=INT_MAX)
        revision = prototype.revisions.filter(number=number).first() if number else None
        if revision is None:
            error = "There is no such version of this prototype to share."
            return render(request, "store/share_created.html", {"prototype": prototype, "error": error}, status=400)
    try:
        link, token = create_link(prototype, by=request.user, revision=revision, days=days)
    except NotAllowed as exc:
        return render(request, "store/share_created.html", {"prototype": prototype, "error": str(exc)}, status=403)
    url = request.build_absolute_uri(reverse("shared", args=[token]))
    return render(request, "store/share_created.html", {"prototype": prototype, "link": link, "url": url})


@login_required
@require_POST
def revoke(request, slug, pk):
    link = get_object_or_404(ShareLink, pk=pk, prototype__slug=slug, prototype__owner=request.user)
    link.revoked = True
    link.save(update_fields=["revoked"])
    return redirect(reverse("prototype", args=[slug]) + "#share")


@ratelimit("share_links")
def shared(request, token):
    """The shared prototype, for anyone with the link."""
    link = _link_or_404(token)
    ShareLink.objects.filter(pk=link.pk).update(uses=F("uses") + 1)
    revision = shared_revision(link)
    if revision is not None:
        user = request.user if request.user.is_authenticated else None
        Visit.objects.create(revision=revision, kind=Visit.Kind.VIEW, user=user, share_link=link)
    prototype = link.prototype
    return render(request, "store/shared.html", {
        "prototype": prototype, "revision": revision, "artifacts": list(shared_artifacts(link)), "token": token,
        "share_link": link,
        "files_expired": files_expired(revision),
        "description": render_markdown(prototype.description), "screenshots": list(revision.screenshots.gallery()) if revision else [],
    })  # fmt: skip


@ratelimit("share_links")
def shared_download(request, token, pk):
    link = _link_or_404(token)
    artifact = get_object_or_404(shared_artifacts(link), pk=pk)
    user = request.user if request.user.is_authenticated else None
    Visit.objects.create(revision=artifact.build.revision, kind=Visit.Kind.DOWNLOAD, user=user, share_link=link)
    response = serve_file(request, artifact.file, filename=artifact.filename, content_type=artifact.content_type)
    response["X-Content-Type-Options"] = "nosniff"
    return response


@ratelimit("share_links")
def shared_open_live(request, token, pk):
    """Open a serveable version live through a share link: its instance's link is minted now."""
    from store.previews import live_url, serveable  # previews imports this module

    link, artifact = _shared_artifact(token, pk)
    if not serveable(artifact):
        raise Http404("This version does not run live.")
    return redirect(live_url(artifact, share_link=link))


def _shared_artifact(token, pk) -> tuple[ShareLink, Artifact]:
    link = _link_or_404(token)
    return link, get_object_or_404(shared_artifacts(link), pk=pk)


def _shared_base(token, pk) -> str:
    return reverse("shared", args=[token]) + f"artifacts/{pk}/"


@ratelimit("share_links")
def shared_install(request, token, pk):
    link, artifact = _shared_artifact(token, pk)
    newer = None if link.revision_id else (lambda other: _shared_base(token, other.pk) + "install/")
    return install.install_page(request, artifact, base_url=_shared_base(token, pk), newer_url=newer,
                                live_as={"share_link": link})  # fmt: skip


@ratelimit("share_links")
def shared_manifest(request, token, pk):
    _link, artifact = _shared_artifact(token, pk)
    base = _shared_base(token, pk)
    icons = {}
    if install.has_icon(artifact):
        icons = {"display_image_url": install.absolute(f"{base}icon-57.png"),
                 "full_size_image_url": install.absolute(f"{base}icon-512.png")}  # fmt: skip
    return install.ios_manifest(request, artifact, ipa_url=install.absolute(install.file_url(artifact, base)), **icons)


@ratelimit("share_links")
def shared_qr(request, token, pk):
    _link, artifact = _shared_artifact(token, pk)
    return install.png_response(install.qr_png(install.qr_payload(artifact, base_url=_shared_base(token, pk))))


@ratelimit("share_links")
def shared_file(request, token, pk, filename):
    link, artifact = _shared_artifact(token, pk)
    user = request.user if request.user.is_authenticated else None
    return install.serve_artifact(request, artifact, user=user, share_link=link)


@ratelimit("share_links")
def shared_icon(request, token, pk, size):
    _link, artifact = _shared_artifact(token, pk)
    data = install.icon_png(artifact, size) if size in install.ICON_SIZES else None
    if data is None:
        raise Http404("This app has no icon.")
    return install.png_response(data)


@ratelimit("share_links")
def shared_screenshot(request, token, pk):
    link = _link_or_404(token)
    revision = shared_revision(link)
    if revision is None:
        raise Http404()
    shot = get_object_or_404(revision.screenshots, pk=pk)
    return FileResponse(shot.image.open("rb"), content_type="image/png")


urlpatterns = [
    path("p/<slug:slug>/share/", create, name="share_create"),
    path("p/<slug:slug>/share/<int:pk>/revoke/", revoke, name="share_revoke"),
    path("s/<str:token>/", shared, name="shared"),
    path("s/<str:token>/artifacts/<int:pk>/download/", shared_download, name="shared_download"),
    path("s/<str:token>/screenshots/<int:pk>/", shared_screenshot, name="shared_screenshot"),
    path("s/<str:token>/artifacts/<int:pk>/install/", shared_install, name="shared_install"),
    path("s/<str:token>/artifacts/<int:pk>/open/", shared_open_live, name="shared_open_live"),
    path("s/<str:token>/artifacts/<int:pk>/manifest.plist", shared_manifest, name="shared_manifest"),
    path("s/<str:token>/artifacts/<int:pk>/qr.png", shared_qr, name="shared_qr"),
    path("s/<str:token>/artifacts/<int:pk>/file/<str:filename>", shared_file, name="shared_file"),
    path("s/<str:token>/artifacts/<int:pk>/icon-<int:size>.png", shared_icon, name="shared_icon"),
]
