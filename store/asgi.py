"""The ASGI entry point: HTTP through Django (static files too in the embedded default) and the live
build feed through Channels websockets, signed in with the same session as the pages."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from prototypes.routing import websocket_urlpatterns  # noqa: E402
from store.request_size import refuse_large_bodies  # noqa: E402

if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_app = ASGIStaticFilesHandler(django_app)

application = ProtocolTypeRouter(
    {
        "http": refuse_large_bodies(django_app),  # refused by declared size, before the body is read
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
