from django import forms
from django.conf import settings
from django.contrib import admin, messages
from django.db import models
from django.utils.html import format_html

from prototypes.models import Artifact, Build, BuildEvent, ModelCall, Prototype, Revision, Target
from prototypes.runners import Runner, RunnerJob
from prototypes.targets import TargetError, allowed_hosts, check_target, slug_from_url


def _formfield(db_field, **kwargs):
    if isinstance(db_field, models.URLField):
        kwargs["assume_scheme"] = "https"  # Django 6's default; says so now, without a warning
    return db_field.formfield(**kwargs)


class TargetForm(forms.ModelForm):
    """Registering a target takes only its git URL: the slug comes from the repository's name, and the
    name, kind and description from its recipe (filled in by check_target after saving)."""

    class Meta:
        model = Target
        # Not recipe, recipe_error, recipe_checked_at: check_target records those.
        fields = [
            "git_url", "default_branch", "name", "slug", "kind", "description", "enabled", "recipe_override",
            "concurrency_limit", "default_attempts", "egress_hosts", "model", "github_repo", "github_api_url",
            "github_token_env",
        ]  # fmt: skip
        formfield_callback = _formfield

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, note in [("name", "Blank: the name in the recipe."), ("slug", "Blank: from the repository's name.")]:
            if name in self.fields:
                self.fields[name].required = False
                self.fields[name].help_text = note
        if "default_attempts" in self.fields:
            self.fields["default_attempts"].required = False
        if "kind" in self.fields:
            self.fields["kind"].required = False
            self.fields["kind"].choices = [("", "From the recipe")] + list(Target.Kind.choices)
            if not self.instance.pk:
                self.initial["kind"] = ""

    def clean_default_attempts(self):
        attempts = self.cleaned_data.get("default_attempts")
        if attempts is None:  # left blank: one attempt, as before attempts existed
            return 1
        if not 1 <= attempts <= settings.MAX_ATTEMPTS:
            raise forms.ValidationError(f"Choose between 1 and {settings.MAX_ATTEMPTS} attempts (MAX_ATTEMPTS).")
        return attempts

    def clean_egress_hosts(self):
        try:
            return allowed_hosts(self.cleaned_data.get("egress_hosts") or [])
        except TargetError as exc:
            raise forms.ValidationError(str(exc)) from None

    def clean(self):
        data = super().clean()
        if not data.get("slug") and data.get("git_url"):
            data["slug"] = slug_from_url(data["git_url"])
        if not data.get("slug") and "slug" in self.fields:
            self.add_error("slug", "Give the target a short name for its address.")
        return data


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    form = TargetForm
    list_display = ["name", "slug", "kind", "enabled", "offered", "default_branch", "concurrency_limit",
                    "recipe_status"]  # fmt: skip
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "slug", "git_url"]
    prepopulated_fields = {"slug": ["name"]}
    readonly_fields = ["recipe_status", "target_page", "recipe"]
    actions = ["check_recipe"]
    fieldsets = [
        (None, {
            "fields": ["git_url", "default_branch", "name", "slug", "kind", "description", "enabled"],
            "description": "Saving fetches the repository and checks its prototype.toml (docs/recipes.md); "
                           "the recipe fills in the name, kind and description left blank.",
        }),
        ("Recipe", {"fields": ["recipe_status", "target_page", "recipe", "recipe_override"]}),
        ("Builds", {"fields": ["concurrency_limit", "default_attempts", "egress_hosts", "model"]}),
        ("GitHub", {"fields": ["github_repo", "github_api_url", "github_token_env"]}),
    ]  # fmt: skip

    def formfield_for_dbfield(self, db_field, request, **kwargs):
        if isinstance(db_field, models.URLField):
            kwargs["assume_scheme"] = "https"
        return super().formfield_for_dbfield(db_field, request, **kwargs)

    @admin.display(description="Offered to makers", boolean=True)
    def offered(self, target):
        return target.state == Target.State.READY

    @admin.display(description="Target page")
    def target_page(self, target):
        if not target.pk:
            return "After saving: its last check, recipe, builds and success rate."
        return format_html('<a href="{}">Last check, recipe, builds and success rate</a>', target.get_absolute_url())

    @admin.display(description="Recipe")
    def recipe_status(self, target):
        if target.recipe_checked_at is None:
            return "Not checked yet"
        when = target.recipe_checked_at.strftime("%Y-%m-%d %H:%M")
        return f"✗ {target.recipe_error}" if target.recipe_error else f"✓ valid (checked {when})"

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        self._check(request, obj)

    @admin.action(description="Check recipe")
    def check_recipe(self, request, queryset):
        for target in queryset:
            self._check(request, target)

    def _check(self, request, target: Target) -> None:
        problem = check_target(target)
        if problem:
            messages.error(request, f"{target}: the recipe was not accepted, so makers are not offered it until "
                                    f"a check passes. {problem}")  # fmt: skip
            return
        source = "prototype.toml" if target.recipe else "The recipe override"
        messages.success(request, f"{target}: {source} is valid.")
        if target.recipe and target.recipe_override.strip():
            messages.warning(
                request, f"{target}: the repository has a prototype.toml, so the recipe override is ignored."
            )


class RevisionInline(admin.TabularInline):
    model = Revision
    fk_name = "prototype"
    extra = 0
    fields = ["number", "prompt", "author", "result_commit", "created_at"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Prototype)
