"""The egress proxy for setup commands: real sockets, a real HTTP server on 127.0.0.1, the real sandbox.

No real DNS and no traffic beyond loopback: the proxy's test-only resolver points made-up names
(allowed.test) at the local server, and refused names are refused before anything is resolved.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from agents import BuildSpec, build
from agents.egress import EgressProxy, check_hosts, check_networks, host_allowed, is_local_address
from agents.providers import ProviderConfig
from agents.sandbox import SandboxError
from agents.sandbox.bwrap import BwrapSandbox
from tests.agents.sinks import Sink

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


class Web:
    """A tiny HTTP server on 127.0.0.1 that remembers what it was asked."""

    def __init__(self):
        seen = self.seen = []

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                seen.append((self.path, dict(self.headers)))
                body = b"hello from the allowed host\n"
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def web():
    server = Web()
    yield server
    server.close()


def local_proxy(port: int, **kwargs) -> EgressProxy:
    """A proxy whose made-up names all resolve to 127.0.0.1, which it may reach (tests only)."""
    options = {"ports": (port,), "resolve": lambda host: ["127.0.0.1"], "refuse_address": lambda address: False}
    return EgressProxy(["allowed.test", "*.wild.test"], **{**options, **kwargs})


@pytest.fixture
def proxy(web):
    with local_proxy(web.port) as running:
        yield running


def ask(proxy: EgressProxy, request: bytes, then: bytes = b"") -> bytes:
    """Send `request` to the proxy's socket (and `then` once it answered 200), return all it says."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(10)
        client.connect(str(proxy.socket_path))
        client.sendall(request)
        answer = b""
        while b"\r\n\r\n" not in answer and (chunk := client.recv(65536)):
            answer += chunk
        if then and answer.startswith(b"HTTP/1.1 200"):
            client.sendall(then)
        while chunk := client.recv(65536):
            answer += chunk
    return answer


def connect(proxy, host, port, path="/"):
    tunnelled = f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode()
    return ask(proxy, f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode(), tunnelled)


# --- the proxy on its own ---------------------------------------------------------------------------
def test_an_allowed_host_is_reached_through_a_connect_tunnel(proxy, web):
    answer = connect(proxy, "allowed.test", web.port, "/simple/")

    assert answer.startswith(b"HTTP/1.1 200 Connection established\r\n\r\nHTTP/1.0 200 OK")
    assert answer.endswith(b"hello from the allowed host\n")
    assert web.seen[0][0] == "/simple/"


def test_plain_http_to_an_allowed_host_reaches_it_without_the_proxy_headers(proxy, web):
    answer = ask(proxy, f"GET http://allowed.test:{web.port}/files/a.whl?x=1 HTTP/1.1\r\nHost: elsewhere.test\r\n"
                        "Proxy-Authorization: Basic c2VjcmV0\r\nProxy-Connection: keep-alive\r\n"
                        "User-Agent: pip\r\n\r\n".encode())  # fmt: skip

    assert answer.startswith(b"HTTP/1.0 200 OK") and answer.endswith(b"hello from the allowed host\n")
    [(path, headers)] = web.seen
    assert path == "/files/a.whl?x=1"
    assert headers["Host"] == f"allowed.test:{web.port}"  # the URL's host, never the client's claim
    assert headers["User-Agent"] == "pip" and headers["Connection"] == "close"
    assert "Proxy-Authorization" not in headers and "Proxy-Connection" not in headers


def test_other_hosts_are_answered_403_and_never_reached(proxy, web):
    tunnel = connect(proxy, "evil.test", web.port)
    plain = ask(proxy, f"GET http://evil.test:{web.port}/ HTTP/1.1\r\n\r\n".encode())
    lookalike = connect(proxy, "allowed.test.evil.test", web.port)

    for answer in (tunnel, plain):
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
        assert f"refused evil.test:{web.port}: not an allowed host".encode() in answer
    assert lookalike.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert web.seen == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "[::1]", "10.0.0.1", "169.254.169.254", "0x7f000001", "[::ffff:127.0.0.1]"]
)
def test_bare_ip_addresses_are_answered_403(proxy, web, host):
    answer = ask(proxy, f"CONNECT {host}:{web.port} HTTP/1.1\r\n\r\n".encode())

    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    assert web.seen == []


