"""The REST API for making prototypes: targets, prototypes, revisions, builds with their events, and
artifacts (wired under /api/ by store/api_urls.py; the storefront's part is store/api.py).

Who may see what comes from the same `visible_to(user)` querysets the pages use. Lists use the
default: only what this person sees listed. A prototype shared by link opens by its slug
(/api/prototypes/<slug>/: knowing the slug is having the link) but never shows up in a list. Its
revisions, builds, artifacts, comments and reactions are reached with `?prototype=<slug>`, on a list
or on one of them by id: ids are sequential, so an id alone never reveals a link-only prototype
(`PrototypeQuerySet.reachable_by`), and the `url` of such a thing carries the slug for whoever was
given it. Private or taken-down work answers 404 exactly as if it did not exist.

Starting and stopping builds goes through prototypes/builds.py; its `NotAllowed` becomes a 403 with
the same plain message the pages show (store/api_errors.py)."""

from __future__ import annotations

from urllib.parse import urlencode

from django.db.models import QuerySet
from django.http import Http404
from django.utils.text import slugify
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_field, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import APIException, NotFound, PermissionDenied
from rest_framework.response import Response
from rest_framework.settings import api_settings

from prototypes import access, builds, targets
from prototypes.api_permissions import AdminOnly
from prototypes.builds import MAX_IDEA_CHARS
from prototypes.downloads import serve_file
from prototypes.inputs import ID_MAX, parse_int, require_visible_text
from prototypes.models import Artifact, Build, BuildEvent, Prototype, Revision, Tag, Target, not_a_git_option

EVENTS_PER_CALL = 500
MAX_TAGS = 10


class Conflict(APIException):
    """The request is understood but the thing is not in a state for it (cancelling a finished build)."""

    status_code = status.HTTP_409_CONFLICT
    default_detail = "That cannot be done in its current state."
    default_code = "conflict"


def visible_prototypes(user, *, by_link: bool = False, slug: str = "") -> QuerySet[Prototype]:
    """The prototypes behind what a request may see; naming one by its slug counts as having its link."""
    if slug:
        return Prototype.objects.reachable_by(user, slug=slug)
    return Prototype.objects.visible_to(user, by_link=by_link)


def param(request, name: str) -> str:
    """A query parameter as given, less NUL characters (which PostgreSQL refuses in any text)."""
    return request.query_params.get(name, "").replace("\x00", "").strip()


def int_param(request, name: str) -> int | None:
    """A whole-number query parameter (an id): None when it is not given, a 400 naming it when it is not
    a number an id can be (the one rule for numbers people type: prototypes/inputs.py)."""
    value = param(request, name)
    if not value:
        return None
    number = parse_int(value)
    if number is None:
        raise serializers.ValidationError({name: [f"Give a whole number between 0 and {ID_MAX}."]})
    return number


def owner_or_admin(request, prototype: Prototype) -> bool:
    return request.user.is_superuser or prototype.owner_id == request.user.pk


PROTOTYPE_PARAM = OpenApiParameter(
    "prototype", str, description="Only those of this prototype (its slug); works for prototypes shared by link."
)
LINK_PARAM = OpenApiParameter(
    "prototype", str, description="The prototype's slug: needed to reach one of a prototype shared by link."
)


class ThroughPrototype:
    """For viewsets of things that belong to a prototype: what the person may see of them. By id alone
    never through a link; with `?prototype=<slug>` as that prototype's page allows (also narrowing a list)."""

    def link_slug(self) -> str:
        return param(self.request, "prototype")

    def visible_prototypes(self) -> QuerySet[Prototype]:
        return visible_prototypes(self.request.user, slug=self.link_slug())


# --- fields ----------------------------------------------------------------------------------------


class SlugField(serializers.SlugRelatedField):
    """A SlugRelatedField that answers "does not exist" for text no slug can hold (PostgreSQL refuses NULs)."""

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data.replace("\x00", ""))
        return super().to_internal_value(data)


