"""Seed the demo: roles, demo people and the example targets. Safe to run any number of times."""

from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.management.base import BaseCommand

from prototypes.targets import import_example

ROLES = {
    "viewer": [],
    "maker": [],
    "moderator": ["moderate_prototype"],
    "admin": ["moderate_prototype"],
}
PEOPLE = [
    # username, full name, role, is_staff
    ("alice", "Alice Maker", "maker", False),
    ("bob", "Bob Colleague", "maker", False),
    ("carol", "Carol Viewer", "viewer", False),
    ("mo", "Mo Moderator", "moderator", False),
    ("ada", "Ada Admin", "admin", True),
]


class Command(BaseCommand):
    help = "Create the roles, the demo people (unless DEMO_USERS is off) and the example targets."

    def handle(self, *args, **options):
        for role, codenames in ROLES.items():
            group, _ = Group.objects.get_or_create(name=role)
            group.permissions.set(Permission.objects.filter(codename__in=codenames))
        if settings.DEMO_USERS:
            for username, full_name, role, staff in PEOPLE:
                first, last = full_name.split(" ", 1)
                user, created = User.objects.get_or_create(
                    username=username,
                    defaults={
                        "first_name": first,
                        "last_name": last,
                        "email": f"{username}@example.com",
                        "is_staff": staff,
                        "is_superuser": staff,
                    },  # fmt: skip
                )
                if created:
                    user.set_password(settings.DEMO_PASSWORD)
                    user.save()
                user.groups.add(Group.objects.get(name=role))
        folder = settings.EXAMPLES_DIR / "targets"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if (path / "prototype.toml").exists():
                target = import_example(path, settings.TARGET_REPO_ROOT)
                self.stdout.write(f"target {target.slug}: {target.git_url}")