def test_a_wildcard_allows_names_under_it_only(web):
    with local_proxy(web.port) as proxy:
        answers = {host: connect(proxy, host, web.port)[:12] for host in
                   ("a.wild.test", "deep.a.wild.test", "wild.test", "evilwild.test")}  # fmt: skip

    assert answers == {"a.wild.test": b"HTTP/1.1 200", "deep.a.wild.test": b"HTTP/1.1 200",
                       "wild.test": b"HTTP/1.1 403", "evilwild.test": b"HTTP/1.1 403"}  # fmt: skip


def test_only_the_allowed_ports_are_reached(proxy, web):
    answer = ask(proxy, b"CONNECT allowed.test:22 HTTP/1.1\r\n\r\n")

    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert f"port 22 is not allowed, only {web.port}".encode() in answer


@pytest.mark.parametrize("address", ["127.0.0.1", "169.254.169.254", "::1", "0.0.0.0", "::ffff:127.0.0.1"])
def test_an_allowed_name_pointing_at_a_local_address_is_refused(web, address):
    with EgressProxy(["allowed.test"], ports=(web.port,), resolve=lambda host: [address]) as proxy:
        answer = connect(proxy, "allowed.test", web.port)

    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert f"it resolves to {address}, an address the sandbox may not reach".encode() in answer
    assert web.seen == []


@pytest.fixture
def connections(monkeypatch):
    """Every connection the proxy tries, none made: these tests never send a packet beyond loopback."""
    tried = []

    def refuse_to_connect(address, timeout=None):
        tried.append(address[0])
        raise ConnectionRefusedError(111, "not in tests")

    monkeypatch.setattr("agents.egress.socket.create_connection", refuse_to_connect)
    return tried


REBOUND = [
    "10.0.0.5", "172.16.3.4", "192.168.1.1", "100.64.0.1", "fd00::1", "fe80::1%eth0", "::ffff:10.0.0.1",
    "::ffff:169.254.169.254", "64:ff9b::a9fe:a9fe", "2002:a00:1::1", "::a00:1", "224.0.0.1", "ff0e::1",
    "198.51.100.7", "240.0.0.1", "0.1.2.3",
]  # fmt: skip


@pytest.mark.parametrize("address", REBOUND)
def test_an_allowed_name_rebound_to_a_private_or_special_address_is_refused_before_any_connection(connections, address):
    with EgressProxy(["allowed.test"], resolve=lambda host: [address]) as proxy:
        answer = connect(proxy, "allowed.test", 443)

    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), answer
    assert f"it resolves to {address}, an address the sandbox may not reach".encode() in answer
    assert connections == []


def test_one_bad_address_among_public_ones_refuses_the_name(connections):
    with EgressProxy(["allowed.test"], resolve=lambda host: ["8.8.8.8", "127.0.0.1", "8.8.4.4"]) as proxy:
        answer = connect(proxy, "allowed.test", 443)

    assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert b"it resolves to 127.0.0.1" in answer
    assert connections == []


def test_the_workers_own_addresses_are_refused_even_when_public(connections, monkeypatch):
    monkeypatch.setattr("agents.egress.host_addresses", lambda: frozenset({"8.8.8.8", "2001:4860::8888"}))
    for address in ("8.8.8.8", "2001:4860::8888"):
        with EgressProxy(["allowed.test"], resolve=lambda host, a=address: [a]) as proxy:
            answer = connect(proxy, "allowed.test", 443)
        assert answer.startswith(b"HTTP/1.1 403 Forbidden\r\n"), address
    assert connections == []
    assert is_local_address("8.8.8.8", own=["8.8.8.8"]) and not is_local_address("8.8.8.8")


