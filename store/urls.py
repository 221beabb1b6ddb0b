from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from store import sharing, views

urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.new_prototype, name="new"),
    path("p/<slug:slug>/", views.prototype_detail, name="prototype"),
    path("p/<slug:slug>/change/", views.ask_for_change, name="ask_for_change"),
    path("p/<slug:slug>/edit/", views.edit_prototype, name="edit_prototype"),
    path("p/<slug:slug>/phone/", views.phone_view, name="phone_view"),
    path("p/<slug:slug>/comment/", views.comment, name="comment"),
    path("p/<slug:slug>/react/", views.react, name="react"),
    path("comments/<int:pk>/addressed/", views.comment_addressed, name="comment_addressed"),
    path("comments/<int:pk>/send-to-agent/", views.comment_to_agent, name="comment_to_agent"),
    path("screenshots/<int:pk>/", views.screenshot, name="screenshot"),
    path("screenshots/<int:pk>/thumbnail/", views.screenshot, {"thumbnail": True}, name="screenshot_thumbnail"),
    path("p/<slug:slug>/live/<int:pk>/restart/", views.restart_instance, name="restart_instance"),
    path("p/<slug:slug>/live/<int:pk>/reset/", views.reset_instance, name="reset_instance"),
    path("p/<slug:slug>/live/<int:pk>/log/", views.instance_log, name="instance_log"),
    path("p/<slug:slug>/live/pair/", views.pair_backend, name="pair_backend"),
    path("p/<slug:slug>/v/<int:number>/remix/", views.remix, name="remix"),
    path("p/<slug:slug>/v/<int:number>/make-current/", views.make_current, name="make_current"),
    path("p/<slug:slug>/v/<int:number>/", views.version, name="version"),
    path("p/<slug:slug>/v/<int:number>/attempts/<int:attempt>/keep/", views.keep_attempt, name="keep_attempt"),
    path("p/<slug:slug>/v/<int:number>/changes/", views.changes, name="changes"),
    path("p/<slug:slug>/v/<int:number>/patch/", views.patch_download, name="patch"),
    path("builds/<int:pk>/", views.build_detail, name="build"),
    path("builds/<int:pk>/log/", views.build_log, name="build_log"),
    path("builds/<int:pk>/cancel/", views.cancel_build, name="cancel_build"),
    path("builds/<int:pk>/retry/", views.retry_build, name="retry_build"),
    path("artifacts/<int:pk>/download/", views.download, name="download"),
    path("attachments/<int:pk>/", views.attachment, name="attachment"),
    path("preview/<str:token>/", views.preview, name="preview"),
    path("preview/<str:token>/<path:path>", views.preview, name="preview_file"),
    # The same pages inside a prototype's address: the way people who opened a link-only prototype by
    # its link reach its builds, files and pictures (an id alone never reveals one; see
    # PrototypeQuerySet.reachable_by). Same names: reverse() picks the form by its arguments.
    path("p/<slug:slug>/builds/<int:pk>/", views.build_detail, name="build"),
    path("p/<slug:slug>/builds/<int:pk>/log/", views.build_log, name="build_log"),
    path("p/<slug:slug>/artifacts/<int:pk>/download/", views.download, name="download"),
    path("artifacts/<int:pk>/open/", views.open_live, name="open_live"),
    path("p/<slug:slug>/artifacts/<int:pk>/open/", views.open_live, name="open_live"),
    path("p/<slug:slug>/screenshots/<int:pk>/", views.screenshot, name="screenshot"),
    path(
        "p/<slug:slug>/screenshots/<int:pk>/thumbnail/",
        views.screenshot,
        {"thumbnail": True},
        name="screenshot_thumbnail",
    ),
    path("p/<slug:slug>/attachments/<int:pk>/", views.attachment, name="attachment"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="store/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", include(sharing.urlpatterns)),
    path("", include("store.makers")),  # /start/ and /mine/
    path("", include("store.inbox")),  # /inbox/
    path("", include("store.install")),
    path("", include("store.graduate")),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
    path("", include("store.observability")),
    path("", include("store.moderation_views")),
    path("", include("store.runner_api")),  # before api/: build runners' own API, token-authenticated
    path("api/", include("store.api_urls")),
    path("", include("store.auth")),
    path("", include("store.storage_views")),
    path("", include("store.costs")),
    path("", include("store.targets_views")),
]