class OfferedTargetField(SlugField):
    """A target makers are offered (`Target.objects.offered()`), named by its slug. One that is not
    offered is refused with the reason, so a script hears why instead of a bare "does not exist"."""

    default_error_messages = {
        "does_not_exist": "There is no app “{value}” to build on. GET /api/targets/ lists them.",
        "invalid": "Give the app's slug.",
    }

    def __init__(self, **kwargs):
        super().__init__(slug_field="slug", queryset=Target.objects.all(), **kwargs)

    def to_internal_value(self, data):
        target = super().to_internal_value(data)
        if refusal := target.refusal():
            raise serializers.ValidationError(refusal)
        return target


class VisiblePrototypeField(SlugField):
    """A prototype named by its slug, among those the person may open (by link included)."""

    default_error_messages = {
        "does_not_exist": "There is no prototype “{value}”, or you are not allowed to see it.",
        "invalid": "Give the prototype's slug.",
    }

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Prototype.objects.none())  # the model, for the schema; see get_queryset
        super().__init__(slug_field="slug", **kwargs)

    def get_queryset(self):
        return Prototype.objects.visible_to(self.context["request"].user, by_link=True)


class InPrototypeIdentityField(serializers.HyperlinkedIdentityField):
    """The API address of a thing inside a prototype. For a link-only prototype it carries
    `?prototype=<slug>`, since its id alone opens nothing for people who only have the link."""

    def __init__(self, *, prototype: str, **kwargs):
        self.prototype_path = prototype.split(".")
        super().__init__(**kwargs)

    def get_url(self, obj, view_name, request, format):
        url = super().get_url(obj, view_name, request, format)
        prototype = obj
        for name in self.prototype_path:
            prototype = getattr(prototype, name)
        if url and prototype.visibility == Prototype.Visibility.LINK:
            url += "?" + urlencode({"prototype": prototype.slug})
        return url


@extend_schema_field(OpenApiTypes.URI)
class PageField(serializers.ReadOnlyField):
    """The address of the thing's page in the store, for people."""

    def __init__(self, **kwargs):
        super().__init__(source="*", **kwargs)

    def to_representation(self, value):
        return self.context["request"].build_absolute_uri(value.get_absolute_url())


@extend_schema_field({"type": "array", "items": {"type": "string"}, "maxItems": MAX_TAGS})
class TagsField(serializers.Field):
    """Tags as a list of words, each made into a slug ("Audio Player" → "audio-player"); at most ten."""

    default_error_messages = {"invalid": "Give the tags as a list of words.", "too_many": "Use at most 10 tags."}

    def to_representation(self, value):
        return [tag.name for tag in value.all()]

    def to_internal_value(self, data):
        if not isinstance(data, list) or not all(isinstance(word, str) for word in data):
            self.fail("invalid")
        names = {slugify(word)[:40] for word in data} - {""}
        if len(names) > MAX_TAGS:
            self.fail("too_many")
        return sorted(names)


class VersionSerializer(serializers.Serializer):
    prototype = serializers.CharField(help_text="The prototype's slug.")
    number = serializers.IntegerField(help_text="The version (revision) number.")


# --- serializers -----------------------------------------------------------------------------------


class TargetSerializer(serializers.ModelSerializer):
    class Meta:
        model = Target
        fields = ["slug", "name", "kind", "description", "default_branch", "enabled"]


