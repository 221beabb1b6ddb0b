"""The REST API under /api/: the router, the OpenAPI schema, its docs page (served offline by the
sidecar: no CDN), and the page where people get their API token. Like every page of the store, the
schema and the docs are for signed-in people only."""

from django.contrib.auth.decorators import login_required
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.routers import DefaultRouter

from prototypes.api import BuildViewSet, RevisionViewSet, TargetViewSet
from store import api

app_name = "api"

router = DefaultRouter()
router.register("targets", TargetViewSet, basename="target")
router.register("prototypes", api.PrototypeViewSet, basename="prototype")
router.register("revisions", RevisionViewSet, basename="revision")
router.register("builds", BuildViewSet, basename="build")
router.register("artifacts", api.ArtifactViewSet, basename="artifact")
router.register("comments", api.CommentViewSet, basename="comment")
router.register("reactions", api.ReactionViewSet, basename="reaction")
router.register("share-links", api.ShareLinkViewSet, basename="share-link")
router.register("flags", api.FlagViewSet, basename="flag")

urlpatterns = [
    path("token/", api.api_token, name="token"),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", login_required(SpectacularSwaggerSplitView.as_view(url_name="api:schema")), name="docs"),
    path("", include(router.urls)),
    re_path(r"^(?P<rest>.*)$", api.not_found),  # any other address under /api/: a 404 in the API's format
]
