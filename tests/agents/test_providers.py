"""Bedrock and Vertex through the SDK's own clients (anthropic.AnthropicBedrock, anthropic.AnthropicVertex),
as the providers build them: only the HTTP transport is replaced. The credentials are fake but go through the
real libraries — botocore signs each request, google-auth mints a token from a made-up service account at a
token endpoint on this machine — so a missing extra or a broken signing path fails here. Model ids are each
service's own, and their calls are priced by the engine's price table."""

from __future__ import annotations

import base64
import json
import struct
import threading
import zlib
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import anthropic
import httpx2
import pytest

from agents import BuildSpec, build
from agents.errors import OURS
from agents.judge import Judge
from agents.loop import AgentLoop, LoopLimits
from agents.pricing import PRICE_TABLE, current_version, price_for
from agents.providers import ProviderConfig, load_provider
from agents.providers.replay import encode_sse, sse_events

VERSION = current_version(PRICE_TABLE, "2026-12-01")
USAGE = {"input_tokens": 1000, "output_tokens": 100, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


def verdict(model: str) -> dict:
    """The judge's checklist, as the Messages API sends it."""
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{"type": "text", "text": '{"checklist": ["It does what was asked."]}'}], "stop_reason": "end_turn",
            "stop_sequence": None, "usage": USAGE}  # fmt: skip


def reviewer(client, model: str, sleeps: list, toolbox) -> tuple[AgentLoop, list]:
    """A loop on `client` priced as the engine prices `model`; the judge's checklist is one streamed request
    through it (`checklist`)."""
    events: list = []
    loop = AgentLoop(
        client, model=model, system=[{"type": "text", "text": "unused"}], toolbox=toolbox,
        emit=lambda kind, data: events.append((kind, data)), limits=LoopLimits(),
        price=price_for(model, PRICE_TABLE, VERSION), price_version=VERSION, remaining=lambda: 600.0,
        sleep=sleeps.append,
    )  # fmt: skip
    return loop, events


def checklist(loop: AgentLoop, client, events: list) -> list[str]:
    judge = Judge(loop, "An idea", client=client, emit=lambda kind, data: events.append((kind, data)))
    return judge.write_checklist()


def clean_environment(monkeypatch) -> None:
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_BEARER_TOKEN_BEDROCK", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "ANTHROPIC_BEDROCK_BASE_URL", "ANTHROPIC_VERTEX_BASE_URL", "ANTHROPIC_VERTEX_PROJECT_ID",
                 "CLOUD_ML_REGION", "GOOGLE_CLOUD_PROJECT", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy",
                 "https_proxy", "ALL_PROXY", "all_proxy"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")  # no profile of the machine's may sneak in
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


# --- Bedrock -------------------------------------------------------------------------------------------
BEDROCK_MODEL = "us.anthropic.claude-sonnet-5-5-20261001-v1:0"


def event_frame(headers: dict[str, str], payload: bytes) -> bytes:
    """One message of AWS's event-stream encoding (what Bedrock streams): a prelude with its CRC, string
    headers, the payload, and a CRC of it all."""
    encoded = b"".join(
        bytes([len(name)]) + name.encode() + b"\x07" + struct.pack(">H", len(value)) + value.encode()
        for name, value in headers.items()
    )
    prelude = struct.pack(">II", 12 + len(encoded) + len(payload) + 4, len(encoded))
    message = prelude + struct.pack(">I", zlib.crc32(prelude)) + encoded + payload
    return message + struct.pack(">I", zlib.crc32(message))


def bedrock_stream(message: dict) -> bytes:
    """A message as Bedrock's invoke-with-response-stream sends it: each API event base64 in a `chunk`."""
    return b"".join(
        event_frame({":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"},
                    json.dumps({"bytes": base64.b64encode(json.dumps(event).encode()).decode()}).encode())
        for event in sse_events(message)
    )  # fmt: skip


def bedrock_exception(kind: str, text: str) -> bytes:
    """Bedrock failing in the middle of a stream: an exception frame after the message began."""
    start = sse_events(verdict(BEDROCK_MODEL))[0]  # message_start, then the failure
    chunk = {":event-type": "chunk", ":content-type": "application/json", ":message-type": "event"}
    started = event_frame(chunk, json.dumps({"bytes": base64.b64encode(json.dumps(start).encode()).decode()}).encode())
    failure = {":exception-type": kind, ":content-type": "application/json", ":message-type": "exception"}
    return started + event_frame(failure, json.dumps({"message": text}).encode())


