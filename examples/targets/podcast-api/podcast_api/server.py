"""The HTTP side: routes, JSON responses and the command line entry point."""

import argparse
import json
import re
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from podcast_api import __version__
from podcast_api.catalog import Catalog


class NotFound(Exception):
    pass


def index(catalog, params):
    return {
        "name": "Podcast API",
        "version": __version__,
        "endpoints": [
            "/shows",
            "/shows/{id}",
            "/shows/{id}/episodes",
            "/episodes?show={id}",
            "/episodes/{id}",
        ],
    }


def health(catalog, params):
    return {"status": "ok"}


def list_shows(catalog, params):
    return {"shows": catalog.shows()}


def get_show(catalog, params, show_id):
    show = catalog.show(show_id)
    if show is None:
        raise NotFound(f"No show with id {show_id!r}.")
    return show


def list_show_episodes(catalog, params, show_id):
    get_show(catalog, params, show_id)
    return {"episodes": catalog.episodes(show_id=show_id)}


def list_episodes(catalog, params):
    return {"episodes": catalog.episodes(show_id=params.get("show"))}


def get_episode(catalog, params, episode_id):
    episode = catalog.episode(int(episode_id))
    if episode is None:
        raise NotFound(f"No episode with id {episode_id}.")
    return episode


ROUTES = [
    (re.compile(r"/"), index),
    (re.compile(r"/health"), health),
    (re.compile(r"/shows"), list_shows),
    (re.compile(r"/shows/([a-z0-9-]+)"), get_show),
    (re.compile(r"/shows/([a-z0-9-]+)/episodes"), list_show_episodes),
    (re.compile(r"/episodes"), list_episodes),
    (re.compile(r"/episodes/(\d+)"), get_episode),
]


def dispatch(catalog, target):
    """Answers a GET of `target` (path and query string) with (status, body)."""
    url = urlsplit(target)
    path = url.path.rstrip("/") or "/"
    params = {name: values[0] for name, values in parse_qs(url.query).items()}
    for pattern, view in ROUTES:
        match = pattern.fullmatch(path)
        if match:
            try:
                return HTTPStatus.OK, view(catalog, params, *match.groups())
            except NotFound as error:
                return HTTPStatus.NOT_FOUND, {"error": str(error)}
    return HTTPStatus.NOT_FOUND, {"error": f"Nothing at {path}."}


class Handler(BaseHTTPRequestHandler):
    server_version = f"PodcastAPI/{__version__}"

    def do_GET(self):
        status, body = dispatch(self.server.catalog, self.path)
        self.send_json(status, body)

    def do_POST(self):
        self.send_json(
            HTTPStatus.METHOD_NOT_ALLOWED, {"error": "This API is read-only."}, {"Allow": "GET"}
        )

    do_PUT = do_PATCH = do_DELETE = do_POST

    def send_json(self, status, body, headers=None):
        data = json.dumps(body, ensure_ascii=False, indent=2).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args):
        if not self.server.quiet:
            super().log_message(format, *args)


class PodcastServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, catalog, quiet=False):
        super().__init__(address, Handler)
        self.catalog = catalog
        self.quiet = quiet

    @property
    def url(self):
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="podcast-api", description="Serve the podcast API.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0 picks one)")
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    server = PodcastServer((args.host, args.port), Catalog.from_seed(), quiet=args.quiet)
    print(f"Podcast API {__version__} serving on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
