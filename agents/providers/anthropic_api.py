"""The real model services through the SDK's own clients: Anthropic's API, Amazon Bedrock, Google Vertex.

Bedrock and Vertex need the SDK's extras (`anthropic[bedrock,vertex]`: boto3/botocore to sign requests and
decode Bedrock's event stream, google-auth for Vertex's credentials); pyproject.toml declares them.
Credentials come from where those libraries look (AWS_* variables or an instance role; Google's application
default credentials) and stay in the worker process. ANTHROPIC_BASE_URL is the first-party API's alone: the
SDK reads ANTHROPIC_BEDROCK_BASE_URL and ANTHROPIC_VERTEX_BASE_URL for the others. `http_client` exists for
tests, which replace the transport and nothing else.
"""

from __future__ import annotations

import anthropic
import httpx2

from agents.errors import ServiceError
from agents.providers import ProviderConfig


class AnthropicProvider:
    live = True

    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        if not config.api_key:
            raise ServiceError("model_unavailable", "ANTHROPIC_API_KEY is not set")
        self.config = config
        self.model = config.model

    def client(self, http_client: httpx2.Client | None = None) -> anthropic.Anthropic:
        # Few SDK retries: the loop does its own bounded backoff within the build's remaining time.
        return anthropic.Anthropic(
            api_key=self.config.api_key,
            base_url=self.config.base_url or None,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )

    def judge_client(self):
        """The client the judge's requests go to (agents/judge.py): a live model judges with the same
        credentials and model as the agent, on a client of its own. Bedrock and Vertex inherit this."""
        return self.client()


class BedrockProvider(AnthropicProvider):
    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        self.config = config
        self.model = config.model

    def client(self, http_client: httpx2.Client | None = None) -> anthropic.AnthropicBedrock:
        return anthropic.AnthropicBedrock(
            aws_region=self.config.region or None,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )


class VertexProvider(AnthropicProvider):
    def __init__(self, config: ProviderConfig, *, target: str = "", idea: str = ""):
        self.config = config
        self.model = config.model

    def client(self, http_client: httpx2.Client | None = None) -> anthropic.AnthropicVertex:
        # Unset region and project are left to the SDK (CLOUD_ML_REGION, ANTHROPIC_VERTEX_PROJECT_ID, the
        # credentials' project): passing None would be taken as a value.
        where = {"region": self.config.region} if self.config.region else {}
        if self.config.project:
            where["project_id"] = self.config.project
        return anthropic.AnthropicVertex(
            **where,
            max_retries=self.config.max_retries,
            http_client=http_client,
        )