class TargetAdminSerializer(serializers.ModelSerializer):
    """A target as admins register, change and read it. Creating one, or changing where its recipe comes
    from (git_url, default_branch, recipe_override), runs the recipe check at once: the answer carries
    its result in `state`, `problem` and `checked_at`, and only a `ready` target is offered to makers."""

    page = serializers.SerializerMethodField(help_text="The admins' page of the target.")
    state = serializers.ChoiceField(choices=Target.State.choices, read_only=True,
                                    help_text="ready: offered to makers; otherwise why not.")  # fmt: skip
    problem = serializers.CharField(source="recipe_error", read_only=True,
                                    help_text="What the last check found wrong; empty when it passed.")  # fmt: skip
    checked_at = serializers.DateTimeField(source="recipe_checked_at", read_only=True, allow_null=True)
    egress_hosts = serializers.ListField(
        child=serializers.CharField(max_length=253), required=False, max_length=100,
        help_text="Hosts setup commands may reach, like pypi.org or *.example.com.",
    )  # fmt: skip

    class Meta:
        model = Target
        fields = ["page", "slug", "name", "kind", "description", "git_url", "default_branch", "enabled",
                  "recipe_override", "egress_hosts", "model", "concurrency_limit", "github_repo", "github_api_url",
                  "github_token_env", "state", "problem", "checked_at", "recipe"]  # fmt: skip
        read_only_fields = ["kind", "recipe"]
        extra_kwargs = {
            "slug": {"required": False, "help_text": "Its short name in addresses; default: from the git URL."},
            "name": {"required": False, "allow_blank": True, "help_text": "Default: the name in its recipe."},
            "git_url": {"validators": [require_visible_text, not_a_git_option]},
            "default_branch": {"validators": [require_visible_text, not_a_git_option]},
        }

    CHECKED = ("git_url", "default_branch", "recipe_override")  # where the recipe comes from

    @extend_schema_field(OpenApiTypes.URI)
    def get_page(self, target) -> str:
        return self.context["request"].build_absolute_uri(target.get_absolute_url())

    def validate_egress_hosts(self, hosts):
        try:
            return targets.allowed_hosts(hosts)
        except targets.TargetError as exc:
            raise serializers.ValidationError(str(exc)) from None

    def validate(self, data):
        if self.instance is not None and data.get("slug", self.instance.slug) != self.instance.slug:
            # Builds' results live in the mirror named after the slug (prototypes/targets.mirror_path).
            raise serializers.ValidationError(
                {"slug": ["A target's slug cannot change: its builds are kept under it."]}
            )
        if self.instance is None and not data.get("slug"):
            slug = targets.slug_from_url(data.get("git_url", ""))
            if not slug:
                raise serializers.ValidationError({"slug": ["No slug can be made from the git URL: give one."]})
            if Target.objects.filter(slug=slug).exists():
                raise serializers.ValidationError({"slug": [f"There is already a target “{slug}”: give another slug."]})
            data["slug"] = slug
        return data

    def create(self, validated_data):
        target = super().create(validated_data)
        targets.check_target(target)
        return target

    def update(self, instance, validated_data):
        moved = any(name in validated_data and validated_data[name] != getattr(instance, name) for name in self.CHECKED)
        target = super().update(instance, validated_data)
        if moved:
            targets.check_target(target)
        return target


class PrototypeSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:prototype-detail", lookup_field="slug")
    page = PageField()
    owner = serializers.SlugRelatedField(slug_field="username", read_only=True)
    target = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    tags = TagsField(required=False)
    current_revision = serializers.IntegerField(
        source="current_revision.number", read_only=True, allow_null=True,
        help_text="The number of the version people see.",
    )  # fmt: skip
    forked_from = serializers.SerializerMethodField(
        help_text="The version this one was remixed from, if you may see it."
    )

    class Meta:
        model = Prototype
        fields = ["url", "page", "slug", "title", "summary", "description", "owner", "target", "visibility", "listing",
                  "tags", "current_revision", "forked_from", "comments_locked", "created_at", "updated_at"]  # fmt: skip
        read_only_fields = ["slug", "summary", "listing", "comments_locked", "created_at", "updated_at"]
        extra_kwargs = {"title": {"validators": [require_visible_text]}}

    @extend_schema_field(VersionSerializer(allow_null=True))
    def get_forked_from(self, prototype):
        source = prototype.forked_from
        if source is None:
            return None
        user = self.context["request"].user
        # Not through a link: a remix must not hand out a link-only source's slug to all who see it.
        if not Prototype.objects.visible_to(user).filter(pk=source.prototype_id).exists():
            return None
        return {"prototype": source.prototype.slug, "number": source.number}

    def update(self, instance, validated_data):
        tags = validated_data.pop("tags", None)
        visibility = validated_data.pop("visibility", None)
        for name, value in validated_data.items():
            setattr(instance, name, value)
        fields = [*validated_data, "updated_at"]
        if visibility is not None:
            instance.set_visibility(visibility)  # becoming link-only gives it a new, unguessable slug
            fields += ["visibility", "slug"]
        instance.save(update_fields=fields)
        if tags is not None:
            instance.tags.set([Tag.objects.get_or_create(name=name)[0] for name in tags])
        return instance


