from django.contrib import admin

from prototypes.models import Artifact, Build, BuildEvent, ModelCall, Prototype, Revision, Target


@admin.register(Target)
class TargetAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "kind", "enabled", "default_branch", "concurrency_limit"]
    list_filter = ["kind", "enabled"]
    search_fields = ["name", "slug", "git_url"]
    prepopulated_fields = {"slug": ["name"]}


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
    list_display = ["build", "kind", "filename", "size", "created_at"]
    list_filter = ["kind"]
    raw_id_fields = ["build"]
