"""Expire the files of old versions now (the daily beat task does the same), or list them with --dry-run."""

from django.core.management.base import BaseCommand
from django.template.defaultfilters import filesizeformat

from prototypes import retention


class Command(BaseCommand):
    help = "Apply the retention rules (RETENTION_DAYS, RETENTION_KEEP_REVISIONS, RETENTION_MAX_BYTES) to artifacts."

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true", help="list what would expire, change nothing")

    def handle(self, *args, dry_run, **options):
        policy = retention.Policy.from_settings()
        if not policy.active:
            self.stdout.write(
                "Retention is off: RETENTION_DAYS, RETENTION_KEEP_REVISIONS and RETENTION_MAX_BYTES are 0."
            )
            return
        expiries = retention.apply_retention(policy, dry_run=dry_run)
        for item in expiries:
            artifact = item.artifact
            self.stdout.write(
                f"{artifact.pk:>7} {artifact.build.revision}  {artifact.filename}  "
                f"{filesizeformat(artifact.size)}  ({item.reason})"
            )
        total = filesizeformat(sum(item.artifact.size for item in expiries))
        verb = "Would expire" if dry_run else "Expired"
        self.stdout.write(f"{verb} {len(expiries)} file{'s' if len(expiries) != 1 else ''}, {total}.")
