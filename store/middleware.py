from django.conf import settings
from django.http import HttpResponseNotFound


class PreviewHostMiddleware:
    """On the preview origin only previews are served: nothing of the store answers there, so a
    prototype cannot reach the store's pages from its own origin."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if settings.PREVIEW_HOST and request.get_host().split(":")[0] == settings.PREVIEW_HOST:
            if not request.path.startswith("/preview/"):
                return HttpResponseNotFound("Only prototype previews are served here.", content_type="text/plain")
        return self.get_response(request)
