"""The web side: routes for the pages and the JSON API, sessions in a cookie, and the HTTP server.

The app is a plain WSGI callable (`NotesApp`), served by the standard library's wsgiref with one
thread per request.
"""

import json
import pkgutil
import re
from http import HTTPStatus
from http.cookies import SimpleCookie
from socketserver import ThreadingMixIn
from urllib.parse import parse_qs
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from notes_app import __version__, pages, seed
from notes_app.database import Invalid

COOKIE = "notes_session"
MAX_BODY = 64 * 1024
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


class Request:
    def __init__(self, environ, database):
        self.environ = environ
        self.method = environ["REQUEST_METHOD"]
        self.path = environ.get("PATH_INFO") or "/"
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        self.token = cookie[COOKIE].value if COOKIE in cookie else ""
        self.user = database.session_user(self.token)
        self._body = None

    @property
    def wants_json(self):
        return self.environ.get("CONTENT_TYPE", "").split(";")[0].strip() == "application/json"

    def body(self):
        """The request body, at most MAX_BODY bytes (TooLarge beyond)."""
        if self._body is None:
            try:
                length = int(self.environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length = 0
            if length > MAX_BODY:
                raise TooLarge()
            self._body = self.environ["wsgi.input"].read(length) if length > 0 else b""
        return self._body

    def form(self):
        """The posted form (first value of each field)."""
        fields = parse_qs(self.body().decode("utf-8", "replace"), keep_blank_values=True)
        return {name: values[0] for name, values in fields.items()}

    def json(self):
        """The posted JSON object. Raises BadRequest for anything else."""
        try:
            data = json.loads(self.body() or b"null")
        except ValueError:
            raise BadRequest("The body is not valid JSON.") from None
        if not isinstance(data, dict):
            raise BadRequest("Send a JSON object.")
        return data

    def home(self):
        """A relative link from this request's path back to the notes page ("./", "../../")."""
        return "../" * (self.path.count("/") - 1) or "./"


class Response:
    def __init__(
        self, body=b"", status=HTTPStatus.OK, content_type="text/html; charset=utf-8", headers=()
    ):
        self.body = body.encode() if isinstance(body, str) else body
        self.status = HTTPStatus(status)
        self.headers = [("Content-Type", content_type), *headers] if self.body else list(headers)


def json_response(data, status=HTTPStatus.OK, headers=()):
    body = json.dumps(data, ensure_ascii=False, indent=2) + "\n"
    return Response(body, status, "application/json; charset=utf-8", headers)


def redirect(location, headers=()):
    return Response(status=HTTPStatus.SEE_OTHER, headers=[("Location", location), *headers])


class BadRequest(Exception):
    pass


class TooLarge(Exception):
    pass


def session_cookie(token, clear=False):
    # HttpOnly: page scripts cannot read it. SameSite=Lax: other sites cannot post forms with it.
    # No Path: the browser scopes it to the folder the app is served from.
    value = f"{COOKIE}={token}; HttpOnly; SameSite=Lax"
    return ("Set-Cookie", value + ("; Max-Age=0" if clear else ""))


# --- pages ----------------------------------------------------------------------------------------
def home(app, request):
    return Response(pages.notes_page(request.user, app.database.notes(request.user["id"])))


def sign_in(app, request):
    if request.method == "GET":
        return Response(pages.sign_in_page(demo=app.database.has_user(seed.DEMO_USERNAME)))
    data = request.json() if request.wants_json else request.form()
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    user = app.database.authenticate(username, password)
    if user is None:
        message = "That username and password do not match."
        if request.wants_json:
            return json_response({"error": message}, HTTPStatus.UNAUTHORIZED)
        return Response(pages.sign_in_page(message, username), HTTPStatus.UNAUTHORIZED)
    return signed_in(app, request, user)


def sign_up(app, request):
    if request.method == "GET":
        return Response(pages.sign_up_page())
    data = request.json() if request.wants_json else request.form()
    username, password = str(data.get("username", "")), str(data.get("password", ""))
    try:
        user = app.database.create_user(username, password)
    except Invalid as error:
        if request.wants_json:
            return json_response({"error": str(error)}, HTTPStatus.BAD_REQUEST)
        return Response(pages.sign_up_page(str(error), username), HTTPStatus.BAD_REQUEST)
    return signed_in(app, request, user, HTTPStatus.CREATED)


def signed_in(app, request, user, status=HTTPStatus.OK):
    cookie = session_cookie(app.database.start_session(user["id"]))
    if request.wants_json:
        return json_response({"user": user}, status, [cookie])
    return redirect(request.home(), [cookie])


def sign_out(app, request):
    app.database.end_session(request.token)
    return redirect("sign-in", [session_cookie("", clear=True)])


def add_note(app, request):
    text = request.form().get("text", "")
    try:
        app.database.add_note(request.user["id"], text)
    except Invalid as error:
        notes = app.database.notes(request.user["id"])
        return Response(
            pages.notes_page(request.user, notes, str(error), text), HTTPStatus.BAD_REQUEST
        )
    return redirect(request.home())


def delete_note(app, request, note_id):
    app.database.delete_note(request.user["id"], int(note_id))
    return redirect(request.home())


def static(app, request, name):
    suffix = name[name.rfind(".") :]
    try:
        data = pkgutil.get_data("notes_app", f"static/{name}") if suffix in STATIC_TYPES else None
    except OSError:  # no such file (pkgutil reads from the package folder or from inside the .pyz)
        data = None
    if data is None:
        return Response(pages.not_found_page(), HTTPStatus.NOT_FOUND)
    return Response(
        data, content_type=STATIC_TYPES[suffix], headers=[("Cache-Control", "no-cache")]
    )


# --- the JSON API ---------------------------------------------------------------------------------
def api_index(app, request):
    return json_response(
        {
            "name": "Notes",
            "version": __version__,
            "endpoints": [
                "POST /sign-up",
                "POST /sign-in",
                "GET /api/notes",
                "POST /api/notes",
                "GET /api/notes/{id}",
                "DELETE /api/notes/{id}",
            ],
        }
    )


def health(app, request):
    return json_response({"status": "ok"})


def api_notes(app, request):
    if request.method == "GET":
        return json_response({"notes": app.database.notes(request.user["id"])})
    try:
        note = app.database.add_note(request.user["id"], str(request.json().get("text", "")))
    except Invalid as error:
        return json_response({"error": str(error)}, HTTPStatus.BAD_REQUEST)
    return json_response(note, HTTPStatus.CREATED)


def api_note(app, request, note_id):
    if request.method == "DELETE":
        if app.database.delete_note(request.user["id"], int(note_id)):
            return Response(status=HTTPStatus.NO_CONTENT)
    else:
        note = app.database.note(request.user["id"], int(note_id))
        if note is not None:
            return json_response(note)
    return json_response({"error": f"You have no note {note_id}."}, HTTPStatus.NOT_FOUND)


# (path pattern, methods, view, who may call it): "anyone"; "page": people who are signed in (others
# are sent to sign in); "api": people who are signed in (others get 401).
ROUTES = [
    (re.compile(r"/"), {"GET"}, home, "page"),
    (re.compile(r"/sign-in"), {"GET", "POST"}, sign_in, "anyone"),
    (re.compile(r"/sign-up"), {"GET", "POST"}, sign_up, "anyone"),
    (re.compile(r"/sign-out"), {"POST"}, sign_out, "anyone"),
    (re.compile(r"/notes"), {"POST"}, add_note, "page"),
    (re.compile(r"/notes/(\d{1,18})/delete"), {"POST"}, delete_note, "page"),
    (re.compile(r"/static/([a-z0-9-]+\.[a-z]+)"), {"GET"}, static, "anyone"),
    (re.compile(r"/health"), {"GET"}, health, "anyone"),
    (re.compile(r"/api"), {"GET"}, api_index, "anyone"),
    (re.compile(r"/api/notes"), {"GET", "POST"}, api_notes, "api"),
    (re.compile(r"/api/notes/(\d{1,18})"), {"GET", "DELETE"}, api_note, "api"),
]


class NotesApp:
    """The WSGI application."""

    def __init__(self, database):
        self.database = database

    def __call__(self, environ, start_response):
        response = self.respond(Request(environ, self.database))
        headers = [*response.headers, ("Content-Length", str(len(response.body)))]
        start_response(f"{response.status.value} {response.status.phrase}", headers)
        return [response.body]

    def respond(self, request):
        for pattern, methods, view, access in ROUTES:
            match = pattern.fullmatch(request.path)
            if not match:
                continue
            if request.method not in methods:
                allow = ", ".join(sorted(methods))
                return json_response(
                    {"error": f"Use {allow} here."},
                    HTTPStatus.METHOD_NOT_ALLOWED,
                    [("Allow", allow)],
                )
            if access == "page" and request.user is None:
                return redirect(request.home() + "sign-in")
            if access == "api" and request.user is None:
                return json_response({"error": "Sign in first."}, HTTPStatus.UNAUTHORIZED)
            # A JSON API call must say it sends JSON: a form on another site cannot, without the
            # browser asking this app first (CORS), so no other site can write notes as someone.
            if access == "api" and request.method == "POST" and not request.wants_json:
                return json_response({"error": "Send JSON (Content-Type: application/json)."}, 415)
            try:
                return view(self, request, *match.groups())
            except BadRequest as error:
                return json_response({"error": str(error)}, HTTPStatus.BAD_REQUEST)
            except TooLarge:
                return json_response(
                    {"error": "That is too much at once."}, HTTPStatus.REQUEST_ENTITY_TOO_LARGE
                )
        if request.path.startswith("/api/"):
            return json_response({"error": f"Nothing at {request.path}."}, HTTPStatus.NOT_FOUND)
        return Response(pages.not_found_page(request.user), HTTPStatus.NOT_FOUND)


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


class NotesServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    quiet = False

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def create_server(host, port, database, quiet=False):
    server = make_server(
        host, port, NotesApp(database), server_class=NotesServer, handler_class=QuietHandler
    )
    server.quiet = quiet
    return server