def test_a_private_network_the_admin_opened_is_reached_and_nothing_else_private(connections, monkeypatch):
    # A company package mirror at 10.20.0.5: reachable once its network is listed, and only its network.
    monkeypatch.setattr("agents.egress.host_addresses", lambda: frozenset({"10.20.0.9"}))
    answers = {"mirror.test": ["10.20.0.5"], "other.test": ["10.30.0.5"], "me.test": ["10.20.0.9"],
               "meta.test": ["169.254.169.254"], "lo.test": ["127.0.0.1"]}  # fmt: skip
    with EgressProxy(list(answers), resolve=answers.__getitem__, private_networks=["10.20.0.0/16"]) as proxy:
        said = {host: connect(proxy, host, 443) for host in answers}

    assert said["mirror.test"].startswith(b"HTTP/1.1 502 Bad Gateway\r\n")  # allowed: the fake connection failed
    assert connections == ["10.20.0.5"]
    for host in ("other.test", "me.test", "meta.test", "lo.test"):
        assert said[host].startswith(b"HTTP/1.1 403 Forbidden\r\n"), host


@pytest.mark.parametrize("network", ["127.0.0.0/8", "169.254.0.0/16", "0.0.0.0/0", "8.8.8.0/24", "::/0",
                                     "fe80::/10", "224.0.0.0/4", "10.0.0.0/7", "not-a-network"])  # fmt: skip
def test_only_private_ranges_may_be_opened(network, workspace):
    with pytest.raises(ValueError):
        check_networks([network])
    with pytest.raises(SandboxError, match="not valid"):
        BwrapSandbox(workspace, egress_hosts=["mirror.test"], egress_networks=[network])
    assert check_networks(["10.20.0.0/16", "fd12:3456::/48"])


def test_the_name_is_resolved_once_and_the_checked_addresses_are_the_ones_connected_to(connections):
    answers = iter([["8.8.8.8"], ["127.0.0.1"]])  # a rebinding server's first and second answer
    asked = []

    def resolve(host):
        asked.append(host)
        return next(answers)

    with EgressProxy(["allowed.test"], resolve=resolve) as proxy:
        answer = connect(proxy, "allowed.test", 443)

    assert answer.startswith(b"HTTP/1.1 502 Bad Gateway\r\n")  # the fake connection failed
    assert asked == ["allowed.test"] and connections == ["8.8.8.8"]


def test_every_decision_is_logged_with_host_and_port(proxy, web, caplog):
    caplog.set_level(logging.INFO, logger="agents.egress")

    connect(proxy, "allowed.test", web.port)
    connect(proxy, "evil.test", web.port)

    messages = [r.getMessage() for r in caplog.records if r.name == "agents.egress"]
    assert messages == [f"egress allowed: allowed.test:{web.port}", f"egress refused: evil.test:{web.port} (not an allowed host)"]  # fmt: skip
    assert proxy.refusals() == f"the network proxy refused evil.test:{web.port} (not an allowed host). Allowed hosts: allowed.test, *.wild.test"  # fmt: skip


def test_stopping_the_proxy_cuts_open_tunnels_and_removes_its_socket(web):
    proxy = local_proxy(web.port).start()
    client = socket.socket(socket.AF_UNIX)
    client.settimeout(10)
    client.connect(str(proxy.socket_path))
    client.sendall(f"CONNECT allowed.test:{web.port} HTTP/1.1\r\n\r\n".encode())
    assert client.recv(100).startswith(b"HTTP/1.1 200")

    proxy.stop()

    assert client.recv(100) == b""
    assert not proxy.dir.exists()
    client.close()


def test_garbage_gets_400():
    with EgressProxy(["allowed.test"]) as proxy:
        assert ask(proxy, b"hello\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")
        assert ask(proxy, b"GET /relative HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 400 Bad Request")


