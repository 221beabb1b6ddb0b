from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import path

from store import views

urlpatterns = [
    path("", views.home, name="home"),
    path("new/", views.new_prototype, name="new"),
    path("p/<slug:slug>/", views.prototype_detail, name="prototype"),
    path("builds/<int:pk>/", views.build_detail, name="build"),
    path("builds/<int:pk>/cancel/", views.cancel_build, name="cancel_build"),
    path("builds/<int:pk>/retry/", views.retry_build, name="retry_build"),
    path("artifacts/<int:pk>/download/", views.download, name="download"),
    path("preview/<str:token>/", views.preview, name="preview"),
    path("preview/<str:token>/<path:path>", views.preview, name="preview_file"),
    path("accounts/login/", auth_views.LoginView.as_view(template_name="store/login.html"), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("healthz", views.healthz, name="healthz"),
]
