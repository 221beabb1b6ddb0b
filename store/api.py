"""The REST API of the storefront: comments, reactions, share links and flags, plus the store's
versions of the prototype and artifact endpoints (with its catalog search and download counts), and
the page where people get their API token. Same rules as the pages: what a person may see comes from
`visible_to(user)`, changes go through store/feedback.py and store/sharing.py."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_http_methods
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.authtoken.models import Token
from rest_framework.decorators import action, api_view, permission_classes
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from prototypes import api as prototypes_api
from prototypes.api import (
    LINK_PARAM,
    PROTOTYPE_PARAM,
    BuildSerializer,
    InPrototypeIdentityField,
    ThroughPrototype,
    VisiblePrototypeField,
    param,
)
from prototypes.builds import NotAllowed
from prototypes.inputs import require_visible_text
from store import catalog, feedback, moderation, sharing
from store.models import Comment, Flag, Reaction, ShareLink, Visit

EXPIRY_DAYS = [1, 7, 30]


class PrototypeViewSet(prototypes_api.PrototypeViewSet):
    """Prototypes: the listed ones and your own; one shared by link opens by its slug."""

    def search(self, queryset, words: str):
        return catalog.search(queryset, words)


class ArtifactViewSet(prototypes_api.ArtifactViewSet):
    """What succeeded builds produced: web previews, apps, packages, patches."""

    def downloaded(self, artifact):
        Visit.objects.create(revision=artifact.build.revision, kind=Visit.Kind.DOWNLOAD, user=self.request.user)


# --- fields and serializers ------------------------------------------------------------------------


class VisibleCommentField(serializers.PrimaryKeyRelatedField):
    """A comment by its id, among those the person may see: on a link-only prototype only when the
    request also names that prototype by its slug (its `prototype` field, or `?prototype=`)."""

    default_error_messages = {"does_not_exist": "There is no comment {pk_value}, or you are not allowed to see it."}

    def __init__(self, **kwargs):
        kwargs.setdefault("queryset", Comment.objects.none())  # the model, for the schema; see get_queryset
        super().__init__(**kwargs)

    def get_queryset(self):
        request = self.context["request"]
        named = request.data.get("prototype") if hasattr(request.data, "get") else None
        slug = named if isinstance(named, str) else param(request, "prototype")
        return Comment.objects.visible_to(request.user, slug=slug.replace("\x00", ""))


class CommentSerializer(serializers.ModelSerializer):
    url = InPrototypeIdentityField(view_name="api:comment-detail", prototype="prototype")
    prototype = VisiblePrototypeField()
    revision = serializers.IntegerField(
        source="revision.number", required=False, min_value=1, max_value=2**31,
        help_text="The version commented on; the current one when left out.",
    )  # fmt: skip
    parent = VisibleCommentField(required=False, allow_null=True, help_text="The comment this one answers.")
    author = serializers.SlugRelatedField(slug_field="username", read_only=True)
    body = serializers.CharField(max_length=feedback.MAX_COMMENT_CHARS, validators=[require_visible_text],
                                 help_text="Markdown.")  # fmt: skip
    follow_up = serializers.IntegerField(
        source="follow_up.number", read_only=True, allow_null=True,
        help_text="The version this comment was sent to the agent as.",
    )  # fmt: skip

    class Meta:
        model = Comment
        fields = ["url", "id", "prototype", "revision", "parent", "author", "body", "addressed", "hidden",
                  "follow_up", "created_at"]  # fmt: skip
        read_only_fields = ["addressed", "hidden", "created_at"]


class AddressedSerializer(serializers.Serializer):
    addressed = serializers.BooleanField(default=True)


class ReactionSerializer(serializers.ModelSerializer):
    url = InPrototypeIdentityField(view_name="api:reaction-detail", prototype="prototype")
    prototype = VisiblePrototypeField()
    user = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Reaction
        fields = ["url", "id", "prototype", "kind", "user", "created_at"]
        read_only_fields = ["created_at"]


class ShareLinkSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:share-link-detail")
    prototype = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    revision = serializers.IntegerField(source="revision.number", read_only=True, allow_null=True)
    active = serializers.BooleanField(read_only=True)

    class Meta:
        model = ShareLink
        fields = ["url", "id", "prototype", "revision", "hint", "created_at", "expires_at", "revoked", "uses", "active"]
        read_only_fields = fields


class NewShareLinkSerializer(ShareLinkSerializer):
    """A new share link. Its token is in this answer only: the store keeps just a hash."""

    prototype = VisiblePrototypeField()
    revision = serializers.IntegerField(
        source="revision.number", required=False, allow_null=True, min_value=1, max_value=2**31,
        help_text="Share only this version; leave out to share whatever is current.",
    )  # fmt: skip
    expires_in_days = serializers.ChoiceField(choices=EXPIRY_DAYS, default=7, allow_null=True, write_only=True,
                                              help_text="null: the link never expires.")  # fmt: skip
    token = serializers.CharField(read_only=True, help_text="Shown once, never again.")
    link = serializers.SerializerMethodField(help_text="The address to send; shown once, never again.")

    class Meta(ShareLinkSerializer.Meta):
        fields = [*ShareLinkSerializer.Meta.fields, "expires_in_days", "token", "link"]
        read_only_fields = ["hint", "created_at", "expires_at", "revoked", "uses", "active"]

    def get_link(self, link) -> str:
        return self.context["request"].build_absolute_uri(reverse("shared", args=[link.token]))


class FlagSerializer(serializers.ModelSerializer):
    url = serializers.HyperlinkedIdentityField(view_name="api:flag-detail")
    prototype = VisiblePrototypeField(required=False, help_text="The prototype flagged (or the comment's).")
    comment = VisibleCommentField(required=False, allow_null=True, help_text="Flag this comment.")
    reason = serializers.CharField(
        max_length=moderation.MAX_REASON_CHARS, help_text="What is wrong, for the moderators."
    )

    class Meta:
        model = Flag
        fields = ["url", "id", "prototype", "comment", "reason", "state", "created_at", "resolved_at"]
        read_only_fields = ["state", "created_at", "resolved_at"]

    def validate(self, attrs):
        if attrs.get("prototype") is None and attrs.get("comment") is None:
            raise serializers.ValidationError("Say what you are flagging: a prototype, a comment, or both.")
        return attrs


# --- viewsets --------------------------------------------------------------------------------------


@extend_schema_view(list=extend_schema(parameters=[PROTOTYPE_PARAM]), retrieve=extend_schema(parameters=[LINK_PARAM]))
class CommentViewSet(
    ThroughPrototype, mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet
):
    """Feedback on prototypes, with one level of replies. Hidden comments only for moderators and their author."""

    queryset = Comment.objects.none()  # for the schema; see get_queryset
    role_actions = {"create": "comment", "send_to_agent": "build"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Comment.objects.none()
        return (
            Comment.objects.visible_to(self.request.user, slug=self.link_slug())
            .filter(prototype__in=self.visible_prototypes())
            .select_related("prototype__owner", "revision", "author", "follow_up")
            .order_by("created_at", "pk")
        )

    def get_serializer_class(self):
        return AddressedSerializer if self.action == "addressed" else CommentSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        prototype = data["prototype"]
        number = data.get("revision", {}).get("number")
        revision = prototype.revisions.filter(number=number).first() if number else prototype.current_revision
        if number and revision is None:
            raise serializers.ValidationError({"revision": [f"This prototype has no version {number}."]})
        if revision is None:
            raise NotAllowed("Comments open once the first version is ready.")
        serializer.instance = feedback.add_comment(prototype=prototype, revision=revision, author=self.request.user,
                                                   body=data["body"], parent=data.get("parent"))  # fmt: skip

    @extend_schema(request=AddressedSerializer, responses=CommentSerializer)
    @action(detail=True, methods=["post"])
    def addressed(self, request, pk=None):
        """Mark feedback as addressed, or not (the prototype's owner only)."""
        comment = self.get_object()
        serializer = self.get_serializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        feedback.set_addressed(comment, by=request.user, addressed=serializer.validated_data["addressed"])
        return Response(CommentSerializer(comment, context=self.get_serializer_context()).data)

    @extend_schema(request=None, responses={201: BuildSerializer})
    @action(detail=True, methods=["post"], url_path="send-to-agent")
    def send_to_agent(self, request, pk=None):
        """Turn the comment into the next change, built on the current version (the owner only)."""
        build = feedback.send_to_agent(self.get_object(), by=request.user)
        return Response(BuildSerializer(build, context=self.get_serializer_context()).data, status.HTTP_201_CREATED)


@extend_schema_view(list=extend_schema(parameters=[
    PROTOTYPE_PARAM, OpenApiParameter("kind", str, enum=Reaction.Kind.values),
    OpenApiParameter("user", str, description="Only this person's reactions (a username)."),
]))  # fmt: skip
class ReactionViewSet(
    ThroughPrototype,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.DestroyModelMixin,
    viewsets.GenericViewSet,
):
    """👍 ❤️ 💡 🚀 on prototypes: one of each kind per person. Reacting twice changes nothing."""

    serializer_class = ReactionSerializer
    queryset = Reaction.objects.none()  # for the schema; see get_queryset
    role_actions = {"create": "react"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Reaction.objects.none()
        queryset = Reaction.objects.filter(prototype__in=self.visible_prototypes())
        if not self.detail:
            if param(self.request, "kind"):
                queryset = queryset.filter(kind=param(self.request, "kind"))
            if param(self.request, "user"):
                queryset = queryset.filter(user__username=param(self.request, "user"))
        return queryset.select_related("prototype", "user").order_by("-created_at", "-pk")

    def perform_create(self, serializer):
        mine = {"prototype": serializer.validated_data["prototype"], "user": self.request.user,
                "kind": serializer.validated_data["kind"]}  # fmt: skip
        if not Reaction.objects.filter(**mine).exists():
            feedback.toggle_reaction(**mine)
        serializer.instance = Reaction.objects.get(**mine)

    def perform_destroy(self, instance):
        if instance.user_id != self.request.user.pk:
            raise PermissionDenied("You can only take back your own reactions.")
        feedback.toggle_reaction(prototype=instance.prototype, user=instance.user, kind=instance.kind)


@extend_schema_view(
    list=extend_schema(parameters=[PROTOTYPE_PARAM]),
    create=extend_schema(request=NewShareLinkSerializer, responses={201: NewShareLinkSerializer}),
)
class ShareLinkViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                       viewsets.GenericViewSet):  # fmt: skip
    """Your share links: anyone with one can view one prototype (or one version of it), and nothing else.
    A link's token is shown once, when it is made; the store keeps only its hash."""

    queryset = ShareLink.objects.none()  # for the schema; see get_queryset
    role_actions = {"create": "share"}  # revoking stays open to the owner, whatever their role now

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return ShareLink.objects.none()
        queryset = ShareLink.objects.filter(prototype__owner=self.request.user)
        if not self.detail and param(self.request, "prototype"):
            queryset = queryset.filter(prototype__slug=param(self.request, "prototype"))
        return queryset.select_related("prototype", "revision").order_by("-created_at", "-pk")

    def get_serializer_class(self):
        return NewShareLinkSerializer if self.action == "create" else ShareLinkSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        prototype = data["prototype"]
        revision = None
        number = (data.get("revision") or {}).get("number")
        if number:
            revision = prototype.revisions.filter(number=number).first()
            if revision is None:
                raise serializers.ValidationError({"revision": [f"This prototype has no version {number}."]})
        link, token = sharing.create_link(prototype, by=self.request.user, revision=revision,
                                          days=data["expires_in_days"])  # fmt: skip
        link.token = token  # for this one answer; never stored
        serializer.instance = link

    @extend_schema(request=None, responses=ShareLinkSerializer)
    @action(detail=True, methods=["post"])
    def revoke(self, request, pk=None):
        """Stop the link from working, at once and for good."""
        link = self.get_object()
        link.revoked = True
        link.save(update_fields=["revoked"])
        return Response(self.get_serializer(link).data)


class FlagViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin, viewsets.GenericViewSet):
    """Ask the moderators to look at a prototype or one of its comments. You see the flags you raised."""

    serializer_class = FlagSerializer
    queryset = Flag.objects.none()  # for the schema; see get_queryset
    role_actions = {"create": "flag"}

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):
            return Flag.objects.none()
        return (
            Flag.objects.filter(reporter=self.request.user).select_related("prototype").order_by("-created_at", "-pk")
        )

    def perform_create(self, serializer):
        data = serializer.validated_data
        prototype = data.get("prototype")  # named by its slug: having its link
        serializer.instance = moderation.flag(reporter=self.request.user, reason=data["reason"],
                                              prototype=prototype, comment=data.get("comment"),
                                              slug=prototype.slug if prototype else "")  # fmt: skip


@extend_schema(exclude=True)
@api_view(["GET", "POST", "PUT", "PATCH", "DELETE"])
@permission_classes([AllowAny])
def not_found(request, rest=""):
    """Any other address under /api/: the API's 404, in the API's error format."""
    if not request.path.endswith("/"):
        raise NotFound(f"There is nothing at this address. API addresses end with a slash: {request.path}/")
    raise NotFound("There is nothing at this address.")


# --- the API token page ----------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def api_token(request):
    """Show your API token, or make one (a new one replaces the old, which stops working at once)."""
    if request.method == "POST":
        Token.objects.filter(user=request.user).delete()
        Token.objects.create(user=request.user)
        messages.info(request, "Here is your new token. The old one no longer works.")
        return redirect("api:token")
    token = Token.objects.filter(user=request.user).first()
    return render(request, "store/api_token.html", {
        "token": token, "api_url": request.build_absolute_uri(reverse("api:api-root")),
        "docs_url": reverse("api:docs"),
    })  # fmt: skip
