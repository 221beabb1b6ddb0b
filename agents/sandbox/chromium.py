"""Chromium inside the bwrap sandbox: the program Playwright starts as its "browser".

Playwright launches `executable_path` with its own arguments and talks to the browser over the inherited
file descriptors 3 and 4 (`--remote-debugging-pipe`), never over a port. `launcher_script` writes a tiny
shell script for `executable_path` that runs `main` here, on the host; `main` starts Debian's Chromium
with Playwright's arguments through `BwrapSandbox.start`, handing fds 3 and 4 on, so the browser process
runs with everything a sandboxed command gets (see bwrap.py):

- its own network namespace with only a loopback device: no route anywhere, the host's loopback (the
  store, its database, a dev server) unreachable. Pages reach the prototype only because Playwright
  answers their requests from the host (agents/browser.py), above the network;
- a scrubbed environment (`--clearenv`; the launcher's own environment, which may hold the worker's
  secrets, never reaches Chromium), /usr read-only, a private size-limited /tmp and HOME, the seccomp
  filter, its own pid namespace, the sandbox's unprivileged host user, and the cgroup limits;
- one writable folder from the host: the profile folder Playwright made for it (`--user-data-dir`).

Chromium's own sandbox needs user namespaces, which the bwrap sandbox forbids inside (--disable-userns),
so Playwright starts it with `--no-sandbox`; bwrap is the boundary. Everything the launcher passes on is
Playwright's argv; the page never chooses any of it.
"""

from __future__ import annotations

import os
import shlex
import signal
import sys
import tempfile
from pathlib import Path

from agents.sandbox.base import GiB, MiB, SandboxLimits, give_tree

CHROMIUM = "/usr/bin/chromium"  # Debian's; Playwright's own browser downloads are never used
# Debian's /usr/bin/chromium is a shell wrapper that reads /etc/chromium.d (Google API keys among its
# defaults); the sandbox has no /etc/chromium.d, so the browser binary itself is started.
CHROMIUM_BINARY = "/usr/lib/chromium/chromium"
# Chromium runs a handful of processes with dozens of threads each: more than a build command's 256.
BROWSER_LIMITS = SandboxLimits(memory_bytes=2 * GiB, pids=1024, cpus=2.0, cpu_seconds=300, tmp_bytes=256 * MiB,
                               home_bytes=128 * MiB, output_bytes=256 * 1024)  # fmt: skip
# Fonts: without fontconfig's configuration every page renders in a fallback and screenshots lie.
FONT_CONFIG = Path("/etc/fonts")
PLAYWRIGHT_FDS = (3, 4)  # --remote-debugging-pipe: Playwright writes to 3 and reads from 4


def launcher_script(folder: Path) -> Path:
    """Write the executable Playwright is told to launch, in `folder` (the caller's private temporary
    folder); `folder` also becomes the sandbox's (empty) workspace. Returns the script's path."""
    home = folder / "sandbox"
    home.mkdir(mode=0o711, exist_ok=True)
    root = Path(__file__).resolve().parents[2]  # the folder that holds the `agents` package
    script = folder / "chromium"
    script.write_text(
        "#!/bin/sh\n"
        f"PYTHONPATH={shlex.quote(str(root))} exec {shlex.quote(sys.executable)} -m agents.sandbox.chromium "
        f'{shlex.quote(str(home))} "$@"\n'
    )
    script.chmod(0o700)
    folder.chmod(0o711)  # the sandbox's user must reach its workspace inside
    return script


def main(argv: list[str]) -> int:
    """Start Chromium in the sandbox with Playwright's arguments (argv[1:]); argv[0] is the workspace."""
    from agents.sandbox.bwrap import Bind, BwrapSandbox  # here: importing it costs nothing to callers

    home, args = Path(argv[0]), argv[1:]
    profile = next((a.split("=", 1)[1] for a in args if a.startswith("--user-data-dir=")), "")
    if not profile or not Path(profile).is_absolute() or not Path(profile).is_dir():
        print("the browser launcher needs Playwright's --user-data-dir folder", file=sys.stderr)
        return 2
    ro_binds = [FONT_CONFIG] if FONT_CONFIG.is_dir() else []
    sandbox = BwrapSandbox(home, limits=BROWSER_LIMITS, ro_binds=ro_binds)
    if sandbox.owner:
        give_tree(Path(profile), *sandbox.owner)
    # Seen at the same path inside, so every path Playwright put in the arguments is right there too;
    # it is bound over the sandbox's private /tmp.
    binds = [Bind(Path(profile), profile, writable=True)]
    process = sandbox.start([CHROMIUM_BINARY, *args], cwd="/tmp", binds=binds, pass_fds=PLAYWRIGHT_FDS)

    def stop(signum, frame):  # Playwright ends a browser that does not close by itself with a signal
        process.stop()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    # Chromium's stderr goes to ours, where Playwright reads it (its launch errors quote it).
    for chunk in iter(lambda: process.output.read1(65536), b""):
        try:
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
        except OSError:
            pass
    code = process.wait()
    process.stop()
    return code


def private_folder() -> Path:
    """A new private temporary folder for one browser (its launcher script and its empty workspace)."""
    return Path(tempfile.mkdtemp(prefix="browser-"))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
