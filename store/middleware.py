from django.conf import settings
from django.http import HttpResponseNotFound, QueryDict


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


def without_nul(query: QueryDict) -> QueryDict:
    """`query` with NUL characters removed from its names and values (the same object when it has none)."""
    if not any("\x00" in name or any("\x00" in value for value in values) for name, values in query.lists()):
        return query
    cleaned = QueryDict(mutable=True, encoding=query.encoding)
    for name, values in query.lists():
        cleaned.setlist(name.replace("\x00", ""), [value.replace("\x00", "") for value in values])
    cleaned._mutable = False
    return cleaned


class DropNulCharacters:
    """Remove NUL characters from query strings and form fields before any view reads them.

    Nobody types one (it shows nothing), and PostgreSQL cannot store one in a text column: a NUL that
    reached a query or a save was a server error on every page that reads request.POST or request.GET
    itself. One rule here covers all of them, and the API's query parameters too (REST framework reads
    the same QueryDicts); JSON bodies are refused by REST framework's own fields."""

    FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.GET = without_nul(request.GET)
        if request.method == "POST" and request.content_type in self.FORMS:
            request.POST = without_nul(request.POST)
        return self.get_response(request)
