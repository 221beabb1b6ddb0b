"""Seed the demo: roles, demo people and the example targets. Safe to run any number of times."""

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management.base import BaseCommand

from prototypes.access import role_group, sync_role_groups
from prototypes.targets import import_example

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
        sync_role_groups()  # the groups and their permissions, from the role table (prototypes/access.py)
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
                user.groups.add(role_group(role))
        folder = settings.EXAMPLES_DIR / "targets"
        for path in sorted(folder.iterdir()) if folder.is_dir() else []:
            if (path / "prototype.toml").exists():
                target = import_example(path, settings.TARGET_REPO_ROOT)
                self.stdout.write(f"target {target.slug}: {target.git_url}")
