"""The command line: `notes-app [--host H] [--port P] [--data DIR]` serves the app,
`notes-app seed --data DIR` fills the data folder with the demo account and notes."""

import argparse
import sys

from notes_app import __version__, seed
from notes_app.database import Database
from notes_app.server import create_server


def parse_args(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["seed"]:
        parser = argparse.ArgumentParser(
            prog="notes-app seed", description="Fill the data folder with demo data."
        )
        parser.add_argument(
            "--data", default="data", help="the folder that holds the database (default: data)"
        )
        args = parser.parse_args(argv[1:])
        args.command = "seed"
        return args
    parser = argparse.ArgumentParser(
        prog="notes-app",
        description="Serve the notes app. `notes-app seed --data DIR` fills in demo data.",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="port to listen on (0 picks one)")
    parser.add_argument(
        "--data", default="data", help="the folder that holds the database (default: data)"
    )
    parser.add_argument("--quiet", action="store_true", help="do not log each request")
    args = parser.parse_args(argv)
    args.command = "serve"
    return args


def main(argv=None):
    args = parse_args(argv)
    database = Database.open(args.data)
    if args.command == "seed":
        added = seed.fill(database)
        print(f"Demo data {'added to' if added else 'already in'} {args.data}", flush=True)
        return 0
    server = create_server(args.host, args.port, database, quiet=args.quiet)
    print(f"Notes {__version__} serving on {server.url} (data in {args.data})", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        database.close()
    return 0