class PrototypeAdmin(admin.ModelAdmin):
    list_display = ["title", "slug", "owner", "target", "visibility", "listing", "created_at"]
    list_filter = ["visibility", "listing", "target"]
    search_fields = ["title", "slug", "summary", "owner__username"]
    raw_id_fields = ["owner", "forked_from", "current_revision"]
    inlines = [RevisionInline]


class BuildInline(admin.TabularInline):
    model = Build
    extra = 0
    fields = ["attempt", "state", "error_code", "cost", "created_at"]
    readonly_fields = fields
    show_change_link = True


@admin.register(Revision)
class RevisionAdmin(admin.ModelAdmin):
    list_display = ["__str__", "author", "result_commit", "created_at"]
    search_fields = ["prompt", "summary", "prototype__title"]
    raw_id_fields = ["prototype", "parent", "author"]
    inlines = [BuildInline]


class ArtifactInline(admin.TabularInline):
    model = Artifact
    extra = 0
    fields = ["kind", "filename", "size", "sha256"]
    readonly_fields = fields


@admin.register(Build)
class BuildAdmin(admin.ModelAdmin):
    list_display = ["pk", "revision", "attempt", "state", "error_code", "cost", "turns", "created_at"]
    list_filter = ["state", "error_code", "charged", "replayed"]
    raw_id_fields = ["revision"]
    readonly_fields = ["state"]  # states change only through Build.move
    inlines = [ArtifactInline]


@admin.register(BuildEvent)
class BuildEventAdmin(admin.ModelAdmin):
    list_display = ["build", "seq", "kind", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["build"]


@admin.register(ModelCall)
class ModelCallAdmin(admin.ModelAdmin):
    list_display = ["build", "turn", "model", "input_tokens", "cache_read_tokens", "output_tokens", "cost"]
    raw_id_fields = ["build"]


@admin.register(Artifact)
class ArtifactAdmin(admin.ModelAdmin):
    list_display = ["build", "kind", "filename", "size", "pinned", "expired_at", "created_at"]
    list_filter = ["kind", "pinned", ("expired_at", admin.EmptyFieldListFilter)]
    raw_id_fields = ["build"]
    actions = ["pin", "unpin"]

    @admin.action(description="Pin: keep whatever the retention rules say")
    def pin(self, request, queryset):
        count = queryset.filter(expired_at__isnull=True).update(pinned=True)
        messages.success(request, f"Pinned {count} artifact{'s' if count != 1 else ''} (expired ones cannot be).")

    @admin.action(description="Unpin: let the retention rules apply")
    def unpin(self, request, queryset):
        count = queryset.update(pinned=False)
        messages.success(request, f"Unpinned {count} artifact{'s' if count != 1 else ''}.")


class RunnerForm(forms.ModelForm):
    """Registering a build runner: its name and the labels its token may serve. The token is made on
    saving and shown once (docs/runners.md)."""

    labels_text = forms.CharField(label="Labels", help_text="Comma-separated, like macos, xcode: the runner takes "
                                  "only jobs whose labels are all among these.")  # fmt: skip

    class Meta:
        model = Runner
        fields = ["name"]

    def clean_labels_text(self) -> list[str]:
        from agents.recipe import RUNNER_LABEL

        labels = [label.strip() for label in self.cleaned_data["labels_text"].split(",") if label.strip()]
        bad = [label for label in labels if not RUNNER_LABEL.fullmatch(label)]
        if not labels or bad:
            raise forms.ValidationError(f"Not runner labels: {', '.join(bad) or '(none given)'}. Use lower-case "
                                        "letters, digits and -, like macos.")  # fmt: skip
        return labels


@admin.register(Runner)
class RunnerAdmin(admin.ModelAdmin):
    list_display = ["name", "labels", "hint", "last_seen_at", "last_address", "revoked_at"]
    readonly_fields = ["labels", "hint", "created_by", "created_at", "last_seen_at", "last_address", "revoked_at"]
    actions = ["revoke"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:  # registering: a name and labels; the token comes from Runner.register
            kwargs["form"] = RunnerForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        return ["name", "labels_text"] if obj is None else ["name", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.readonly_fields

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        runner, token = Runner.register(name=form.cleaned_data["name"], labels=form.cleaned_data["labels_text"],
                                        created_by=request.user)  # fmt: skip
        obj.pk, obj.id = runner.pk, runner.pk
        messages.warning(request, f"Runner {runner.name} registered. Its token, shown only now: {token} — start it "
                         f"with RUNNER_TOKEN={token} python -m agents runner --store URL --labels "
                         f"{','.join(runner.labels)} (docs/runners.md).")  # fmt: skip

    @admin.action(description="Revoke the selected runners' tokens")
    def revoke(self, request, queryset):
        for runner in queryset:
            runner.revoke()
        messages.success(request, f"Revoked {queryset.count()} runner token(s): they are refused from now on.")


@admin.register(RunnerJob)
class RunnerJobAdmin(admin.ModelAdmin):
    list_display = ["pk", "build", "step", "labels", "state", "runner", "attempts", "exit_code", "error_code",
                    "created_at"]  # fmt: skip
    list_filter = ["state", "step"]
    readonly_fields = [f.name for f in RunnerJob._meta.fields]