class BuildSerializer(serializers.ModelSerializer):
    url = InPrototypeIdentityField(view_name="api:build-detail", prototype="revision.prototype")
    page = PageField()
    prototype = serializers.SlugRelatedField(source="revision.prototype", slug_field="slug", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True, help_text="The version built.")
    state_label = serializers.CharField(source="get_state_display", read_only=True)
    error_detail = serializers.CharField(read_only=True, help_text="Technical detail; only for the owner.")

    class Meta:
        model = Build
        fields = ["url", "page", "id", "prototype", "revision", "attempt", "state", "state_label", "error_code",
                  "error_message", "error_detail", "charged", "replayed", "cancel_requested", "created_at",
                  "started_at", "finished_at", "input_tokens", "output_tokens", "cache_write_tokens",
                  "cache_read_tokens", "cost", "turns"]  # fmt: skip
        read_only_fields = fields

    def to_representation(self, build):
        data = super().to_representation(build)
        if not owner_or_admin(self.context["request"], build.revision.prototype):
            data["error_detail"] = ""
        return data


class BuildEventSerializer(serializers.ModelSerializer):
    class Meta:
        model = BuildEvent
        fields = ["seq", "kind", "data", "created_at"]
        read_only_fields = fields


class RevisionSerializer(serializers.ModelSerializer):
    url = InPrototypeIdentityField(view_name="api:revision-detail", prototype="prototype")
    prototype = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    parent = serializers.IntegerField(source="parent.number", read_only=True, allow_null=True)
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Revision
        fields = ["url", "id", "prototype", "number", "parent", "prompt", "author", "summary", "diffstat",
                  "base_commit", "result_commit", "branch", "pull_request_url", "created_at"]  # fmt: skip
        read_only_fields = fields


class ArtifactSerializer(serializers.ModelSerializer):
    url = InPrototypeIdentityField(view_name="api:artifact-detail", prototype="build.revision.prototype")
    download = InPrototypeIdentityField(view_name="api:artifact-download", prototype="build.revision.prototype")
    build = serializers.PrimaryKeyRelatedField(read_only=True)
    prototype = serializers.SlugRelatedField(source="build.revision.prototype", slug_field="slug", read_only=True)
    revision = serializers.IntegerField(source="build.revision.number", read_only=True)

    class Meta:
        model = Artifact
        fields = ["url", "download", "id", "build", "prototype", "revision", "kind", "filename", "size", "sha256",
                  "content_type", "metadata", "pinned", "expired_at", "created_at"]  # fmt: skip
        read_only_fields = fields


class AttemptsField(serializers.IntegerField):
    """How many attempts of the idea to build side by side; prototypes/builds.py checks it against
    MAX_ATTEMPTS and the budget (a 403 in plain words), so the limit is said in one place."""

    def __init__(self, **kwargs):
        kwargs.setdefault("help_text", "Attempts of the idea built side by side and ranked; the answer is the "
                          "first. Default: the app's own default (usually 1).")  # fmt: skip
        super().__init__(required=False, default=None, allow_null=True, min_value=1, **kwargs)


