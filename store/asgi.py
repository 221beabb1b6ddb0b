"""The ASGI entry point: HTTP through Django (static files too in the embedded default) and the live
build feed through Channels websockets, signed in with the same session as the pages; live previews
(hosts under LIVE_PREVIEW_DOMAIN) through their proxy, before any of that."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "store.settings")
django_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs Django set up first)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402
from django.conf import settings  # noqa: E402

from prototypes.live_proxy import LiveProxy, is_live_host  # noqa: E402
from prototypes.routing import websocket_urlpatterns  # noqa: E402
from store.previews import authorize  # noqa: E402
from store.request_size import refuse_large_bodies  # noqa: E402

if settings.SERVE_STATIC:
    from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler

    django_app = ASGIStaticFilesHandler(django_app)

store_app = ProtocolTypeRouter(
    {
        "http": refuse_large_bodies(django_app),  # refused by declared size, before the body is read
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
# Live previews: every request for <label>.<LIVE_PREVIEW_DOMAIN> (HTTP and websockets) goes to the proxy
# and never reaches Django, its middleware or its cookies. The proxy streams bodies to the app, so the
# store's request size limit does not apply there (the app's sandbox bounds what it can keep).
live_proxy = LiveProxy(authorize)


async def application(scope, receive, send):
    if scope["type"] in ("http", "websocket") and is_live_host(_host(scope)):
        return await live_proxy(scope, receive, send)
    return await store_app(scope, receive, send)


def _host(scope) -> str:
    for name, value in scope.get("headers") or []:
        if name == b"host":
            return value.decode("latin-1")
    return ""
