"""Who may DO what: the one table of role → actions.

Who may SEE what is `visible_to` (prototypes/models.py). This module answers the other question: given
that a person sees a prototype, may they build on it, share it, graduate it, edit it, moderate it?
Pages, the API, the build entry points (prototypes/builds.py) and the templates all ask `can` (or
`require`); the authorization matrix test derives its expectations from `ROLE_ACTIONS`.

Roles are Django groups named after the roles; a person may hold several and their actions add up.
Every action beyond the viewer's is backed by a permission on the Prototype model
(`prototypes.<codename>`), given to the role groups from this table by `sync_role_groups` — run after
every `migrate` (so existing databases follow the table), by `manage.py seed` and at sign-in through
the identity provider. Templates can therefore test `perms.prototypes.build_prototype`.

The viewer's actions need no permission: every signed-in, active person holds them, whatever their
groups say, so an account nobody gave a role to is a viewer and can never build. Admins are
superusers: Django answers every permission check with yes for them.

Ownership rules (only the owner asks for changes, shares, graduates) stay where they are; this table
is the role half of every such check, never a replacement for the visibility or ownership half.
"""

from __future__ import annotations

# What a viewer does: browse the store, try prototypes (previews, downloads, installs), comment, react
# and flag. Every signed-in person may do these.
VIEWER_ACTIONS = frozenset({"browse", "try", "comment", "react", "flag"})
# build: start a prototype, ask for a change, send feedback to the agent, remix, retry a build.
MAKER_ACTIONS = frozenset({"build", "share", "graduate", "edit"})

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    "viewer": VIEWER_ACTIONS,
    "maker": VIEWER_ACTIONS | MAKER_ACTIONS,
    "moderator": VIEWER_ACTIONS | {"moderate"},
    "admin": VIEWER_ACTIONS | MAKER_ACTIONS | {"moderate"},
}
ROLES = tuple(ROLE_ACTIONS)
BASELINE_ROLE = "viewer"
ACTIONS = frozenset().union(*ROLE_ACTIONS.values())

# action -> (permission codename on Prototype, its name in the admin), for actions beyond the baseline.
PERMISSIONS = {
    "build": ("build_prototype", "Can make prototypes, ask for changes, remix and retry builds"),
    "share": ("share_prototype", "Can share own prototypes by link"),
    "graduate": ("graduate_prototype", "Can open pull requests from own prototypes"),
    "edit": ("edit_prototype", "Can edit own prototypes' store pages and choose their current version"),
    "moderate": ("moderate_prototype", "Can moderate prototypes"),
}
MODEL_PERMISSIONS = list(PERMISSIONS.values())  # Prototype.Meta.permissions

_ASK = "Ask an admin for the maker role if you need it."
REFUSALS = {
    "build": f"Your role lets you try prototypes and give feedback, not build them. {_ASK}",
    "share": f"Your role does not let you share prototypes by link. {_ASK}",
    "graduate": f"Your role does not let you open pull requests. {_ASK}",
    "edit": f"Your role does not let you edit prototypes. {_ASK}",
    "moderate": "Only moderators can do this.",
}
SIGN_IN = "Sign in first."

assert set(PERMISSIONS) == ACTIONS - VIEWER_ACTIONS, "every action beyond the viewer's needs a permission"


class NotAllowed(Exception):
    """The person may not do this; the message says why in plain words."""


def permission(action: str) -> str:
    """The permission behind an action, as `user.has_perm` and templates' `perms` name it."""
    return f"prototypes.{PERMISSIONS[action][0]}"


def can(user, action: str) -> bool:
    """May this person do `action` (one of ACTIONS) at all, by their roles? Who owns or sees the
    prototype is the caller's other half of the question."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}")  # a typo must not quietly refuse (or allow) forever
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    if action in ROLE_ACTIONS[BASELINE_ROLE]:
        return True
    return user.has_perm(permission(action))


def require(user, action: str) -> None:
    """Raise NotAllowed with the plain reason unless the person's roles allow `action`."""
    if not can(user, action):
        raise NotAllowed(refusal(user, action))


def refusal(user, action: str) -> str:
    """The plain reason `require` would give."""
    return REFUSALS.get(action, SIGN_IN) if user is not None and user.is_authenticated else SIGN_IN


def role_group(role: str, *, using: str = "default"):
    """The group for a role, created when missing, with exactly the table's permissions."""
    from django.contrib.auth.models import Group, Permission

    group, _ = Group.objects.using(using).get_or_create(name=role)
    codenames = [PERMISSIONS[action][0] for action in ROLE_ACTIONS[role] if action in PERMISSIONS]
    ours = Permission.objects.using(using).filter(
        content_type__app_label="prototypes", codename__in=[code for code, _name in PERMISSIONS.values()]
    )
    # Only the action permissions are managed here: anything else an admin gave the group stays.
    group.permissions.remove(*ours.exclude(codename__in=codenames))
    group.permissions.add(*ours.filter(codename__in=codenames))
    return group


def sync_role_groups(*, using: str = "default", **_kwargs) -> None:
    """Make every role group carry exactly the table's permissions (a post_migrate receiver too)."""
    for role in ROLES:
        role_group(role, using=using)