def test_allowed_hosts_are_names_or_wildcards():
    assert check_hosts(["PyPI.org.", "*.pythonhosted.org", "pypi.org"]) == ("pypi.org", "*.pythonhosted.org")
    for wrong in (["1.2.3.4"], ["::1"], ["localhost"], ["*.com"], ["a.*.example.com"], ["http://pypi.org"],
                  ["pypi.org:443"], ["*"], "pypi.org"):  # fmt: skip
        with pytest.raises(ValueError):
            check_hosts(wrong)
    assert host_allowed("files.pythonhosted.org", ["*.pythonhosted.org"])
    assert not host_allowed("pythonhosted.org", ["*.pythonhosted.org"])
    assert is_local_address("127.0.0.53") and is_local_address("fe80::1") and not is_local_address("8.8.8.8")


# --- through the sandbox ----------------------------------------------------------------------------
def own_address() -> str:
    """This machine's non-loopback address (no packet is sent), or TEST-NET-1 when it has none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
        except OSError:
            return "192.0.2.1"


@pytest.fixture
def workspace():
    path = Path(tempfile.mkdtemp(prefix="egress-test-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def local_sandbox(workspace: Path, port: int) -> BwrapSandbox:
    class LocalNames(BwrapSandbox):
        def make_proxy(self, owner=None):
            return local_proxy(port, owner=owner)

    return LocalNames(workspace, egress_hosts=["allowed.test", "*.wild.test"])


INSIDE = """
import os, socket, sys, urllib.request, urllib.error
port, own = int(sys.argv[1]), sys.argv[2]
print("proxy", os.environ["HTTPS_PROXY"], os.environ["HTTP_PROXY"])
print("urllib", urllib.request.urlopen(f"http://allowed.test:{port}/simple/", timeout=10).read().decode().strip())
try:
    urllib.request.urlopen(f"http://evil.test:{port}/", timeout=10)
except urllib.error.HTTPError as e:
    print("evil", e.code)
def tunnel(host):
    s = socket.create_connection(("127.0.0.1", 3128), timeout=10)
    s.sendall(f"CONNECT {host}:{port} HTTP/1.1\\r\\n\\r\\n".encode())
    answer = s.recv(1000).split(b"\\r\\n")[0].decode()
    if answer.endswith("200 Connection established"):
        s.sendall(b"GET / HTTP/1.0\\r\\n\\r\\n")
        reply = b""
        while chunk := s.recv(1000):
            reply += chunk
        answer += " | " + reply.decode().splitlines()[-1]
    return answer
print("tunnel", tunnel("pkg.wild.test"))
print("ip", tunnel("127.0.0.1"))
for address in (("127.0.0.1", port), (own, port)):
    try:
        socket.create_connection(address, timeout=3)
        print("direct", address[0], "connected")
    except OSError as e:
        print("direct", address[0], "failed:", e.strerror)
