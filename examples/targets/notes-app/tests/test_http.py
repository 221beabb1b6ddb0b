import http.client
import itertools
import json
import tempfile
import threading
import unittest
from http.cookies import SimpleCookie
from urllib.parse import urlencode

from notes_app import seed
from notes_app.cli import parse_args
from notes_app.database import Database
from notes_app.server import create_server

NAMES = (f"person{n}" for n in itertools.count(1))


class Client:
    """One browser: keeps its session cookie, does not follow redirects."""

    def __init__(self, server):
        self.host, self.port = server.server_address[:2]
        self.cookie = ""

    def request(self, method, path, form=None, data=None, headers=None):
        """Returns (status, headers, body as text)."""
        headers = dict(headers or {})
        body = None
        if form is not None:
            body = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif data is not None:
            body = json.dumps(data).encode()
            headers["Content-Type"] = "application/json"
        if self.cookie:
            headers["Cookie"] = f"notes_session={self.cookie}"
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            text = response.read().decode()
        finally:
            connection.close()
        for value in response.headers.get_all("Set-Cookie") or []:
            cookie = SimpleCookie(value)
            if "notes_session" in cookie:
                self.cookie = cookie["notes_session"].value
        return response.status, response.headers, text

    def json(self, method, path, data=None):
        status, _, text = self.request(method, path, data=data)
        return status, json.loads(text) if text else None

    def sign_up(self, username=None):
        username = username or next(NAMES)
        status, headers, _ = self.request(
            "POST", "/sign-up", form={"username": username, "password": "long enough"}
        )
        assert status == 303 and self.cookie, (status, headers)
        return username


