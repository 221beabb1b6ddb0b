"""Install pages: putting a built app on a phone, or a backend package on a computer.

The core functions take an artifact the caller has already authorized, so the signed-in routes below
and share links (which carry their own token in the path) serve the same pages. Each set of routes
lives under a `base_url` ending in "/", holding:

    install/            the install page              install_page()
    manifest.plist      the iOS over-the-air manifest ios_manifest()
    qr.png              a QR code of the install page qr_png(qr_payload())
    file/<filename>     the artifact itself           serve_artifact()
    icon-<size>.png     the app's icon                icon_png()

iOS fetches the manifest, the .ipa and the icons itself, outside Safari and without the browser's
cookies; Android download managers may do the same with an APK. So the URLs handed to the device
carry a signed, expiring install token for one artifact and the person who was shown the page; the
person's access is checked again on every fetch. See reference/install-links.md.
"""

from __future__ import annotations

import base64
import binascii
import io
import plistlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import qrcode
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.http import Http404, HttpResponse, HttpResponseBase
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_safe
from PIL import Image

from prototypes.downloads import serve_file
from prototypes.models import Artifact
from store.models import Visit

INSTALLABLE = (Artifact.Kind.IPA, Artifact.Kind.APK, Artifact.Kind.PYZ, Artifact.Kind.WHEEL, Artifact.Kind.ARCHIVE)
BACKEND = (Artifact.Kind.PYZ, Artifact.Kind.WHEEL, Artifact.Kind.ARCHIVE)
ICON_SIZES = (57, 120, 512)  # the manifest's display-image and full-size-image, and the page
MAX_ICON_BYTES = 1024 * 1024
TOKEN_SALT = "store.install"
TOKEN_MAX_AGE = 12 * 3600
ANDROID_VERSIONS = {
    21: "5.0", 22: "5.1", 23: "6", 24: "7.0", 25: "7.1", 26: "8.0", 27: "8.1", 28: "9", 29: "10",
    30: "11", 31: "12", 32: "12L", 33: "13", 34: "14", 35: "15", 36: "16",
}  # fmt: skip
# In-app browsers of chat and social apps, and iOS browsers other than Safari: they may not start an
# itms-services install, so the page suggests opening it in Safari.
NOT_SAFARI = re.compile(r"FBAN|FBAV|Instagram|Line/|MicroMessenger|Snapchat|CriOS|FxiOS|EdgiOS|OPiOS|GSA/")


# --- devices ---------------------------------------------------------------------------------------


def detect_device(user_agent: str) -> str:
    """ "ios", "android", "mac" or "desktop". iPadOS Safari asks for the desktop site by default and
    then says "Macintosh": a Mac and an iPad look the same to the server, so "mac" gets both the
    iOS install button and the QR code."""
    if re.search(r"iPhone|iPad|iPod", user_agent):
        return "ios"
    if "Android" in user_agent:
        return "android"
    if "Macintosh" in user_agent:
        return "mac"
    return "desktop"


def outside_safari(user_agent: str) -> bool:
    return bool(NOT_SAFARI.search(user_agent)) or "Safari/" not in user_agent


# --- URLs and the install token ----------------------------------------------------------------------


def install_token(artifact: Artifact, user) -> str:
    return signing.dumps({"a": artifact.pk, "u": user.pk}, salt=TOKEN_SALT, compress=True)


def user_for_token(token: str, artifact_pk: int):
    """The person an install token was issued to, if it is genuine, fresh, for this artifact, and the
    person is still active (their access to the artifact is checked by the caller)."""
    try:
        value = signing.loads(token, salt=TOKEN_SALT, max_age=TOKEN_MAX_AGE)
    except signing.BadSignature:
        return None
    if not isinstance(value, dict) or value.get("a") != artifact_pk:
        return None
    return get_user_model().objects.filter(pk=value.get("u"), is_active=True).first()


def absolute(url: str) -> str:
    """An absolute URL on the store's public address. SITE_URL, not the request's host: behind a
    proxy that terminates TLS the request says http, and iOS refuses http manifests."""
    return settings.SITE_URL + url if url.startswith("/") else url


def serves_https() -> bool:
    return settings.SITE_URL.startswith("https://")


def file_url(artifact: Artifact, base_url: str) -> str:
    return f"{base_url}file/{quote(artifact.filename, safe='')}"