"""


def test_a_setup_command_reaches_allowed_hosts_through_the_proxy_and_nothing_else(workspace, web):
    own = own_address()
    sandbox = local_sandbox(workspace, web.port)

    result = sandbox.run(["python3", "-c", INSIDE, str(web.port), own], network=True, timeout=30)

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[:5] == [
        "proxy http://127.0.0.1:3128 http://127.0.0.1:3128",
        "urllib hello from the allowed host",
        "evil 403",
        "tunnel HTTP/1.1 200 Connection established | hello from the allowed host",
        "ip HTTP/1.1 403 Forbidden",
    ]
    assert lines[5] == "direct 127.0.0.1 failed: Connection refused"  # its own loopback: nothing listens
    assert lines[6] in (f"direct {own} failed: Network is unreachable", f"direct {own} failed: Connection refused")
    assert lines[7] == (
        f"[sandbox: the network proxy refused evil.test:{web.port} (not an allowed host); 127.0.0.1:{web.port} "
        "(an IP address: only host names can be allowed). Allowed hosts: allowed.test, *.wild.test]"
    )
    assert [path for path, _ in web.seen] == ["/simple/", "/"]


def test_commands_without_network_see_no_proxy(workspace, web):
    sandbox = local_sandbox(workspace, web.port)

    result = sandbox.run(["bash", "-c", "env | grep -i proxy; ls /run/egress; echo > /dev/tcp/127.0.0.1/3128"])

    assert result.exit_code != 0
    assert "PROXY" not in result.output and "proxy.sock" not in result.output
    assert "Connection refused" in result.output


def test_nothing_of_the_proxy_is_left_after_the_command(workspace, web):
    made = []

    class Watched(BwrapSandbox):
        def make_proxy(self, owner=None):
            made.append(local_proxy(web.port, owner=owner))
            return made[-1]

    sandbox = Watched(workspace, egress_hosts=["allowed.test"])

    result = sandbox.run(["bash", "-c", "setsid nohup sleep 1000 >/dev/null 2>&1 & ls /run/egress"], network=True)
    sandbox.close()  # the proxy and the forwarder live as long as the build's sandbox (session.py)

    assert result.output == "proxy.sock\n"
    [proxy] = made
    assert not proxy.dir.exists()
    assert proxy._thread is None and not proxy._open
    forwarders = [p for p in os.listdir("/proc") if p.isdigit() and b"UNIX-CONNECT:/run/egress" in _cmdline(p)]
    assert forwarders == []


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_network_is_refused_to_a_sandbox_without_allowed_hosts(workspace):
    sandbox = BwrapSandbox(workspace)

    with pytest.raises(SandboxError, match="allows no hosts, so commands run without network"):
        sandbox.run(["true"], network=True)


def test_invalid_allowed_hosts_are_refused_when_the_sandbox_is_made(workspace):
    with pytest.raises(SandboxError, match="'127.0.0.1' is an IP address"):
        BwrapSandbox(workspace, egress_hosts=["pypi.org", "127.0.0.1"])


def test_the_agents_commands_search_and_verify_never_ask_for_network(tree, recipe):
    from agents.tools import Toolbox

    sandbox = BwrapSandbox(tree, egress_hosts=["pypi.org"])  # a target whose setup may download
    asked = []
    run = sandbox.run
    sandbox.run = lambda argv, **kwargs: asked.append(kwargs.get("network", False)) or run(argv, **kwargs)
    toolbox = Toolbox(tree, sandbox, recipe, max_verify_rounds=3, command_timeout=30, remaining=lambda: 600.0)

    toolbox.call("run", {"command": "env | grep -ci proxy"})
    toolbox.call("search", {"pattern": "add"})
    toolbox.call("verify", {})

    assert len(asked) >= 4 and not any(asked)  # run, search, and verify's build and test


# --- the engine -------------------------------------------------------------------------------------
@pytest.mark.parametrize("egress_hosts", [(), ("pypi.org",)])
def test_setup_commands_get_the_proxy_only_when_the_target_allows_hosts(make_repo, scratch_dir, egress_hosts):
    setup = ("env | grep -ci _proxy; python3 -c \"import urllib.request as u; u.urlopen('http://evil.test/')\" "
             "2>&1 | tail -1; exit 3")  # fmt: skip
    recipe = (EXAMPLES / "targets" / "podcast-api" / "prototype.toml").read_text()
    recipe = recipe.replace("[build]", f"[setup]\ncommands = ['''{setup}''']\n\n[build]", 1)
    repo = make_repo(source=EXAMPLES / "targets" / "podcast-api", files={"prototype.toml": recipe})
    work = scratch_dir("build-")
    spec = BuildSpec(
        target="podcast-api", repo_url=str(repo), base_ref="main", idea="Show the episode count per show", browser_check=False,
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out",
        result_ref="refs/prototypes/test/1", provider=ProviderConfig(name="replay", recordings=EXAMPLES / "recordings"),
        egress_hosts=egress_hosts,
    )  # fmt: skip

    result = build(spec, Sink())

    assert result.error is not None and result.error.code == "setup_failed", result.error
    detail = result.error.detail
    if egress_hosts:
        assert "exited with 3: 6\n" in detail  # HTTP(S)_PROXY, http(s)_proxy, NO_PROXY, no_proxy
        assert "HTTP Error 403: Forbidden" in detail
        assert (
            "[sandbox: the network proxy refused evil.test:80 (not an allowed host). Allowed hosts: pypi.org]" in detail
        )
    else:
        assert "exited with 3: 0\n" in detail
        assert "Name or service not known" in detail or "Temporary failure in name resolution" in detail