class NewPrototypeSerializer(serializers.Serializer):
    """Start a prototype; the answer is its first build, queued."""

    target = OfferedTargetField(help_text="The app to build on (a target's slug).")
    idea = serializers.CharField(max_length=MAX_IDEA_CHARS, validators=[require_visible_text],
                                 help_text="What it should do, in plain words.")  # fmt: skip
    title = serializers.CharField(max_length=120, required=False, default="", allow_blank=True)
    visibility = serializers.ChoiceField(choices=Prototype.Visibility.choices, default=Prototype.Visibility.COMPANY)
    attempts = AttemptsField()

    def to_representation(self, build):
        return BuildSerializer(build, context=self.context).data


class IdeaSerializer(serializers.Serializer):
    idea = serializers.CharField(max_length=MAX_IDEA_CHARS, validators=[require_visible_text],
                                 help_text="What should be different, in plain words.")  # fmt: skip
    attempts = AttemptsField()


class RemixSerializer(IdeaSerializer):
    title = serializers.CharField(max_length=120, required=False, default="", allow_blank=True)


# --- viewsets --------------------------------------------------------------------------------------


@extend_schema_view(
    list=extend_schema(description="The apps makers can build on. Admins see every target, each with the "
                       "fields of a registered one (state, problem, git_url…)."),
    create=extend_schema(description="Register a repository (admins only). Its recipe is checked at once: "
                         "`state` and `problem` in the answer say whether makers can build on it."),
    partial_update=extend_schema(description="Change a target (admins only). Changing git_url, default_branch "
                                 "or recipe_override checks its recipe again at once."),
)  # fmt: skip
class TargetViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin, viewsets.ReadOnlyModelViewSet):
    """The apps prototypes are built on. Makers see those offered to them (`Target.objects.offered()`);
    admins see every target with its state, and register and change them."""

    queryset = Target.objects.none()  # for the schema; see get_queryset
    lookup_field = "slug"
    http_method_names = ["get", "post", "patch", "head", "options"]
    permission_classes = [*api_settings.DEFAULT_PERMISSION_CLASSES, AdminOnly]
    admin_actions = {"create", "update", "partial_update"}
    admin_refusal = "Only admins can register targets or change them."

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False) or "\x00" in self.kwargs.get("slug", ""):
            return Target.objects.none()  # (no slug holds a NUL, and PostgreSQL refuses to look for one)
        every = Target.objects.order_by("name", "pk")
        return every if self.request.user.is_superuser else every.offered()

    def get_serializer_class(self):
        if self.action in self.admin_actions or self.request.user.is_superuser:
            return TargetAdminSerializer
        return TargetSerializer


