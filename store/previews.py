"""Preview URLs for web prototypes, and live preview URLs for served ones (at the end of this module).

A prototype's page runs in an opaque origin (CSP sandbox) or on PREVIEW_ORIGIN, so the browser sends
it no cookies: the preview URL itself must say on whose behalf it was issued. Its signed token names
the artifact and a principal — the signed-in person it was shown to (with the prototype's slug when
the page was opened by its link), or the share link it was opened through — and every request for
the preview, each asset included, checks that principal against the visibility rule again
(`Artifact.objects.available_to`, or the share link's own rule). So making a prototype private,
removing a collaborator, revoking or expiring a share link, or a moderator's takedown stops every
preview URL issued before, at the next request. The token's age limit is only a backstop.
"""

from __future__ import annotations

from urllib.parse import quote

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core import signing
from django.urls import reverse

from prototypes.live_proxy import Access
from prototypes.models import Artifact
from store import sharing

SALT = "store.preview"
MAX_AGE = 12 * 3600


def _token_value(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> dict:
    if share_link is not None:
        return {"a": artifact.pk, "s": share_link.pk}
    if user is not None and user.is_authenticated:
        return {"a": artifact.pk, "u": user.pk, "p": slug}
    raise ValueError("A preview URL is issued to a signed-in person or through a share link.")


def preview_token(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """A token for one artifact on behalf of `share_link`, or else of `user` (who reached it through
    `slug`, if the page was opened by its link)."""
    value = _token_value(artifact, user=user, share_link=share_link, slug=slug)
    return signing.dumps(value, salt=SALT, compress=True)


def _load(token: str, salt: str, max_age: float = MAX_AGE) -> dict | None:
    try:
        value = signing.loads(token, salt=salt, max_age=max_age)
    except signing.BadSignature:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("a"), int):
        return None  # also tokens from before principals were named: they were bearer capabilities
    return value


def _reachable(value: dict):
    """The one rule for every preview token, static and live: the artifacts the principal a token names
    may have now (the share link's own rule, or the person's), and that person (None for a link)."""
    if isinstance(value.get("s"), int):
        link = sharing.resolve_id(value["s"])
        return (sharing.shared_artifacts(link) if link is not None else Artifact.objects.none()), None
    if isinstance(value.get("u"), int):
        user = get_user_model().objects.filter(pk=value["u"], is_active=True).first()
        slug = value.get("p") if isinstance(value.get("p"), str) else ""
        return (Artifact.objects.available_to(user, slug=slug) if user else Artifact.objects.none()), user
    return Artifact.objects.none(), None


def artifact_for_token(token: str) -> Artifact | None:
    """The web artifact a token opens, if the person or share link it was issued for may have it now;
    None for a forged, stale or old-style token, and for one whose principal lost access."""
    value = _load(token, SALT)
    if value is None:
        return None
    artifacts, _ = _reachable(value)
    return artifacts.filter(pk=value["a"], kind=Artifact.Kind.WEB).select_related("build__revision__prototype").first()


def preview_url(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """Where a web prototype opens: on the preview origin when one is configured."""
    token = preview_token(artifact, user=user, share_link=share_link, slug=slug)
    return settings.PREVIEW_ORIGIN + reverse("preview", args=[token])


# --- live previews (server apps: prototypes/live_proxy.py) -------------------------------------------
#
# A live preview runs on an origin of its own, http://<label>.<LIVE_PREVIEW_DOMAIN>/, and its app has
# cookies of its own, so the token travels once in the URL (/__preview/open?t=...) and then in a
# host-only cookie the proxy keeps from the app. It names the same principals as the static tokens and
# is checked by the same rule (`_reachable`) on every request, plus the instance it opens (the viewer
# key): the proxy refuses it on any other instance's host. Another salt: one kind of token never
# passes for the other.

LIVE_SALT = "store.live"


def serveable(artifact: Artifact) -> bool:
    """Whether a version runs live (its recipe had [serve] when it was built)."""
    from prototypes import instances  # on use: it brings in the app runtime

    return instances.serve_spec(artifact) is not None


def live_token(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> tuple[str, str]:
    """(token, viewer key) for a serveable artifact, on behalf of `share_link` or else of `user`."""
    from prototypes import instances

    serve = instances.serve_spec(artifact)
    if serve is None:
        raise ValueError("This version has no [serve]: it cannot be opened live.")
    value = _token_value(artifact, user=user, share_link=share_link, slug=slug)
    if share_link is not None:
        viewer = instances.viewer_key(serve, share_link_id=share_link.pk)
    else:
        viewer = instances.viewer_key(serve, user=user)
    value["v"] = viewer
    return signing.dumps(value, salt=LIVE_SALT, compress=True), viewer


def live_origin(label: str) -> str:
    return f"{settings.LIVE_PREVIEW_SCHEME}://{label}.{settings.LIVE_PREVIEW_DOMAIN}"


def live_url(artifact: Artifact, *, user=None, share_link=None, slug: str = "") -> str:
    """Where a serveable version opens live: its instance's own origin, through the proxy's open link."""
    from prototypes import instances

    token, viewer = live_token(artifact, user=user, share_link=share_link, slug=slug)
    return f"{live_origin(instances.instance_label(artifact.pk, viewer))}/__preview/open?t={quote(token)}"


def authorize(token: str, *, max_age: float = MAX_AGE) -> Access | None:
    """What a live token opens now: its artifact and instance (viewer key) if the person or share link
    it was issued for may still have that version, and whether they may read the instance's log (the
    prototype's owner, or an admin); None otherwise. The proxy asks on every request (cached for
    LIVE_PREVIEW_ACCESS_CACHE seconds)."""
    from prototypes import instances

    value = _load(token, LIVE_SALT, max_age)
    if value is None or not isinstance(value.get("v"), str):
        return None
    artifacts, user = _reachable(value)
    artifact = (
        artifacts.exclude(kind=Artifact.Kind.PATCH)
        .filter(pk=value["a"])
        .select_related("build__revision__prototype")
        .first()
    )
    if artifact is None or instances.serve_spec(artifact) is None:
        return None
    prototype = artifact.build.revision.prototype
    manager = user is not None and (user.pk == prototype.owner_id or user.is_superuser)
    return Access(artifact=artifact, viewer=value["v"], manager=manager)