def test_bedrock_streams_through_the_sdks_client_signed_with_the_workers_aws_credentials(monkeypatch, toolbox):
    clean_environment(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFAKEFORTESTS")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "fake-secret-for-tests")
    seen: list[httpx2.Request] = []
    answers = [
        httpx2.Response(200, headers={"content-type": "application/vnd.amazon.eventstream"},
                        content=bedrock_exception("throttlingException", "Too many requests")),
        httpx2.Response(200, headers={"content-type": "application/vnd.amazon.eventstream"},
                        content=bedrock_stream(verdict(BEDROCK_MODEL))),
    ]  # fmt: skip

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return answers[len(seen) - 1]

    config = ProviderConfig(name="bedrock", model=BEDROCK_MODEL, region="us-east-1")
    provider = load_provider("bedrock")(config)
    client = provider.client(http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))
    assert isinstance(client, anthropic.AnthropicBedrock)
    sleeps: list[float] = []
    loop, events = reviewer(client, provider.model, sleeps, toolbox)

    assert checklist(loop, client, events) == ["It does what was asked."]

    assert len(seen) == 2 and sleeps == [2.0]  # the throttling inside the stream was waited out, as a 429 is
    request = seen[-1]
    assert request.url.host == "bedrock-runtime.us-east-1.amazonaws.com"
    assert request.url.path == f"/model/{BEDROCK_MODEL}/invoke-with-response-stream"
    assert request.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFAKEFORTESTS/")
    assert "/us-east-1/bedrock/aws4_request" in request.headers["authorization"]
    body = json.loads(request.content)
    assert body["anthropic_version"] and "model" not in body  # Bedrock's body: the model is in the path
    [call] = [data for kind, data in events if kind == "model_call"]
    # 1000 × $2 + 100 × $10 per million: the Bedrock id is priced as claude-sonnet-5-5
    assert call["cost"] == "0.003000" and loop.state.cost == Decimal("0.003")
    [busy] = [data["text"] for kind, data in events if kind == "log"]
    assert "throttlingException" in busy


# --- Vertex --------------------------------------------------------------------------------------------
class TokenEndpoint(BaseHTTPRequestHandler):
    """Google's OAuth token endpoint, played on this machine: it hands out one fake access token."""

    grants: list[str] = []

    def do_POST(self):  # noqa: N802 - the name http.server calls
        length = int(self.headers.get("content-length", 0))
        TokenEndpoint.grants.append(self.rfile.read(length).decode())
        body = json.dumps({"access_token": "ya29.fake-token-for-tests", "expires_in": 3600, "token_type": "Bearer"})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def fake_service_account(tmp_path):
    """Application default credentials for a made-up service account whose token endpoint is local."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    server = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    path: Path = tmp_path / "service-account.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "fake-project", "private_key_id": "fake-key",
        "private_key": pem, "client_email": "builds@fake-project.iam.gserviceaccount.com", "client_id": "1",
        "token_uri": f"http://127.0.0.1:{server.server_port}/token",
    }))  # fmt: skip
    TokenEndpoint.grants.clear()
    yield path
    server.shutdown()


VERTEX_MODEL = "claude-sonnet-5-5@20261001"


def test_vertex_streams_through_the_sdks_client_with_application_default_credentials(
    monkeypatch, fake_service_account, toolbox
):
    clean_environment(monkeypatch)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(fake_service_account))
    seen: list[httpx2.Request] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        body = encode_sse(sse_events(verdict(VERTEX_MODEL)))
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    config = ProviderConfig(name="vertex", model=VERTEX_MODEL, region="us-east5", project="fake-project")
    provider = load_provider("vertex")(config)
    client = provider.client(http_client=httpx2.Client(transport=httpx2.MockTransport(handle)))
    assert isinstance(client, anthropic.AnthropicVertex)
    loop, events = reviewer(client, provider.model, [], toolbox)

    assert checklist(loop, client, events) == ["It does what was asked."]

    [grant] = TokenEndpoint.grants
    assert "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer" in grant
    [request] = seen
    assert request.url.host == "us-east5-aiplatform.googleapis.com"
    assert request.url.path == (
        f"/v1/projects/fake-project/locations/us-east5/publishers/anthropic/models/{VERTEX_MODEL}:streamRawPredict"
    )
    assert request.headers["authorization"] == "Bearer ya29.fake-token-for-tests"
    body = json.loads(request.content)
    assert body["anthropic_version"] and "model" not in body and body["stream"] is True
    [call] = [data for kind, data in events if kind == "model_call"]
    assert call["cost"] == "0.003000"  # priced as claude-sonnet-5-5


# --- a model without a price ---------------------------------------------------------------------------
class Sink:
    def __init__(self):
        self.events: list = []

    def emit(self, kind, data):
        self.events.append((kind, data))

    def stage(self, name):
        self.events.append(("stage", name))

    def cancelled(self):
        return False


@pytest.mark.parametrize(
    ("provider", "model"),
    [("anthropic", "claude-opus-5-5-fast"), ("bedrock", "anthropic.claude-mystery-1-v1:0"),
     ("vertex", "claude-mystery-1@20270101")],
)  # fmt: skip
def test_a_model_without_a_price_fails_the_build_before_anything_is_sent(monkeypatch, scratch_dir, provider, model):
    clean_environment(monkeypatch)
    work = scratch_dir("unpriced-")
    spec = BuildSpec(
        target="tiny", repo_url=str(work / "no-such-repository"), base_ref="main", idea="Anything",
        mirror=work / "mirror.git", work_dir=work / "work", output_dir=work / "out", result_ref="refs/prototypes/1/1",
        provider=ProviderConfig(name=provider, model=model, api_key="k", base_url="http://127.0.0.1:9", region="x"),
    )  # fmt: skip
    sink = Sink()

    result = build(spec, sink)

    assert result.error is not None and result.error.code == "model_unpriced", result.error
    assert result.error.family == OURS  # not charged to the person
    assert f"no price for model {model!r}" in result.error.detail
    assert "claude-sonnet-5-5" in result.error.detail  # names what is priced
    assert "admin" in result.error.message
    # Not even the repository was fetched (it does not exist: that would have been workspace_failed).
    assert sink.events == [] and result.turns == 0 and result.cost == 0
