"""What the engine is asked to do (BuildSpec), what it reports back (BuildResult), and the sink it
reports through while it works."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Protocol

from agents.apksign import SigningKey
from agents.errors import BuildError
from agents.loop import LoopLimits
from agents.pricing import Usage
from agents.providers import ProviderConfig
from agents.recipe import Serve, Services


class Sink(Protocol):
    """Where the engine reports. The Django pipeline writes BuildEvents and moves the build's state;
    the command line prints."""

    def emit(self, kind: str, data: dict) -> None: ...

    def stage(self, name: str) -> None:
        """The build enters a stage: "running", "verifying" or "packaging"."""

    def cancelled(self) -> bool: ...


@dataclass(frozen=True)
class PriorRevision:
    prompt: str
    summary: str


@dataclass(frozen=True)
class Attachment:
    """An image the person attached to the idea (a mockup, a screenshot), already validated."""

    path: Path
    media_type: str  # image/png, image/jpeg, image/gif or image/webp


@dataclass(frozen=True)
class BuildSpec:
    target: str  # the target's slug
    repo_url: str  # git URL or path of the target repository
    base_ref: str  # branch, tag or commit the prototype starts from; the recipe is read here
    idea: str
    mirror: Path  # the target's bare mirror on this machine
    work_dir: Path  # scratch space for this build, removed at the end
    output_dir: Path  # packaged artifacts are written here
    result_ref: str  # refs/prototypes/<prototype>/<revision>
    provider: ProviderConfig
    start_commit: str | None = None  # a follow-up starts from the previous revision's result
    history: tuple[PriorRevision, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    recipe_text: str | None = None  # the admin-written recipe, used when the repository has none
    sandbox: str = "bwrap"
    sandbox_ro_binds: tuple[str, ...] = ()
    sandbox_debug: bool = False
    egress_hosts: tuple[str, ...] = ()  # hosts the recipe's setup commands may reach, through the proxy
    egress_networks: tuple[str, ...] = ()  # private networks those hosts may resolve into (a company mirror)
    limits: LoopLimits = field(default_factory=LoopLimits)
    build_timeout: float = 1800
    disk_quota_bytes: int = 4 * 1024**3  # what the build may write to disk (BUILD_DISK_QUOTA)
    max_committed_file_bytes: int = 50 * 1024**2  # larger files are not committed to the shared mirror
    command_timeout: float = 300
    max_verify_rounds: int = 4
    prices: dict | None = None  # the price table; agents.pricing.PRICE_TABLE when None
    today: str = "9999-12-31"  # picks the price-table version in force
    secrets: tuple[str, ...] = field(default=(), repr=False)  # scrubbed from every event
    # The judge (agents/judge.py): a checklist written from the idea, the finished change graded against it.
    # Runs when the provider can judge: a live model, or a sample conversation with its own sample review.
    judge: bool = False
    # The browser check, its screenshots and the agent's screenshot tool (agents/browser.py), for recipes
    # that have a check; off only where an admin switched it off (BROWSER_CHECK) or a test does not need it.
    browser_check: bool = True
    record_to: Path | None = None  # write the conversation as a recording the replay provider can play
    toolchain_root: Path | None = None  # the admin-filled toolchain folder (TOOLCHAIN_ROOT, agents/toolchains.py)
    # Signs a built APK on the host after packaging (agents/apksign.py); never handed to the sandbox.
    apk_signing_key: SigningKey | None = field(default=None, repr=False)
    # Where recipe steps with `runs_on` go (an agents.runner.RunnerQueue; the store's is prototypes/runners.py).
    runners: object | None = field(default=None, compare=False)


@dataclass
class BaselineSpec:
    """A target's default branch to build as it is (agents.build_baseline): no idea, no agent, no model."""

    target: str  # the target's slug
    repo_url: str
    commit: str  # the branch's commit, resolved beforehand (agents.baseline_commit)
    mirror: Path
    work_dir: Path  # scratch space, removed at the end
    output_dir: Path  # the packaged artifact is written here
    recipe_text: str | None = None  # the admin-written recipe, used when the repository has none
    sandbox: str = "bwrap"
    sandbox_ro_binds: tuple[str, ...] = ()
    egress_hosts: tuple[str, ...] = ()
    egress_networks: tuple[str, ...] = ()
    build_timeout: float = 1800
    disk_quota_bytes: int = 4 * 1024**3
    secrets: tuple[str, ...] = field(default=(), repr=False)
    toolchain_root: Path | None = None  # the admin-filled toolchain folder (TOOLCHAIN_ROOT)
    apk_signing_key: SigningKey | None = field(default=None, repr=False)  # as BuildSpec's
    runners: object | None = field(default=None, compare=False)  # as BuildSpec.runners


@dataclass(frozen=True)
class ArtifactFile:
    kind: str  # web | pyz | wheel | archive | apk | ipa | patch
    path: Path
    size: int
    sha256: str
    content_type: str
    filename: str
    metadata: dict = field(default_factory=dict)


@dataclass
class BuildResult:
    error: BuildError | None = None
    cancelled: bool = False
    recipe_name: str = ""
    serve: Serve | None = None  # the [serve] of the recipe this build ran: how its artifact runs live
    services: Services = Services()  # its [services]: what a live run of the artifact starts beside it
    base_commit: str = ""
    result_commit: str = ""
    summary: str = ""
    diffstat: dict = field(default_factory=dict)
    diff: str = ""  # the head of the diff (agents.workspace.DIFF_KEPT bytes at most)
    diff_file: Path | None = None  # the whole diff, streamed to a file in the output folder
    artifacts: list[ArtifactFile] = field(default_factory=list)
    verify: dict = field(default_factory=dict)
    usage: Usage = field(default_factory=Usage)
    cost: Decimal = Decimal(0)
    turns: int = 0
    live_model: bool = False
    smoke: dict = field(default_factory=dict)  # the browser check of the final change (agents.browser.SmokeReport)
    screenshots: list = field(default_factory=list)  # agents.browser.Shot: before and after, files in output_dir
    checklist: list[dict] = field(default_factory=list)  # the judge's items: {"item", "passed", "note"}
    judge: dict = field(default_factory=dict)  # the judge's verdict: accepted, rounds, score, verdict, replayed

    @property
    def ok(self) -> bool:
        return self.error is None and not self.cancelled and bool(self.artifacts)
