"""The role half of every API verb, loaded by REST framework with its settings
(DEFAULT_PERMISSION_CLASSES), so nothing here may import a view.

A viewset names in `role_actions` which action of the role table (prototypes/access.py) each of its
verbs needs; verbs it does not name need only what visibility and ownership already decide. The check runs
before the request body is read (for a verb on one thing, right after the thing is found), so a
viewer hears "your role…" (403, code `not_allowed`) and not a list of invalid fields; the entry points
in prototypes/builds.py ask the same table again."""

from __future__ import annotations

from rest_framework.permissions import BasePermission

from prototypes import access


class RoleAllows(BasePermission):
    code = "not_allowed"

    def has_permission(self, request, view) -> bool:
        # On one thing (a retry, a remix, an edit) the thing is looked up first: one the person may not
        # see answers 404 whatever their role, as everywhere else, and a 403 says only "not your role".
        return True if getattr(view, "detail", False) else self._allows(request, view)

    def has_object_permission(self, request, view, obj) -> bool:
        return self._allows(request, view)

    def _allows(self, request, view) -> bool:
        action = getattr(view, "role_actions", {}).get(getattr(view, "action", None))
        if action is None or access.can(request.user, action):
            return True
        self.message = access.refusal(request.user, action)  # an instance per request: safe to set
        return False


class AdminOnly(RoleAllows):
    """Verbs only admins may use, named by a viewset in `admin_actions` (registering and changing
    targets); its other verbs pass. As with RoleAllows, on one thing the lookup comes first (someone who
    may not see it hears 404), and the refusal is a 403 with code `not_allowed` and the viewset's
    `admin_refusal` as its message."""

    def _allows(self, request, view) -> bool:
        if getattr(view, "action", None) not in getattr(view, "admin_actions", ()) or request.user.is_superuser:
            return True
        self.message = getattr(view, "admin_refusal", "Only admins can do this.")
        return False