def itms_services_link(manifest_url: str) -> str:
    """The link that starts an iOS install. The manifest URL goes in URL-encoded, so its own query
    (the install token) stays part of it."""
    return "itms-services://?" + urlencode({"action": "download-manifest", "url": manifest_url}, quote_via=quote)


def qr_payload(artifact: Artifact, *, base_url: str) -> str:
    """What the QR code opens: the install page, never the raw file, so the phone gets the same page."""
    return absolute(f"{base_url}install/")


def qr_png(url: str) -> bytes:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, box_size=8, border=2)
    code.add_data(url)
    code.make(fit=True)
    buffer = io.BytesIO()
    code.make_image().save(buffer, format="PNG")
    return buffer.getvalue()


# --- what the page shows ---------------------------------------------------------------------------


def icon_png(artifact: Artifact, size: int) -> bytes | None:
    """The app icon from the artifact's metadata ("icon": a base64 PNG, or a data: URI of one),
    square at `size` pixels; None when there is none or it is not a readable PNG. The icon came out
    of an untrusted build, so it is decoded, bounded and re-encoded rather than passed through."""
    raw = artifact.metadata.get("icon")
    if not isinstance(raw, str) or not raw:
        return None
    if raw.startswith("data:"):
        header, _, raw = raw.partition(",")
        if header != "data:image/png;base64":
            return None
    if len(raw) > MAX_ICON_BYTES * 4 // 3 + 4:
        return None
    try:
        data = base64.b64decode(raw, validate=True)
        with Image.open(io.BytesIO(data), formats=["PNG"]) as image:
            if image.width * image.height > 4096 * 4096:
                return None
            image = image.convert("RGBA").resize((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    except (binascii.Error, ValueError, OSError, Image.DecompressionBombError):
        return None
    return buffer.getvalue()


def has_icon(artifact: Artifact) -> bool:
    return icon_png(artifact, 57) is not None


def newer_artifact(artifact: Artifact) -> Artifact | None:
    """A successful artifact of the same kind on the prototype's current revision that is newer than
    this one — what the "a newer build exists" banner points to."""
    current_id = artifact.build.revision.prototype.current_revision_id
    if current_id is None:
        return None
    newest = (
        Artifact.objects.available()
        .filter(build__revision_id=current_id, kind=artifact.kind)
        .order_by("-created_at", "-pk")
        .first()
    )
    if newest is None or (newest.created_at, newest.pk) <= (artifact.created_at, artifact.pk):
        return None
    return newest


def app_versions(artifact: Artifact, limit: int = 20) -> list[Artifact]:
    """The prototype's other installable versions of the same kind, newest version first: one artifact
    per version (its newest build). For the "other versions" list of a page whose person may see the
    whole prototype (not a share link pinned to one version)."""
    prototype_id = artifact.build.revision.prototype_id
    rows = (
        Artifact.objects.available()
        .filter(build__revision__prototype_id=prototype_id, kind=artifact.kind)
        .select_related("build__revision")
        .order_by("-build__revision__number", "-created_at", "-pk")
    )
    versions, seen = [], set()
    for row in rows[: limit * 5]:
        if row.build.revision_id not in seen:
            seen.add(row.build.revision_id)
            versions.append(row)
    return versions[:limit]


def web_part(artifact: Artifact) -> Artifact | None:
    """The web artifact built beside an app (a hybrid app's web part, the recipe's web_preview): what
    people without that phone can try in the store's phone frame."""
    return Artifact.objects.available().filter(build_id=artifact.build_id, kind=Artifact.Kind.WEB).first()


def min_os(artifact: Artifact) -> str:
    meta = artifact.metadata
    if artifact.kind == Artifact.Kind.IPA and meta.get("min_os"):
        return f"iOS {meta['min_os']} or later"
    if artifact.kind == Artifact.Kind.APK and meta.get("min_sdk"):
        try:
            level = int(meta["min_sdk"])
        except (TypeError, ValueError):
            return ""
        name = ANDROID_VERSIONS.get(level)
        return f"Android {name} (API {level}) or later" if name else f"Android API {level} or later"
    return ""


def app_version(artifact: Artifact) -> tuple[str, str]:
    """(version, build number) as far as the metadata says."""
    meta = artifact.metadata
    if artifact.kind == Artifact.Kind.IPA:
        return str(meta.get("version") or ""), str(meta.get("build") or "")
    if artifact.kind == Artifact.Kind.APK:
        return str(meta.get("version_name") or ""), str(meta.get("version_code") or "")
    return str(meta.get("version") or ""), ""


def run_command(artifact: Artifact) -> str:
    """How to run or install a backend artifact once downloaded. A version with [serve] is started the
    way its recipe starts it live (after unpacking an archive into a folder of its own); without one,
    the artifact's kind says what can be said."""
    name = artifact.filename
    if artifact.metadata.get("run"):
        return str(artifact.metadata["run"])
    start = str((artifact.metadata.get("serve") or {}).get("command") or "")
    folder = name.removesuffix(".tar.gz").removesuffix(".tgz").removesuffix(".tar").removesuffix(".zip")
    unpack = ""
    if name.endswith(".zip"):
        unpack = f"unzip {name} -d {folder}"
    elif name.endswith((".tar.gz", ".tgz")):
        unpack = f"mkdir {folder} && tar xzf {name} -C {folder}"
    elif name.endswith(".tar"):
        unpack = f"mkdir {folder} && tar xf {name} -C {folder}"
    if start:
        return f"{unpack}\ncd {folder} && {start}" if unpack else start
    if artifact.kind == Artifact.Kind.PYZ:
        return f"python3 {name}"
    if artifact.kind == Artifact.Kind.WHEEL:
        return f"python3 -m pip install ./{name}"
    return unpack


RUNTIMES = {"python3": "Python 3.11 or newer", "python": "Python 3.11 or newer", "node": "Node.js 20 or newer"}


def runtime_needed(artifact: Artifact) -> str:
    """What a person needs installed to run the downloaded artifact, in words ("" when we cannot tell):
    read from the command that starts it, so a Node app never says Python."""
    if artifact.kind in (Artifact.Kind.PYZ, Artifact.Kind.WHEEL):
        return RUNTIMES["python3"]
    words = run_command(artifact).replace("&&", "\n").split()
    return next((RUNTIMES[w] for w in words if w in RUNTIMES), "")


@dataclass
class Links:
    page: str
    qr: str
    download: str
    device_download: str
    icon: str
    manifest: str
    itms: str
    open: str  # a serveable version opens live here: the store mints its instance's link on the click


def install_links(artifact: Artifact, *, base_url: str, device_query: str = "") -> Links:
    manifest = absolute(f"{base_url}manifest.plist{device_query}")
    return Links(
        page=f"{base_url}install/",
        qr=f"{base_url}qr.png",
        download=file_url(artifact, base_url),
        device_download=file_url(artifact, base_url) + device_query,
        icon=f"{base_url}icon-120.png",
        manifest=manifest,
        itms=itms_services_link(manifest) if manifest.startswith("https://") else "",
        open=f"{base_url}open/",
    )


# --- core responses ----------------------------------------------------------------------------------


def install_page(
    request,
    artifact: Artifact,
    *,
    base_url: str,
    device_query: str = "",
    newer_url: Callable[[Artifact], str] | None = None,
    live_as: dict | None = None,
    phone_url: str = "",
) -> HttpResponse:
    """The install page for an artifact the caller has authorized. `base_url` is where this artifact's
    routes live (ends in "/"); `device_query` ("?t=…" or "") is added to the URLs a device fetches
    without the browser's cookies; `newer_url` gives the page of a newer build, or None to not point
    to one (a share link pinned to one revision); `live_as` names on whose behalf a serveable version's
    live URL is issued ({"user": …, "slug": …} or {"share_link": …}): the page offers Open first.
    `newer_url` also lists the prototype's other versions; `phone_url` opens the app's web part in the
    phone frame ("" when it has none or the route cannot show it)."""
    if artifact.kind not in INSTALLABLE:
        raise Http404("There is nothing to install for this artifact.")
    revision = artifact.build.revision
    user_agent = request.headers.get("User-Agent", "")
    device = detect_device(user_agent)
    version, build_number = app_version(artifact)
    newer = newer_artifact(artifact) if newer_url else None
    is_aab = artifact.filename.lower().endswith(".aab")
    context = {
        "artifact": artifact,
        "prototype": revision.prototype,
        "revision": revision,
        "build": artifact.build,
        "device": device,
        "on_ios": device in ("ios", "mac"),
        "on_android": device == "android",
        "on_computer": device in ("desktop", "mac"),
        "outside_safari": device in ("ios", "mac") and outside_safari(user_agent),
        "links": install_links(artifact, base_url=base_url, device_query=device_query),
        "https": serves_https(),
        "bundle_id": artifact.metadata.get("bundle_id", ""),
        "package": artifact.metadata.get("package", ""),
        "app_name": artifact.metadata.get("display_name", ""),
        "version": version,
        "build_number": build_number,
        "min_os": min_os(artifact),
        "has_icon": has_icon(artifact),
        "letter": (revision.prototype.title[:1] or "?").upper(),
        "is_backend": artifact.kind in BACKEND,
        "is_aab": is_aab,
        "run_command": run_command(artifact),
        "runtime_needed": runtime_needed(artifact),
        "newer": newer,
        "newer_url": newer_url(newer) if newer else "",
        "downloads": Visit.objects.filter(revision=revision, kind=Visit.Kind.DOWNLOAD).count(),
        "live_as": live_as or {},
        "versions": [(v, newer_url(v)) for v in app_versions(artifact)] if newer_url else [],
        "phone_url": phone_url,
        "signed_with": artifact.metadata.get("signed_with", ""),
        "signer_sha256": artifact.metadata.get("signer_sha256", ""),
    }
    return render(request, "store/install.html", context)


def ios_manifest(
    request,
    artifact: Artifact,
    *,
    ipa_url: str,
    display_image_url: str | None = None,
    full_size_image_url: str | None = None,
) -> HttpResponse:
    """The over-the-air manifest iOS reads after tapping Install. Every URL must be https (iOS
    refuses anything else), so a store not served over https has no manifest at all."""
    if artifact.kind != Artifact.Kind.IPA:
        raise Http404("Only iOS apps have an install manifest.")
    bundle_id = artifact.metadata.get("bundle_id")
    if not bundle_id:
        raise Http404("This app's bundle identifier is unknown, so iOS cannot install it over the air.")
    urls = [ipa_url, display_image_url or "https://", full_size_image_url or "https://"]
    if not all(url.startswith("https://") for url in urls):
        raise Http404("iOS installs need the store served over HTTPS.")
    assets = [{"kind": "software-package", "url": ipa_url}]
    if display_image_url:
        assets.append({"kind": "display-image", "url": display_image_url})
    if full_size_image_url:
        assets.append({"kind": "full-size-image", "url": full_size_image_url})
    meta = artifact.metadata
    metadata = {
        "bundle-identifier": str(bundle_id),
        # The build number (CFBundleVersion), which iOS compares; the marketing version only if unknown.
        "bundle-version": str(meta.get("build") or meta.get("version") or "0"),
        "kind": "software",
        "title": artifact.build.revision.prototype.title,
    }
    body = plistlib.dumps({"items": [{"assets": assets, "metadata": metadata}]}, fmt=plistlib.FMT_XML)
    response = HttpResponse(body, content_type="text/xml")
    response["Cache-Control"] = "private, no-store"
    return response


def serve_artifact(request, artifact: Artifact, *, user=None, share_link=None) -> HttpResponseBase:
    """The artifact's file as a download, counted for `user` (the person it was authorized for:
    a device fetching with an install token has no session), else the signed-in person."""
    if artifact.kind not in INSTALLABLE:
        raise Http404("This artifact is not downloaded from here.")
    if request.method == "GET":
        who = user or (request.user if request.user.is_authenticated else None)
        Visit.objects.create(revision=artifact.build.revision, kind=Visit.Kind.DOWNLOAD, user=who,
                             share_link=share_link)  # fmt: skip
    content_type = artifact.content_type
    if artifact.kind == Artifact.Kind.APK:
        content_type = "application/vnd.android.package-archive"
    elif artifact.kind == Artifact.Kind.IPA:
        content_type = "application/octet-stream"
    response = serve_file(request, artifact.file, filename=artifact.filename, content_type=content_type)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private"
    return response


def png_response(data: bytes) -> HttpResponse:
    response = HttpResponse(data, content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response


# --- the routes for signed-in people -----------------------------------------------------------------


def installable_artifacts(user, *, slug: str = ""):
    """What a person may install: the available artifacts they may reach (by id, or through the slug
    of a link-only prototype's address: see `Artifact.objects.available_to`)."""
    return (
        Artifact.objects.available_to(user, slug=slug)
        .select_related("build__revision__prototype", "build__revision__author")
        .filter(kind__in=INSTALLABLE)
    )


def _artifact_for(request, pk: int, slug: str = "") -> tuple[Artifact, object]:
    """The artifact and the person it is served to: the signed-in person, or the holder of an install
    token (a device fetching without cookies). Everyone else — including people who cannot see the
    prototype — gets the same 404, never a 403 that would confirm it exists. The routes under
    /p/<slug>/ carry the link of a link-only prototype; the id-only ones never reach one by link."""
    people = [request.user] if request.user.is_authenticated else []
    token = request.GET.get("t")
    if token:
        holder = user_for_token(token, pk)
        if holder is not None:
            people.append(holder)
    for person in people:
        artifact = installable_artifacts(person, slug=slug).filter(pk=pk).first()
        if artifact is not None:
            return artifact, person
    raise Http404("No such app, or you cannot see it.")


def _base_url(pk: int, slug: str = "") -> str:
    return reverse("install", args=[slug, pk] if slug else [pk]).removesuffix("install/")


def _device_query(artifact: Artifact, person) -> str:
    return "?" + urlencode({"t": install_token(artifact, person)})


@require_safe
@login_required
def install(request, pk, slug=""):
    artifact, person = _artifact_for(request, pk, slug)
    phone_url = ""
    if request.user.is_authenticated and web_part(artifact) is not None:
        revision = artifact.build.revision
        phone_url = reverse("phone_view", args=[revision.prototype.slug]) + f"?version={revision.number}"
    return install_page(
        request, artifact, base_url=_base_url(pk, slug), device_query=_device_query(artifact, person),
        newer_url=lambda newer: _base_url(newer.pk, slug) + "install/",
        live_as={"user": person, "slug": slug}, phone_url=phone_url,
    )  # fmt: skip


@require_safe
def manifest(request, pk, slug=""):
    artifact, person = _artifact_for(request, pk, slug)
    query, base = _device_query(artifact, person), _base_url(pk, slug)
    icons = {}
    if has_icon(artifact):
        icons = {
            "display_image_url": absolute(f"{base}icon-57.png{query}"),
            "full_size_image_url": absolute(f"{base}icon-512.png{query}"),
        }
    return ios_manifest(request, artifact, ipa_url=absolute(file_url(artifact, base) + query), **icons)


@require_safe
@login_required
def qr(request, pk, slug=""):
    artifact, _person = _artifact_for(request, pk, slug)
    return png_response(qr_png(qr_payload(artifact, base_url=_base_url(pk, slug))))


@require_safe
def download(request, pk, filename, slug=""):
    # The filename in the URL is only there so tools that ignore Content-Disposition name the file well.
    artifact, person = _artifact_for(request, pk, slug)
    return serve_artifact(request, artifact, user=person)


@require_safe
def icon(request, pk, size, slug=""):
    artifact, _person = _artifact_for(request, pk, slug)
    data = icon_png(artifact, size) if size in ICON_SIZES else None
    if data is None:
        raise Http404("This app has no icon.")
    return png_response(data)


urlpatterns = [
    path("artifacts/<int:pk>/install/", install, name="install"),
    path("artifacts/<int:pk>/manifest.plist", manifest, name="install_manifest"),
    path("artifacts/<int:pk>/qr.png", qr, name="install_qr"),
    path("artifacts/<int:pk>/file/<str:filename>", download, name="install_file"),
    path("artifacts/<int:pk>/icon-<int:size>.png", icon, name="install_icon"),
    # The same inside a prototype's address, for people who opened a link-only prototype by its link.
    path("p/<slug:slug>/artifacts/<int:pk>/install/", install, name="install"),
    path("p/<slug:slug>/artifacts/<int:pk>/manifest.plist", manifest, name="install_manifest"),
    path("p/<slug:slug>/artifacts/<int:pk>/qr.png", qr, name="install_qr"),
    path("p/<slug:slug>/artifacts/<int:pk>/file/<str:filename>", download, name="install_file"),
    path("p/<slug:slug>/artifacts/<int:pk>/icon-<int:size>.png", icon, name="install_icon"),
]
