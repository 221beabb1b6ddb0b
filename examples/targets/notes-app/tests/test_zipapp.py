import http.client
import shutil
import subprocess
import sys
import tempfile
import unittest
import zipapp
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class PackedAppTests(unittest.TestCase):
    """The app packed into one .pyz, as the build does, seeds its data and serves its pages and files."""

    def setUp(self):
        self.folder = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.folder)
        shutil.copytree(
            ROOT / "notes_app",
            self.folder / "build" / "notes_app",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        self.pyz = self.folder / "notes-app.pyz"
        zipapp.create_archive(self.folder / "build", self.pyz, main="notes_app.cli:main")

    def test_the_packed_app_seeds_and_serves(self):
        data = self.folder / "data"
        seeded = subprocess.run(
            [sys.executable, str(self.pyz), "seed", "--data", str(data)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(seeded.returncode, 0, seeded.stderr)
        self.assertTrue((data / "notes.sqlite3").is_file())

        server = subprocess.Popen(
            [sys.executable, str(self.pyz), "--port", "0", "--data", str(data), "--quiet"],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.addCleanup(server.wait, 10)
        self.addCleanup(server.terminate)
        line = server.stdout.readline()
        self.assertIn("serving on http://127.0.0.1:", line)
        port = int(line.split("127.0.0.1:")[1].split("/")[0])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.addCleanup(connection.close)
        for path, expected in [
            ("/sign-in", "Sign in"),
            ("/static/app.js", "dataset.confirm"),
            ("/health", "ok"),
        ]:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read().decode()
            self.assertEqual(response.status, 200, path)
            self.assertIn(expected, body, path)
        server.stdout.close()


if __name__ == "__main__":
    unittest.main()
