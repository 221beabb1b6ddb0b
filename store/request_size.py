"""Requests too large for anything the store takes are refused by their declared size, before their body
is read: a 413 with a plain message (in the API's error format under /api/, a page elsewhere).

The largest thing anyone sends is an idea with its images: MAX_IMAGES images of images.MAX_BYTES each, plus
the form's text (Django's DATA_UPLOAD_MAX_MEMORY_SIZE, which bounds everything but files). Django's own
limits do not help here: DATA_UPLOAD_MAX_MEMORY_SIZE leaves files out, FILE_UPLOAD_MAX_MEMORY_SIZE only
decides when an upload goes to a temporary file, so a 60 MB "image" used to be read and written to disk in
full before the form said it was too large.

Two doors, one rule (`too_large`):
- under WSGI Django reads the body only when something asks for request.POST or request.FILES, so
  `RequestSizeMiddleware`, placed before the first middleware that does (CSRF), answers in time;
- under ASGI (uvicorn, `make run` and production) Django reads the whole body before any middleware runs,
  so `refuse_large_bodies` wraps the ASGI app: it hands Django an empty body instead of the declared
  oversized one (the middleware then answers), and cuts off a body sent without a declared size (chunked)
  once it passes the limit, marking the request so that the middleware refuses it too.
"""

from __future__ import annotations

import asyncio

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import render

from prototypes.images import MAX_BYTES, MAX_IMAGES

CUT_OFF = "store.body_cut_off"  # set in the ASGI scope when a body without a declared size ran over


# Build runners upload what a step built (an .ipa can be hundreds of MB): those requests have their own
# limit, as large as the largest artifact the store packages (agents/packaging.MAX_BYTES).
RUNNER_UPLOADS = "/api/runner/jobs/"
RUNNER_UPLOAD_BYTES = 512 * 1024 * 1024


def max_request_bytes(path: str = "") -> int:
    if path.startswith(RUNNER_UPLOADS):
        return RUNNER_UPLOAD_BYTES
    return MAX_IMAGES * MAX_BYTES + (settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0)


def too_large(declared, path: str = "") -> bool:
    """Whether a request declaring this Content-Length (text, as sent) is over the limit. It is read the
    way Django reads it (int(), which also takes "+5" and "1_000"), so that no size Django would go on
    to read slips past; what int() refuses, Django takes as 0 and reads nothing."""
    try:
        return int(declared) > max_request_bytes(path)
    except (TypeError, ValueError):
        return False


def _megabytes(size: int) -> str:
    return f"{size / 2**20:g} MB"


def refusal(request):
    limit = _megabytes(max_request_bytes())
    message = (f"This request is too large: the store takes at most {limit} at once "
               f"({MAX_IMAGES} images of {_megabytes(MAX_BYTES)} each, and the text).")  # fmt: skip
    if request.path.startswith("/api/"):
        return JsonResponse({"error": {"code": "too_large", "message": message, "fields": {}}}, status=413)
    return render(request, "store/413.html", {"message": message}, status=413)


class RequestSizeMiddleware:
    """Answer 413 for a request over the limit, by its Content-Length, without reading its body."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        cut_off = getattr(request, "scope", {}).get(CUT_OFF, False)
        if cut_off or too_large(request.META.get("CONTENT_LENGTH"), request.path):
            return refusal(request)
        return self.get_response(request)


def refuse_large_bodies(app):
    """ASGI middleware: Django never receives more than the limit of a request body (see the module)."""

    async def wrapped(scope, receive, send):
        if scope["type"] != "http":
            return await app(scope, receive, send)
        path = scope.get("path", "")
        limit = max_request_bytes(path)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length", b"").decode("latin-1")
        received, ended = 0, False

        async def guarded_receive():
            nonlocal received, ended
            if ended:
                # Django keeps listening for a disconnect while it answers; the rest of the body must stay
                # unread, so it waits here until it is done and cancels the wait.
                await asyncio.Event().wait()
            if too_large(declared, path):
                ended = True
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    scope[CUT_OFF] = ended = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        return await app(scope, guarded_receive, send)

    return wrapped
