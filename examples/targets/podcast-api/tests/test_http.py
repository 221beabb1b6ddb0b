import json
import subprocess
import sys
import threading
import unittest
import urllib.error
import urllib.request
from pathlib import Path

from podcast_api.catalog import Catalog
from podcast_api.server import PodcastServer, dispatch, parse_args

ROOT = Path(__file__).resolve().parent.parent
# Talk to the local server directly even when HTTP_PROXY is set.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class ServerTests(unittest.TestCase):
    """Starts the real server on a free port and talks to it over HTTP."""

    @classmethod
    def setUpClass(cls):
        cls.server = PodcastServer(("127.0.0.1", 0), Catalog.from_seed(), quiet=True)
        cls.thread = threading.Thread(target=cls.server.serve_forever, daemon=True)
        cls.thread.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.shutdown()
        cls.server.server_close()
        cls.thread.join()

    def request(self, path, method="GET"):
        """Returns (status, headers, decoded JSON body)."""
        request = urllib.request.Request(self.server.url.rstrip("/") + path, method=method)
        try:
            with OPENER.open(request, timeout=5) as response:
                return response.status, response.headers, json.load(response)
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, json.load(error)

    def test_the_index_lists_the_endpoints(self):
        status, headers, body = self.request("/")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "application/json; charset=utf-8")
        self.assertEqual(body["name"], "Podcast API")
        self.assertIn("/shows", body["endpoints"])

    def test_health(self):
        self.assertEqual(self.request("/health")[2], {"status": "ok"})

    def test_list_shows(self):
        status, _, body = self.request("/shows")
        self.assertEqual(status, 200)
        self.assertEqual(len(body["shows"]), 3)

    def test_get_a_show(self):
        status, _, body = self.request("/shows/field-notes")
        self.assertEqual(status, 200)
        self.assertEqual(body["title"], "Field Notes")
        self.assertEqual(body["host"], "Tomás Ortega")

    def test_an_unknown_show_is_404(self):
        status, _, body = self.request("/shows/no-such-show")
        self.assertEqual(status, 404)
        self.assertIn("no-such-show", body["error"])

    def test_a_shows_episodes(self):
        status, _, body = self.request("/shows/small-plates/episodes")
        self.assertEqual(status, 200)
        self.assertEqual([episode["id"] for episode in body["episodes"]], [9, 8])

    def test_an_unknown_shows_episodes_are_404(self):
        self.assertEqual(self.request("/shows/no-such-show/episodes")[0], 404)

    def test_list_episodes_filtered_by_show(self):
        status, _, body = self.request("/episodes?show=the-daily-commit")
        self.assertEqual(status, 200)
        self.assertEqual([episode["id"] for episode in body["episodes"]], [4, 3, 2, 1])

    def test_get_an_episode(self):
        status, _, body = self.request("/episodes/6")
        self.assertEqual(status, 200)
        self.assertEqual(body["title"], "The Night Shift: Owls")
        self.assertEqual(self.request("/episodes/999")[0], 404)

    def test_unknown_paths_are_404(self):
        self.assertEqual(self.request("/episodes/latest")[0], 404)
        self.assertEqual(self.request("/nowhere")[0], 404)

    def test_the_api_is_read_only(self):
        status, headers, body = self.request("/shows", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["Allow"], "GET")


class DispatchTests(unittest.TestCase):
    def test_a_trailing_slash_is_ignored(self):
        status, body = dispatch(Catalog.from_seed(), "/shows/")
        self.assertEqual(status, 200)
        self.assertEqual(len(body["shows"]), 3)


class CommandLineTests(unittest.TestCase):
    def test_the_port_defaults_to_8080(self):
        self.assertEqual(parse_args([]).port, 8080)
        self.assertEqual(parse_args(["--port", "9000"]).port, 9000)

    def test_python_m_podcast_api_serves_and_prints_its_url(self):
        process = subprocess.Popen(
            [sys.executable, "-m", "podcast_api", "--port", "0", "--quiet"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            line = process.stdout.readline()
            self.assertRegex(line, r"^Podcast API .* serving on http://127\.0\.0\.1:\d+/$")
            url = line.split()[-1]
            with OPENER.open(url + "health", timeout=5) as response:
                self.assertEqual(json.load(response), {"status": "ok"})
        finally:
            process.terminate()
            process.wait(timeout=5)
            process.stdout.close()


if __name__ == "__main__":
    unittest.main()
