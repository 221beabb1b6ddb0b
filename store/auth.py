"""Signing in with the company's identity provider (OpenID Connect, through mozilla-django-oidc).

On only when OIDC_RP_CLIENT_ID is set; local accounts (the embedded default's demo people, a first
admin) keep working beside it. People are matched to accounts by email, created on first sign-in with
the default role, and — when OIDC_GROUPS_CLAIM and OIDC_ROLE_GROUPS are set — given the store roles
their provider groups map to at every sign-in, so the provider stays the one place that decides.
"""

from __future__ import annotations

import logging
import re

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.core.exceptions import ImproperlyConfigured
from django.http import Http404
from django.urls import path, reverse
from mozilla_django_oidc.auth import OIDCAuthenticationBackend
from mozilla_django_oidc.views import OIDCAuthenticationCallbackView, OIDCAuthenticationRequestView

from prototypes.access import ROLES, role_group
from prototypes.inputs import is_visibly_empty

log = logging.getLogger(__name__)

# ROLES and what each may do come from the one role table, prototypes/access.py.


def parse_role_groups(text: str) -> dict[str, str]:
    """OIDC_ROLE_GROUPS ("provider-group=role,...") as {provider group: store role}. Unknown roles are
    an error: a typo must not quietly leave people without access (or with too much)."""
    mapping = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        group, sep, role = item.rpartition("=")
        role = role.strip()
        if not sep or not group.strip() or role not in ROLES:
            raise ImproperlyConfigured(
                f"OIDC_ROLE_GROUPS: '{item}' must look like provider-group=role, role one of {ROLES}"
            )
        mapping[group.strip()] = role
    return mapping


def roles_from_claims(claims: dict, *, claim: str, mapping: dict[str, str], default: str) -> set[str] | None:
    """The store roles the provider gives a person, or None when it says nothing about roles (no
    mapping configured, or the claim is missing): the person's roles then stay as they are. A person
    in none of the mapped groups gets the default role."""
    if not claim or not mapping or claim not in claims:
        return None
    groups = claims[claim]
    if isinstance(groups, str):
        groups = [groups]
    if not isinstance(groups, list):
        return None
    roles = {mapping[g] for g in groups if isinstance(g, str) and g in mapping}
    return roles or {default}


def default_role() -> str:
    if settings.OIDC_DEFAULT_ROLE not in ROLES:
        raise ImproperlyConfigured(f"OIDC_DEFAULT_ROLE must be one of {ROLES}, not '{settings.OIDC_DEFAULT_ROLE}'")
    return settings.OIDC_DEFAULT_ROLE


def set_roles(user, roles: set[str]) -> None:
    """Make the person's store roles exactly `roles` (other groups stay). Admins are superusers."""
    current = set(user.groups.filter(name__in=ROLES).values_list("name", flat=True))
    for role in current - roles:
        user.groups.remove(Group.objects.get(name=role))
    for role in roles - current:
        user.groups.add(role_group(role))
    admin = "admin" in roles
    if user.is_superuser != admin or user.is_staff != admin:
        user.is_superuser = user.is_staff = admin
        user.save(update_fields=["is_superuser", "is_staff"])


def username_for(claims: dict) -> str:
    """A readable, unique username: the provider's preferred_username, else the email's local part."""
    base = claims.get("preferred_username") or (claims.get("email") or "").split("@")[0] or "person"
    base = re.sub(r"[^\w.@+-]", "-", str(base))[:140] or "person"
    User = get_user_model()
    name, n = base, 1
    while User.objects.filter(username__iexact=name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


class StoreOIDCBackend(OIDCAuthenticationBackend):
    def verify_claims(self, claims):
        # Accounts are matched by email, so an address the provider says it has not verified could take
        # over someone else's account.
        return bool(claims.get("email")) and claims.get("email_verified") is not False

    def create_user(self, claims):
        # No password: this person signs in through the provider only.
        user = get_user_model().objects.create_user(username_for(claims), email=claims["email"])
        self._update_profile(user, claims)
        roles = self._roles(claims)
        set_roles(user, roles if roles is not None else {default_role()})
        log.info("created %s on first sign-in with %s", user.username, settings.OIDC_PROVIDER_NAME)
        return user

    def update_user(self, user, claims):
        self._update_profile(user, claims)
        roles = self._roles(claims)
        if roles is not None:
            set_roles(user, roles)
        return user

    def _roles(self, claims) -> set[str] | None:
        return roles_from_claims(
            claims,
            claim=settings.OIDC_GROUPS_CLAIM,
            mapping=parse_role_groups(settings.OIDC_ROLE_GROUPS),
            default=default_role(),
        )

    @staticmethod
    def _update_profile(user, claims) -> None:
        first = claims.get("given_name") or (claims.get("name") or "").partition(" ")[0]
        last = claims.get("family_name") or (claims.get("name") or "").partition(" ")[2]
        # A name of only invisible characters is no name: people are then shown by their username.
        first, last = ("" if is_visibly_empty(str(name)) else str(name)[:150] for name in (first, last))
        fields = {"first_name": first, "last_name": last, "email": claims["email"]}
        changed = [name for name, value in fields.items() if value and getattr(user, name) != value]
        for name in changed:
            setattr(user, name, fields[name])
        if changed:
            user.save(update_fields=changed)


def sign_in(request) -> dict:
    """Template context: the "Sign in with …" button when OpenID Connect is on."""
    if not settings.OIDC_ENABLED:
        return {}
    return {"oidc_provider_name": settings.OIDC_PROVIDER_NAME, "oidc_login_url": reverse("oidc_authentication_init")}


def _when_enabled(view):
    def wrapped(request, *args, **kwargs):
        if not settings.OIDC_ENABLED:
            raise Http404("Single sign-on is not configured.")
        return view(request, *args, **kwargs)

    return wrapped


urlpatterns = [
    path("oidc/authenticate/", _when_enabled(OIDCAuthenticationRequestView.as_view()), name="oidc_authentication_init"),
    path(
        "oidc/callback/", _when_enabled(OIDCAuthenticationCallbackView.as_view()), name="oidc_authentication_callback"
    ),
]
