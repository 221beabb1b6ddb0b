"""Register and look after targets from the command line:

    manage.py target add --git URL [--branch B] [--slug S] [--name N] [--recipe FILE] [--allow-host H ...]
    manage.py target check SLUG [SLUG ...] | --all
    manage.py target list
    manage.py target disable SLUG / target enable SLUG

`add` and `check` run the recipe check at once and exit non-zero when it fails: the target then stays
out of makers' reach until a check passes (prototypes/targets.py does the work)."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from prototypes.models import Target
from prototypes.targets import TargetError, read_recipe, recipe_lines, register_target
from prototypes.targets import check_target as run_check


class Command(BaseCommand):
    help = "Register a repository as a target, check targets' recipes, list them, switch them off or on."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="add|check|list|disable|enable")
        add = actions.add_parser("add", help="Register a repository and check its recipe.")
        add.add_argument("--git", required=True, metavar="URL", help="A URL git can fetch, or a path on the workers.")
        add.add_argument("--branch", default="", help="The branch prototypes start from (default: main).")
        add.add_argument("--slug", default="", help="The target's short name (default: from the URL).")
        add.add_argument("--name", default="", help="The name people see (default: the recipe's).")
        add.add_argument("--recipe", metavar="FILE", help="A prototype.toml to use when the repository has none.")
        add.add_argument("--allow-host", dest="hosts", action="extend", nargs="+", metavar="H",
                         help="A host setup commands may reach (pypi.org, *.example.com); may be repeated.")  # fmt: skip
        check = actions.add_parser("check", help="Read the recipe again and check it.")
        check.add_argument("slugs", nargs="*", metavar="SLUG")
        check.add_argument("--all", dest="every", action="store_true", help="Check every target.")
        actions.add_parser("list", help="Every target with its state, last check and problem.")
        for verb, what in [("disable", "Switch a target off: makers are no longer offered it."),
                           ("enable", "Switch a target back on (it is offered once its check passes).")]:  # fmt: skip
            actions.add_parser(verb, help=what).add_argument("slug", metavar="SLUG")

    def handle(self, *args, action: str, **options):
        getattr(self, f"handle_{action}")(**options)

    # --- the verbs ---------------------------------------------------------------------------------

    def handle_add(self, *, git: str, branch: str, slug: str, name: str, recipe: str | None, hosts, **_):
        override = None
        if recipe is not None:
            try:
                override = Path(recipe).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise CommandError(f"Could not read the recipe file {recipe}: {exc}") from None
        try:
            target, problem, created = register_target(
                git, branch=branch, slug=slug, name=name, recipe_override=override, egress_hosts=hosts
            )
        except TargetError as exc:
            raise CommandError(str(exc).replace("choose another", "choose another with --slug")) from None
        verb = "Registered" if created else "Updated"
        self.stdout.write(f"{verb} target '{target.slug}' from {target.git_url} (branch {target.default_branch}).")
        self._report(target, problem)

    def handle_check(self, *, slugs: list[str], every: bool, **_):
        if not slugs and not every:
            raise CommandError("Name the targets to check (their slugs), or give --all.")
        targets = list(Target.objects.order_by("slug")) if every else [self._target(slug) for slug in slugs]
        failed = []
        for target in targets:
            self.stdout.write(f"Checking '{target.slug}' ({target.git_url}, branch {target.default_branch})…")
            problem = run_check(target)
            try:
                self._report(target, problem)
            except CommandError as exc:
                self.stderr.write(str(exc))
                failed.append(target.slug)
        if failed:
            raise CommandError(f"The check failed for: {', '.join(failed)}.")

    def handle_list(self, **_):
        rows = [("SLUG", "KIND", "STATE", "LAST CHECK", "PROBLEM")]
        for target in Target.objects.order_by("slug"):
            when = target.recipe_checked_at.strftime("%Y-%m-%d %H:%M") if target.recipe_checked_at else "never"
            rows.append((target.slug, target.kind, target.state, when, " ".join(target.recipe_error.split())))
        if len(rows) == 1:
            self.stdout.write("No targets yet: register one with `manage.py target add --git URL`.")
            return
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        for row in rows:
            self.stdout.write(
                "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[4]
            )

    def handle_disable(self, *, slug: str, **_):
        self._switch(slug, False)

    def handle_enable(self, *, slug: str, **_):
        self._switch(slug, True)

    # --- helpers -----------------------------------------------------------------------------------

    def _target(self, slug: str) -> Target:
        target = Target.objects.filter(slug=slug).first()
        if target is None:
            raise CommandError(f"There is no target '{slug}'. `manage.py target list` shows them.")
        return target

    def _switch(self, slug: str, enabled: bool) -> None:
        target = self._target(slug)
        target.enabled = enabled
        target.save(update_fields=["enabled"])
        if not enabled:
            self.stdout.write(f"'{slug}' is switched off: makers are not offered it until it is enabled again.")
        elif target.state == Target.State.READY:
            self.stdout.write(f"'{slug}' is switched on: makers can build on it.")
        else:
            self.stdout.write(f"'{slug}' is switched on, but not offered yet: {target.get_state_display().lower()}. "
                              f"Run `manage.py target check {slug}`.")  # fmt: skip

    def _report(self, target: Target, problem: str | None) -> None:
        """Print what the check found; raise CommandError (a non-zero exit) when it failed."""
        if problem:
            if "“Recipe override”" in problem:  # the admin page's field: say how to give it from here
                problem += " (Here: `manage.py target add --git URL --recipe FILE` sets the recipe override.)"
            raise CommandError(
                f"Problem: {problem}\n'{target.slug}' stays disabled: makers are not offered it until "
                f"`manage.py target check {target.slug}` passes."
            )
        recipe, source = read_recipe(target)
        self.stdout.write(f"Recipe ({source}):")
        for label, value in recipe_lines(recipe):
            self.stdout.write(f"  {label + ':':<10} {value}")
        if target.recipe and target.recipe_override.strip():
            self.stdout.write("Note: the repository has a prototype.toml, so the recipe override is not used.")
        if target.state == Target.State.READY:
            self.stdout.write(self.style.SUCCESS("ready: makers can build on it."))
        else:
            self.stdout.write(f"The recipe is valid, but '{target.slug}' is switched off by an admin: "
                              f"`manage.py target enable {target.slug}` offers it to makers.")  # fmt: skip
