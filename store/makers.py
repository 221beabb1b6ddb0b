"""A maker's own pages: where to start (/start/, what makes a good idea, with ideas per app) and their
prototypes with where each build stands (/mine/)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.db.models import DateTimeField, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce, Greatest
from django.shortcuts import render
from django.urls import path, reverse
from django.views.decorators.http import require_safe

from agents.providers.replay import list_recordings
from prototypes import samples
from prototypes.models import Build, Target
from store.catalog import Filters, catalog

# Ideas to show per kind of app when Claude builds for real (any idea can be built). Each is concrete,
# observable and one change, like the page asks ideas to be.
EXAMPLES: dict[str, list[str]] = {
    Target.Kind.WEB: [
        "Add a dark mode switch to the header that remembers the choice on the next visit.",
        "When the list is empty, show a short explanation and a button to add the first item.",
    ],
    Target.Kind.BACKEND: [
        "Add an endpoint that returns the ten most recent items, newest first, with their total count.",
        "Refuse a negative quantity with a 400 error that says which field was wrong.",
    ],
    Target.Kind.ANDROID: [
        "Add a Share button on the detail screen that sends the text to other apps.",
        "Sort the list by last edited, newest first, and show the date under each title.",
    ],
    Target.Kind.IOS: [
        "Add a Share button on the detail screen that sends the text to other apps.",
        "Show a badge with the number of unread items on the first tab.",
    ],
}


@dataclass(frozen=True)
class Idea:
    title: str
    idea: str
    link: str  # the new-prototype form, filled with this idea
    sample: bool  # a sample conversation of the offline demo (only those can be built there)


def _new_link(target: Target, idea: str, title: str = "") -> str:
    query = {"target": target.slug, "idea": idea} | ({"title": title} if title else {})
    return f"{reverse('new')}?{urlencode(query)}"


def ideas_per_app() -> list[tuple[Target, list[Idea]]]:
    """Every app on offer with ideas for it: in the offline demo its sample ideas (the only ones that can
    be built there), otherwise examples written for its kind of app."""
    targets = list(Target.objects.offered().order_by("name"))
    if samples.replaying():
        recordings = list_recordings(settings.RECORDINGS_DIR)
        return [
            (t, [Idea(r.title, r.idea, _new_link(t, r.idea, r.title), True) for r in recordings if r.target == t.slug])
            for t in targets
        ]
    return [(t, [Idea(idea, idea, _new_link(t, idea), False) for idea in EXAMPLES.get(t.kind, [])]) for t in targets]


@login_required
@require_safe
def start(request):
    return render(request, "store/start.html", {"apps": ideas_per_app(), "replaying": samples.replaying()})


def my_prototypes(user):
    """The person's own prototypes (the catalog's `mine` rule), newest activity first: the latest of a
    build starting or ending and the prototype's own changes."""
    builds = Build.objects.filter(revision__prototype=OuterRef("pk")).order_by().values("revision__prototype")
    last_build = builds.annotate(at=Max(Coalesce("finished_at", "created_at"))).values("at")
    activity = Greatest("updated_at", Coalesce(Subquery(last_build, output_field=DateTimeField()), "updated_at"))
    return catalog(user, Filters(mine=True)).annotate(activity=activity).order_by("-activity", "-pk")


@dataclass(frozen=True)
class Standing:
    """Where a prototype's current version stands, in words."""

    state: str  # a Build.State value, or "" when the version has no build
    words: str
    why: str  # a failed build's first line of why
    build: Build | None
    link: str  # the build's page, inside the prototype's address (Build.get_absolute_url, without a query)


def standing(prototype) -> Standing:
    """The current version's build: the kept attempt, else the newest (builds prefetched, newest first)."""
    revision = prototype.current_revision
    builds = list(revision.builds.all()) if revision else []
    build = next((b for b in builds if b.pk == revision.kept_build_id), None) if builds else None
    build = build or (builds[0] if builds else None)
    if build is None:
        return Standing("", "Not built", "", None, "")
    words = {
        Build.State.QUEUED: "Waiting to start",
        Build.State.SUCCEEDED: "Ready",
        Build.State.FAILED: "Failed",
        Build.State.CANCELLED: "Cancelled",
    }.get(build.state, f"Building: {build.get_state_display()}")
    why = (build.error_message.strip().splitlines() or [""])[0] if build.state == Build.State.FAILED else ""
    return Standing(build.state, words, why, build, reverse("build", args=[prototype.slug, build.pk]))


@login_required
@require_safe
def mine(request):
    prototypes = my_prototypes(request.user).prefetch_related("current_revision__builds")
    rows = [(p, standing(p)) for p in prototypes]
    return render(request, "store/mine.html", {"rows": rows})


urlpatterns = [
    path("start/", start, name="start"),
    path("mine/", mine, name="mine"),
]
