"""The admins' target pages: every target with its state (/targets/), and one target (/targets/<slug>/):
its last recipe check in full, the recipe as read, the hosts its setup may reach, its last builds, and
how its builds went over the last 30 days. Admins only: everyone else gets a 404, as on the cost page."""

from __future__ import annotations

from django.shortcuts import get_object_or_404, render
from django.urls import path

from prototypes.models import Target
from prototypes.targets import STATS_DAYS, build_stats, read_recipe, recent_builds, recipe_lines
from store.costs import admin_required


def duration(seconds: float | None) -> str:
    """A build's length for people: "42 s", "3 min 5 s", "1 h 2 min"; "" when unknown."""
    if seconds is None:
        return ""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


@admin_required
def target_list(request):
    return render(request, "store/targets.html", {"targets": Target.objects.order_by("name", "pk")})


@admin_required
def target_page(request, slug):
    target = get_object_or_404(Target, slug=slug)
    recipe, source = read_recipe(target)
    builds = [
        {"build": build, "prototype": build.revision.prototype,
         "duration": duration((build.finished_at - build.started_at).total_seconds())
         if build.started_at and build.finished_at else ""}
        for build in recent_builds(target)
    ]  # fmt: skip
    stats = build_stats(target)
    return render(request, "store/target.html", {
        "target": target, "recipe_rows": recipe_lines(recipe) if recipe else [], "recipe_source": source,
        "builds": builds, "stats": stats, "median": duration(stats.median_seconds), "days": STATS_DAYS,
        "success_percent": round(stats.success_rate * 100) if stats.success_rate is not None else None,
    })  # fmt: skip


urlpatterns = [
    path("targets/", target_list, name="targets"),
    path("targets/<slug:slug>/", target_page, name="target"),
]
