"""Graduate: the owner turns a good version into a pull request on the real repository.

The lead includes `urlpatterns` from store/urls.py. The work itself is in prototypes/graduation.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import path
from django.utils.html import format_html

from prototypes import graduation
from prototypes.models import Artifact, Prototype, Revision


@login_required
def graduate(request, slug, number):
    prototype = get_object_or_404(Prototype.objects.visible_to(request.user, by_link=True).select_related("owner", "target"),
                                  slug=slug)  # fmt: skip
    revision = get_object_or_404(Revision.objects.select_related("prototype__target"), prototype=prototype,
                                 number=number)  # fmt: skip
    plan, error, status = None, "", 200
    try:
        plan = graduation.plan(revision, by=request.user)
        if request.method == "POST":
            url = graduation.graduate(revision, by=request.user)
            messages.success(request, format_html('Pull request opened: <a href="{}">{}</a>', url, url))
            return redirect(prototype)
    except graduation.NotAllowed as exc:
        error, status = str(exc), 403
    except graduation.GraduationFailed as exc:
        error = str(exc)
    has_patch = Artifact.objects.available().filter(build__revision=revision, kind=Artifact.Kind.PATCH).exists()
    return render(request, "store/graduate.html", {
        "prototype": prototype, "revision": revision, "plan": plan, "error": error, "has_patch": has_patch,
    }, status=status)  # fmt: skip


urlpatterns = [
    path("p/<slug:slug>/v/<int:number>/graduate/", graduate, name="graduate"),
]
