"""The admins' storage page: what artifacts take, by target and kind, what is pinned, what retention
freed and what it will free next."""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.shortcuts import render
from django.urls import path

from prototypes.retention import storage_summary


@login_required
def storage(request):
    if not request.user.is_superuser:
        raise PermissionDenied("Only admins see the storage page.")
    return render(request, "store/storage.html", {"summary": storage_summary()})


urlpatterns = [
    path("admin-tools/storage/", storage, name="storage"),
]