class ServerTests(unittest.TestCase):
    """Starts the real server on a free port, with its data in a fresh folder, and talks HTTP to it."""

    @classmethod
    def setUpClass(cls):
        cls.folder = tempfile.TemporaryDirectory()
        cls.database = Database.open(cls.folder.name)
        seed.fill(cls.database)
        cls.server = create_server("127.0.0.1", 0, cls.database, quiet=True)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join()
        cls.database.close()
        cls.folder.cleanup()

    def client(self):
        return Client(self.server)

    def test_health(self):
        self.assertEqual(self.client().json("GET", "/health"), (200, {"status": "ok"}))

    def test_a_visitor_is_sent_to_sign_in_and_told_about_the_demo_account(self):
        status, headers, _ = self.client().request("GET", "/")
        self.assertEqual((status, headers["Location"]), (303, "./sign-in"))
        status, headers, _ = self.client().request("POST", "/notes/1/delete")
        self.assertEqual((status, headers["Location"]), (303, "../../sign-in"))
        status, headers, page = self.client().request("GET", "/sign-in")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/html; charset=utf-8")
        self.assertIn(f"<code>{seed.DEMO_PASSWORD}</code>", page)

    def test_signing_up_signs_you_in(self):
        browser = self.client()
        username = browser.sign_up()
        status, _, page = browser.request("GET", "/")
        self.assertEqual(status, 200)
        self.assertIn(f"Signed in as <strong>{username}</strong>", page)
        self.assertIn("No notes yet.", page)

    def test_the_session_cookie_is_http_only_and_same_site(self):
        _, headers, _ = self.client().request(
            "POST", "/sign-in", form={"username": "demo", "password": "demo-notes"}
        )
        cookie = headers["Set-Cookie"]
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=Lax", cookie)

    def test_the_demo_account_has_the_demo_notes(self):
        browser = self.client()
        status, headers, _ = browser.request(
            "POST",
            "/sign-in",
            form={"username": seed.DEMO_USERNAME, "password": seed.DEMO_PASSWORD},
        )
        self.assertEqual((status, headers["Location"]), (303, "./"))
        page = browser.request("GET", "/")[2]
        self.assertIn("Groceries: oat milk", page)

    def test_a_wrong_password_is_refused(self):
        browser = self.client()
        username = browser.sign_up()
        stranger = self.client()
        status, _, page = stranger.request(
            "POST", "/sign-in", form={"username": username, "password": "guess1234"}
        )
        self.assertEqual(status, 401)
        self.assertIn("do not match", page)
        self.assertEqual(stranger.cookie, "")

    def test_a_taken_username_is_explained(self):
        username = self.client().sign_up()
        status, _, page = self.client().request(
            "POST", "/sign-up", form={"username": username, "password": "x" * 8}
        )
        self.assertEqual(status, 400)
        self.assertIn("is taken", page)

    def test_notes_are_added_escaped_and_private(self):
        ana, ben = self.client(), self.client()
        ana.sign_up()
        ben.sign_up()
        status, headers, _ = ana.request(
            "POST", "/notes", form={"text": "<script>alert(1)</script> milk"}
        )
        self.assertEqual((status, headers["Location"]), (303, "./"))
        page = ana.request("GET", "/")[2]
        self.assertIn("&lt;script&gt;alert(1)&lt;/script&gt; milk", page)
        self.assertNotIn("<script>alert(1)", page)
        self.assertNotIn("milk", ben.request("GET", "/")[2])

    def test_an_empty_note_is_explained(self):
        browser = self.client()
        browser.sign_up()
        status, _, page = browser.request("POST", "/notes", form={"text": "  "})
        self.assertEqual(status, 400)
        self.assertIn("Write something first.", page)

    def test_deleting_a_note_goes_back_with_a_relative_link(self):
        ana, ben = self.client(), self.client()
        ana.sign_up()
        ben.sign_up()
        _, note = ana.json("POST", "/api/notes", {"text": "to delete"})
        # Someone else's delete changes nothing.
        ben.request("POST", f"/notes/{note['id']}/delete")
        self.assertEqual(ana.json("GET", f"/api/notes/{note['id']}")[0], 200)
        status, headers, _ = ana.request("POST", f"/notes/{note['id']}/delete")
        self.assertEqual((status, headers["Location"]), (303, "../../"))
        self.assertEqual(ana.json("GET", f"/api/notes/{note['id']}")[0], 404)

    def test_signing_out_ends_the_session(self):
        browser = self.client()
        browser.sign_up()
        old = browser.cookie
        status, headers, _ = browser.request("POST", "/sign-out")
        self.assertEqual((status, headers["Location"]), (303, "sign-in"))
        self.assertIn("Max-Age=0", headers["Set-Cookie"])
        browser.cookie = old  # even a kept copy of the cookie no longer works
        self.assertEqual(browser.request("GET", "/")[0], 303)

    def test_the_json_api(self):
        api = self.client()
        username = next(NAMES)
        status, body = api.json(
            "POST", "/sign-up", {"username": username, "password": "long enough"}
        )
        self.assertEqual((status, body["user"]["username"]), (201, username))
        status, note = api.json("POST", "/api/notes", {"text": "from the API"})
        self.assertEqual((status, note["text"]), (201, "from the API"))
        self.assertEqual(api.json("GET", "/api/notes"), (200, {"notes": [note]}))
        self.assertEqual(api.json("GET", f"/api/notes/{note['id']}"), (200, note))
        self.assertEqual(api.json("DELETE", f"/api/notes/{note['id']}"), (204, None))
        self.assertEqual(api.json("DELETE", f"/api/notes/{note['id']}")[0], 404)
        self.assertEqual(api.json("POST", "/api/notes", {"text": ""})[0], 400)

    def test_json_sign_in(self):
        api = self.client()
        status, body = api.json("POST", "/sign-in", {"username": "demo", "password": "demo-notes"})
        self.assertEqual((status, body["user"]["username"]), (200, "demo"))
        self.assertEqual(len(api.json("GET", "/api/notes")[1]["notes"]), len(seed.DEMO_NOTES))
        self.assertEqual(
            self.client().json("POST", "/sign-in", {"username": "demo", "password": "nope"})[0], 401
        )

    def test_the_api_needs_a_session_and_json(self):
        self.assertEqual(self.client().json("GET", "/api/notes")[0], 401)
        browser = self.client()
        browser.sign_up()
        status, _, _ = browser.request("POST", "/api/notes", form={"text": "a form from elsewhere"})
        self.assertEqual(status, 415)
        self.assertEqual(browser.request("POST", "/api/notes", data=[1, 2])[0], 400)

    def test_the_api_index_lists_the_endpoints(self):
        status, body = self.client().json("GET", "/api")
        self.assertEqual(status, 200)
        self.assertIn("GET /api/notes", body["endpoints"])

    def test_a_body_too_large_is_refused(self):
        browser = self.client()
        browser.sign_up()
        status, _, _ = browser.request("POST", "/notes", form={"text": "x" * 70_000})
        self.assertEqual(status, 413)

    def test_wrong_methods_and_unknown_paths(self):
        status, headers, _ = self.client().request("DELETE", "/")
        self.assertEqual((status, headers["Allow"]), (405, "GET"))
        self.assertEqual(self.client().request("GET", "/nowhere")[0], 404)
        self.assertEqual(self.client().json("GET", "/api/nowhere")[0], 404)
        huge = "9" * 30  # not a note id at all: 404, not a database error
        browser = self.client()
        browser.sign_up()
        self.assertEqual(browser.json("GET", f"/api/notes/{huge}")[0], 404)

    def test_the_script_and_styles_are_served(self):
        status, headers, script = self.client().request("GET", "/static/app.js")
        self.assertEqual((status, headers["Content-Type"]), (200, "text/javascript; charset=utf-8"))
        self.assertIn("dataset.confirm", script)
        self.assertIn("addEventListener", script)
        self.assertEqual(self.client().request("GET", "/static/style.css")[0], 200)
        self.assertEqual(self.client().request("GET", "/static/missing.js")[0], 404)
        self.assertEqual(self.client().request("GET", "/static/database.py")[0], 404)


class CommandLineTests(unittest.TestCase):
    def test_serve_options(self):
        args = parse_args(["--host", "0.0.0.0", "--port", "9000", "--data", "/tmp/x"])
        self.assertEqual(
            (args.command, args.host, args.port, args.data), ("serve", "0.0.0.0", 9000, "/tmp/x")
        )
        self.assertEqual((parse_args([]).host, parse_args([]).data), ("127.0.0.1", "data"))

    def test_seed_options(self):
        args = parse_args(["seed", "--data", "demo"])
        self.assertEqual((args.command, args.data), ("seed", "demo"))


if __name__ == "__main__":
    unittest.main()