@extend_schema_view(
    list=extend_schema(parameters=[
        OpenApiParameter("target", str, description="A target's slug."),
        OpenApiParameter("kind", str, enum=Target.Kind.values, description="The kind of app."),
        OpenApiParameter("owner", str, description="The owner's username."),
        OpenApiParameter("tag", str),
        OpenApiParameter("visibility", str, enum=Prototype.Visibility.values),
        OpenApiParameter("listing", str, enum=Prototype.Listing.values),
        OpenApiParameter("q", str, description="Words in the title, summary, description or any idea asked."),
    ]),
    create=extend_schema(
        request=NewPrototypeSerializer, responses={201: BuildSerializer},
        description="Start a prototype from an idea. The answer is its first build, queued: follow it at its `url`.",
    ),
    partial_update=extend_schema(description="Edit the store page: title, description, visibility, tags (the owner only)."),
)  # fmt: skip
class PrototypeViewSet(
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """Prototypes: the listed ones and your own; one shared by link opens by its slug."""

    queryset = Prototype.objects.none()  # for the schema; see get_queryset
    lookup_field = "slug"
    http_method_names = ["get", "post", "patch", "head", "options"]
    role_actions = {"create": "build", "change": "build", "update": "edit", "partial_update": "edit"}
    FILTERS = {"target": "target__slug", "kind": "target__kind", "owner": "owner__username", "tag": "tags__name",
               "visibility": "visibility", "listing": "listing"}  # fmt: skip

    def search(self, queryset, words: str):
        """Narrow to prototypes matching the words (the store hands in its catalog search)."""
        return queryset.filter(title__icontains=words)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False) or "\x00" in self.kwargs.get("slug", ""):
            return Prototype.objects.none()  # (no slug holds a NUL, and PostgreSQL refuses to look for one)
        queryset = visible_prototypes(self.request.user, by_link=self.detail)
        if not self.detail:
            for name, lookup in self.FILTERS.items():
                if param(self.request, name):
                    queryset = queryset.filter(**{lookup: param(self.request, name)})
            if param(self.request, "q"):
                queryset = self.search(queryset, param(self.request, "q")[:200])
        return (
            queryset.select_related("owner", "target", "current_revision", "forked_from__prototype")
            .prefetch_related("tags")
            .order_by("-created_at", "-pk")
        )

    def get_serializer_class(self):
        if self.action == "create":
            return NewPrototypeSerializer
        if self.action == "change":
            return IdeaSerializer
        return PrototypeSerializer

    def perform_create(self, serializer):
        serializer.instance = builds.create_prototype(owner=self.request.user, **serializer.validated_data)

    def perform_update(self, serializer):
        access.require(self.request.user, "edit")  # also checked before (RoleAllows); asked here as well
        if serializer.instance.owner_id != self.request.user.pk:
            raise PermissionDenied("Only the prototype's owner can edit it.")
        serializer.save()

    @extend_schema(request=IdeaSerializer, responses={201: BuildSerializer})
    @action(detail=True, methods=["post"])
    def change(self, request, slug=None):
        """Ask for a change: the next version, built on the current one (the owner only)."""
        prototype = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        build = builds.ask_for_change(prototype, by=request.user, **serializer.validated_data)
        return Response(BuildSerializer(build, context=self.get_serializer_context()).data, status.HTTP_201_CREATED)


@extend_schema_view(list=extend_schema(parameters=[PROTOTYPE_PARAM]), retrieve=extend_schema(parameters=[LINK_PARAM]))
class RevisionViewSet(ThroughPrototype, viewsets.ReadOnlyModelViewSet):
    """The versions of prototypes: the words asked and, once built, what changed."""

    queryset = Revision.objects.none()  # for the schema; see get_queryset
    role_actions = {"remix": "build", "make_current": "edit"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Revision.objects.none()
        return (
            Revision.objects.filter(prototype__in=self.visible_prototypes())
            .select_related("prototype", "author", "parent")
            .order_by("-created_at", "-pk")
        )

    def get_serializer_class(self):
        return RemixSerializer if self.action == "remix" else RevisionSerializer

    @extend_schema(request=RemixSerializer, responses={201: BuildSerializer})
    @action(detail=True, methods=["post"])
    def remix(self, request, pk=None):
        """Start your own prototype from this version; the original never changes."""
        revision = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        build = builds.remix(revision, by=request.user, **serializer.validated_data)
        return Response(BuildSerializer(build, context=self.get_serializer_context()).data, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=PrototypeSerializer)
    @action(detail=True, methods=["post"], url_path="make-current")
    def make_current(self, request, pk=None):
        """Show this version as the prototype's current one (the owner only)."""
        revision = self.get_object()
        builds.make_current(revision, by=request.user)
        prototype = Prototype.objects.select_related("owner", "target", "current_revision").get(
            pk=revision.prototype_id
        )
        return Response(PrototypeSerializer(prototype, context=self.get_serializer_context()).data)


@extend_schema_view(list=extend_schema(parameters=[
    PROTOTYPE_PARAM, OpenApiParameter("state", str, enum=Build.State.values),
]), retrieve=extend_schema(parameters=[LINK_PARAM]))  # fmt: skip
class BuildViewSet(ThroughPrototype, viewsets.ReadOnlyModelViewSet):
    """Builds: one attempt at building a version, from queued to ready (or failed, or cancelled)."""

    serializer_class = BuildSerializer
    queryset = Build.objects.none()  # for the schema; see get_queryset
    role_actions = {"retry": "build"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Build.objects.none()
        queryset = Build.objects.filter(revision__prototype__in=self.visible_prototypes())
        if not self.detail and param(self.request, "state"):
            queryset = queryset.filter(state=param(self.request, "state"))
        return queryset.select_related("revision__prototype").order_by("-created_at", "-pk")

    @extend_schema(request=None, responses={201: BuildSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request, pk=None):
        """Try a failed or cancelled build again (a new attempt)."""
        build = builds.retry_build(self.get_object(), by=request.user)
        return Response(self.get_serializer(build).data, status.HTTP_201_CREATED)

    @extend_schema(request=None, responses=BuildSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        """Stop the build: a queued one at once, a running one at its next check."""
        build = self.get_object()
        if not builds.cancel_build(build, by=request.user):
            raise Conflict("This build has already finished.")
        build.refresh_from_db()
        return Response(self.get_serializer(build).data)

    @extend_schema(
        parameters=[OpenApiParameter("after", int, description="Only events after this sequence number."), LINK_PARAM],
        responses=BuildEventSerializer(many=True),
    )
    @action(detail=True, pagination_class=None)
    def events(self, request, pk=None):
        """The build's log, oldest first, at most 500 at a time: ask again with `after` = the last `seq`."""
        build = self.get_object()
        after = serializers.IntegerField(min_value=0, max_value=2**31, required=False)
        after.bind("after", None)
        try:
            since = after.run_validation(request.query_params.get("after", 0))
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({"after": exc.detail}) from None
        events = build.events.filter(seq__gt=since).order_by("seq")[:EVENTS_PER_CALL]
        return Response(BuildEventSerializer(events, many=True).data)


@extend_schema_view(list=extend_schema(parameters=[
    PROTOTYPE_PARAM, OpenApiParameter("build", int), OpenApiParameter("kind", str, enum=Artifact.Kind.values),
]), retrieve=extend_schema(parameters=[LINK_PARAM]))  # fmt: skip
class ArtifactViewSet(ThroughPrototype, viewsets.ReadOnlyModelViewSet):
    """What succeeded builds produced: web previews, apps, packages, patches."""

    serializer_class = ArtifactSerializer
    queryset = Artifact.objects.none()  # for the schema; see get_queryset

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Artifact.objects.none()
        queryset = Artifact.objects.available_to(self.request.user, slug=self.link_slug())
        if not self.detail:
            if int_param(self.request, "build") is not None:
                queryset = queryset.filter(build_id=int_param(self.request, "build"))
            if param(self.request, "kind"):
                queryset = queryset.filter(kind=param(self.request, "kind"))
        return queryset.select_related("build__revision__prototype").order_by("-created_at", "-pk")

    def downloaded(self, artifact: Artifact) -> None:
        """Called on each download (the store counts them)."""

    @extend_schema(parameters=[LINK_PARAM], responses={(200, "application/octet-stream"): OpenApiTypes.BINARY})
    @action(detail=True)
    def download(self, request, pk=None):
        """The artifact's file (ranges answered, streamed in constant memory, as the pages do)."""
        artifact = self.get_object()  # available_to: retention-expired files are not found at all
        if not artifact.file:
            raise NotFound("This file is missing from the store's storage.")
        try:
            response = serve_file(request, artifact.file, filename=artifact.filename,
                                  content_type=artifact.content_type)  # fmt: skip
        except Http404:
            raise NotFound("This file is missing from the store's storage.") from None
        self.downloaded(artifact)
        response["X-Content-Type-Options"] = "nosniff"
        return response
