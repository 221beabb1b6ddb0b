"""The build engine: workspace → recipe → setup → agent loop → verify → package → commit.

`build(spec, sink)` never raises for a build that fails: the result says why (`error`), and keeps the
usage and cost spent so far.
"""

from __future__ import annotations

import json
import time
import traceback
from decimal import Decimal
from pathlib import Path

from agents import deplayer
from agents import workspace as git
from agents.browser import PageCheck
from agents.context import first_message, system_blocks
from agents.errors import BuildError, Cancelled, ChangeState, ServiceError, UserError
from agents.judge import Judge
from agents.loop import AgentLoop
from agents.packaging import package, package_web_part
from agents.pricing import FREE, PRICE_TABLE, SAMPLE_VERSION, UnpricedModel, current_version, price_for
from agents.providers import load_provider
from agents.recipe import Recipe, parse_recipe
from agents.runner import route_steps
from agents.sandbox import Sandbox, SandboxError, load_backend
from agents.services import find_servers
from agents.spec import BaselineSpec, BuildResult, BuildSpec, Sink
from agents.toolchains import Toolchain, describe, find_toolchains
from agents.verify import VerifyReport, failure_code, run_verify

RECIPE_FILE = "prototype.toml"


class Scrubber:
    """Replaces secret values in everything the engine reports."""

    def __init__(self, secrets):
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, value):
        if not self.secrets:
            return value
        if isinstance(value, str):
            for secret in self.secrets:
                value = value.replace(secret, "[secret]")
            return value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def load_recipe(spec: BuildSpec | BaselineSpec, mirror, commit: str) -> Recipe:
    text = git.read_file(mirror, commit, RECIPE_FILE)
    if text is None:
        text = spec.recipe_text
    if not text:
        raise UserError("recipe_invalid", f"the repository has no {RECIPE_FILE} at {commit[:12]} and the target has "
                        "no recipe written by an admin")  # fmt: skip
    return parse_recipe(text)


def recording_entry(message) -> dict:
    """A response as the replay provider serves it (the API's wire format, without empty fields)."""
    data = message.model_dump(mode="json", exclude_none=True)
    usage = data.get("usage", {})
    data["usage"] = {k: usage.get(k, 0) or 0 for k in
                     ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")}  # fmt: skip
    data.setdefault("stop_sequence", None)
    return data


def write_recording(spec: BuildSpec, responses: list[dict], summary: str, model: str, judge: list[dict]) -> None:
    recording = {
        "format": 1, "target": spec.target, "idea": spec.idea, "title": spec.idea.strip().splitlines()[0][:60],
        "summary": summary, "model": model, "responses": responses,
    }  # fmt: skip
    if judge:  # the judge's own responses, replayed on a transport of their own (agents/judge.py)
        recording["judge"] = judge
    spec.record_to.parent.mkdir(parents=True, exist_ok=True)
    spec.record_to.write_text(json.dumps(recording, indent=1) + "\n")


def _over_quota(workspace: git.Workspace) -> BuildError | None:
    try:
        workspace.check_quota()
    except BuildError as exc:
        return exc if exc.code == "disk_quota" else None
    except OSError:
        return None
    return None


def open_sandbox(
    spec: BuildSpec | BaselineSpec, recipe: Recipe, workspace: git.Workspace, *, debug: bool = False
) -> tuple[Sandbox, tuple[Toolchain, ...]]:
    """The sandbox every command of one build runs in, with the recipe's toolchains and services (their
    data kept for the whole build, see `services_folder`), and the toolchains it shows. Raises
    ServiceError before any command runs: "toolchain_missing" or "service_missing" when this machine
    lacks what the recipe needs (naming it), "sandbox_unavailable" when the sandbox cannot start."""
    toolchains = find_toolchains(spec.toolchain_root, recipe.toolchain)
    find_servers(recipe.services)
    try:
        sandbox = load_backend(spec.sandbox)(
            workspace.tree, ro_binds=tuple(spec.sandbox_ro_binds), debug=debug,
            egress_hosts=spec.egress_hosts, egress_networks=spec.egress_networks,
            owned=workspace.lower is not None, services=recipe.services,
            services_dir=services_folder(spec, workspace) if recipe.services else None, toolchains=toolchains,
        )  # fmt: skip
    except SandboxError as exc:
        raise ServiceError("sandbox_unavailable", str(exc)) from exc
    return sandbox, toolchains


def services_folder(spec: BuildSpec | BaselineSpec, workspace: git.Workspace) -> Path:
    """Where the build's services keep their data: on the filesystem that holds the build's own files
    when it has one (an overlay's layer, `disk_quota_bytes` in size), so that a command cannot fill the
    host's disk through the database either; else in the build's folder. Removed with the build."""
    if workspace.layer is None:
        return spec.work_dir / "services"
    # bwrap opens the folder as the sandbox's user, who must pass through the layer's root (a tmpfs
    # layer is made 0700). Searching it shows nothing: the sandbox sees only the folders it is given.
    workspace.layer.chmod(0o711)
    return workspace.layer / "services"


def start_judge(spec: BuildSpec, provider, loop: AgentLoop, recipe: Recipe, emit, shots) -> Judge | None:
    """The build's judge with its checklist written, or None when no judge runs. The one rule for when it
    runs: when asked (AGENT_JUDGE, `--judge`) and the provider can judge: a live model always can, a
    replayed sample conversation when it carries its own sample review (a "judge" list)."""
    if not spec.judge:
        return None
    client = provider.judge_client()
    if client is None:
        emit("log", {"text": "The reviewer (AGENT_JUDGE) is skipped: this sample conversation has no sample review."})
        return None
    emit("step", {"step": "checklist", "text": "Writing a checklist from the idea, to check the change against"})
    judge = Judge(
        loop, spec.idea, client=client, emit=emit, app=f"{recipe.name} ({recipe.kind})", history=spec.history,
        attachments=spec.attachments, shots=shots, replayed=not provider.live,
    )  # fmt: skip
    judge.write_checklist()
    return judge


def shots_folder(spec: BuildSpec) -> Path:
    """Where the build's screenshots are written: a folder of their own beside the artifacts (the command
    line's --out), so pictures never mix with what was built."""
    return spec.output_dir / "screenshots"


def judge_shots(page_check: PageCheck | None, spec: BuildSpec) -> list:
    """The change as it looks now, for the judge's grade: taken when the agent calls finish, right after
    verify passed, so the built folder is the change's. Written where the final "after" screenshots go (a
    later round overwrites an earlier one's), since they usually are the final ones; [] when the app
    cannot be pictured."""
    if page_check is None:
        return []
    shots = page_check.after_change(shots_folder(spec))
    return [] if isinstance(shots, str) else shots


def judged_diff(workspace: git.Workspace, recipe: Recipe) -> str:
    """The change so far as the judge reads it: without the build's output (a bundle of the whole app
    would crowd the change out of the diff the judge is shown)."""
    kept = workspace.exclude
    workspace.exclude = (recipe.artifact.path,)
    try:
        return workspace.pending_diff()
    finally:
        workspace.exclude = kept


def build(spec: BuildSpec, sink: Sink) -> BuildResult:
    started = time.monotonic()
    scrub = Scrubber(spec.secrets)
    result = BuildResult()
    loop: AgentLoop | None = None
    judge: Judge | None = None
    workspace: git.Workspace | None = None
    opened: Sandbox | None = None  # closed at the end: its long-lived sandboxes go before the workspace

    def emit(kind: str, data: dict) -> None:
        sink.emit(kind, scrub(data))

    def remaining() -> float:
        return spec.build_timeout - (time.monotonic() - started)

    def step_timeout(wanted: float) -> float:
        left = remaining()
        if left <= 1:
            raise UserError("timed_out", f"the build took longer than {spec.build_timeout:.0f} s")
        return min(wanted, left)

    def check_cancel() -> None:
        if sink.cancelled():
            raise Cancelled()

    try:
        provider = load_provider(spec.provider.name)(spec.provider, target=spec.target, idea=spec.idea)
        result.live_model = provider.live
        # Priced before anything else happens, so a model without a price stops the build before its first
        # request. A replayed sample conversation calls no model and costs nothing: its calls are priced at
        # zero, whatever token counts the sample carries.
        if provider.live:
            prices = spec.prices or PRICE_TABLE
            version = current_version(prices, spec.today)
            try:
                price = price_for(provider.model, prices, version)
            except UnpricedModel as exc:
                raise ServiceError("model_unpriced", str(exc)) from exc
        else:
            price, version = FREE, SAMPLE_VERSION

        emit("step", {"step": "workspace", "text": "Getting a fresh copy of the app's code"})
        git.sync_mirror(spec.repo_url, spec.mirror)
        base = git.resolve(spec.mirror, spec.base_ref)
        start = git.resolve(spec.mirror, spec.start_commit) if spec.start_commit else base
        result.base_commit = start
        recipe = load_recipe(spec, spec.mirror, base)
        result.recipe_name = recipe.name
        result.serve = recipe.serve
        result.services = recipe.services
        # A sample conversation is a script of edits for one state of the code: on other code (a version
        # that already has its change) it would build something broken. Refused here, before any sandbox
        # or model call; live providers have no such check.
        if hasattr(provider, "check_fit"):
            provider.check_fit(spec.mirror, start, app=recipe.name, on_version=start != base)
        if spec.work_dir.exists():  # a build delivered again: its earlier overlay may still be mounted
            git.close_workspace(spec.work_dir / "ws")
            git.remove_tree(spec.work_dir)
        spec.work_dir.mkdir(parents=True)
        spec.work_dir.chmod(0o711)  # the sandbox's unprivileged user must reach the tree inside
        # The dependency layer for this start commit's lock files: a hit is mounted under the tree (and
        # setup skipped), a miss stores what setup writes. None when the recipe has no setup.
        deps = deplayer.find_layer(
            spec.mirror, start, recipe, scope=deplayer.scope_for(spec.start_commit, spec.result_ref)
        )
        workspace = git.prepare_workspace(
            spec.mirror, start, spec.work_dir / "ws", quota=spec.disk_quota_bytes,
            max_file_bytes=spec.max_committed_file_bytes, deps=deps.tree if deps else None,
            deps_lease=deps.take_lease() if deps else None,
        )  # fmt: skip
        # Every host-side step on the tree (git, packaging) ends by the build's own deadline.
        workspace.deadline = started + spec.build_timeout
        emit("log", {"text": f"Working on {recipe.name} at commit {start[:10]}."})
        check_cancel()

        def stop_command() -> bool:
            # Commands stop when the person cancels, and when a full checkout outgrows its quota (an
            # overlay's layer filesystem enforces the quota itself).
            return sink.cancelled() or workspace.over_quota()

        sandbox, toolchains = open_sandbox(spec, recipe, workspace, debug=spec.sandbox_debug)
        opened = sandbox
        # Steps with `runs_on` (an iOS build on a Mac) go to a runner; everything else runs here.
        sandbox = route_steps(sandbox, recipe, spec.runners, workspace=workspace, repo_url=spec.repo_url,
                              base_commit=base, emit=emit)  # fmt: skip
        if toolchains:
            emit("log", {"text": f"Toolchains: {describe(toolchains)}."})
        if recipe.services:
            emit("log", {"text": f"Services beside every command: {', '.join(recipe.services.names)}."})

        def run_setup() -> None:
            for command in recipe.setup:
                emit("step", {"step": "setup", "text": f"Setting up: {command}"})
                # Setup commands alone may reach the target's allowed hosts (through the sandbox's proxy).
                try:
                    outcome = sandbox.run(["bash", "-c", command], timeout=step_timeout(recipe.setup_timeout),
                                          network=bool(spec.egress_hosts), cancel=stop_command)  # fmt: skip
                except SandboxError as exc:
                    raise ServiceError("sandbox_unavailable", str(exc)) from exc
                check_cancel()
                emit("command", {"command": command, "exit_code": outcome.exit_code, "tail": outcome.output[-3000:]})
                workspace.check_quota()  # a command that filled the disk fails for that reason, in plain words
                if outcome.exit_code != 0 or outcome.killed_reason:
                    raise UserError(
                        "setup_failed", f"'{command}' exited with {outcome.exit_code}: {outcome.output[-1500:]}"
                    )

        if deps is not None and deps.hit is not None:
            emit("log", {"text": deps.describe()})
        else:
            run_setup()
            if deps is not None:
                emit("log", {"text": keep_layer(deps, workspace)})
        locks = deplayer.LockWatch(workspace, recipe, deps.files) if deps is not None else None

        def before_verify() -> str | None:
            """Setup again when the agent changed a lock file, so the tests see the new dependencies. Nothing
            of it becomes a layer: the agent's change is not the target's code. Returns why setup failed."""
            if locks is None:
                return None
            changed = locks.changed()
            if not changed:
                return None
            network = "with the hosts the target allows" if spec.egress_hosts else "without network (none allowed)"
            emit("log", {"text": f"The lock files changed ({deplayer.describe_inputs(tuple(changed))}): "
                                 f"running setup again before the tests, {network}."})  # fmt: skip
            try:
                run_setup()
            except UserError as exc:
                if exc.code != "setup_failed":
                    raise
                return exc.detail
            locks.reset()  # setup may rewrite a lock file itself
            return None

        # The browser check (agents/browser.py): the app as it is is built and opened first, so problems
        # it already had are not held against the change, and its "before" screenshots are taken.
        page_check = PageCheck(workspace.tree, recipe) if recipe.check.enabled and spec.browser_check else None
        if recipe.check.enabled and not spec.browser_check:
            emit("log", {"text": "The browser check is switched off on this store (BROWSER_CHECK): the change "
                                 "is checked by the app's own build and tests only."})  # fmt: skip
        if page_check is not None:
            check_before(page_check, recipe, sandbox, timeout=step_timeout, cancel=stop_command, emit=emit,
                         result=result, shots_dir=shots_folder(spec))  # fmt: skip
            check_cancel()

        sink.stage("running")
        emit("step", {"step": "agent", "text": "Claude is reading the code and making the change"})

        def on_verify(report: VerifyReport) -> None:
            emit("verify", report.as_event())

        from agents.tools import Toolbox  # local: tools imports verify, both light

        toolbox = Toolbox(
            workspace.tree, sandbox, recipe, max_verify_rounds=spec.max_verify_rounds,
            command_timeout=spec.command_timeout, remaining=remaining, cancel=stop_command, on_verify=on_verify,
            before_verify=before_verify, smoke=page_check.run if page_check else None,
            browser=page_check.picture if page_check else None,
        )  # fmt: skip
        recorded: dict[str, list[dict]] = {"agent": [], "judge": []}  # by the purpose of the call
        loop = AgentLoop(
            provider.client(), model=provider.model,
            on_message=(
                (lambda message, purpose: recorded[purpose].append(recording_entry(message))) if spec.record_to
                else None
            ),
            system=system_blocks(recipe=recipe, mirror=spec.mirror, commit=start, target=spec.target, idea=spec.idea),
            toolbox=toolbox, emit=emit, limits=spec.limits, price=price,
            price_version=version, remaining=remaining, cancelled=sink.cancelled, live=provider.live,
        )  # fmt: skip
        try:
            judge = start_judge(spec, provider, loop, recipe, emit, shots=lambda: judge_shots(page_check, spec))
            if judge is not None:
                toolbox.judge = lambda summary, report: judge.review(summary, judged_diff(workspace, recipe), report)
            result.summary = loop.run([first_message(spec.idea, spec.history, spec.attachments)])
        finally:
            if spec.record_to:
                write_recording(spec, recorded["agent"], result.summary, provider.model, recorded["judge"])
        check_cancel()
        workspace.check_quota()

        sink.stage("verifying")
        report = toolbox.last_verify
        if report is not None and report.passed and not toolbox.dirty and not toolbox.ran_since_verify:
            emit("step", {"step": "verify", "text": "The app's own build and tests passed on the final change"})
        else:
            emit("step", {"step": "verify", "text": "Running the app's own build and tests"})
            problem = before_verify()
            if problem:
                raise UserError("setup_failed", problem)
            report = run_verify(sandbox, recipe, timeout=step_timeout, cancel=stop_command,
                                smoke=page_check.run if page_check else None)  # fmt: skip
            check_cancel()
            on_verify(report)
        result.verify = report.as_event()
        result.smoke = report.smoke.as_event() if report.smoke is not None else {}
        if report.smoke is not None and report.smoke.skipped:
            emit("log", {"text": report.smoke.headline()})
        workspace.check_quota()
        if not report.passed:
            failed = report.failed_step
            error = UserError(failure_code(report), report.for_model())
            # The message names the tests that failed, not a generic "describe it more simply".
            error.change = ChangeState(
                edited=True, checked=True, handed_over=True, broken_step=failed.step if failed else "",
                failing=tuple(report.failing_names(limit=1000)),
            )  # fmt: skip
            raise error

        if page_check is not None:
            # The judge pictured the change when the agent finished: when nothing was rebuilt since (the
            # agent's own last verify stands), those are the final pictures, and the browser need not run again.
            reuse = judge is not None and judge.pictured and report is toolbox.last_verify
            shots = judge.pictured if reuse else page_check.after_change(shots_folder(spec))
            if isinstance(shots, str):
                emit("log", {"text": f"No screenshots of the change: {shots}."})
            else:
                result.screenshots += shots

        sink.stage("packaging")
        emit("step", {"step": "package", "text": "Packaging the prototype"})
        artifact = package(workspace.tree, recipe, spec.output_dir, spec.target, deadline=workspace.deadline,
                           signing_key=spec.apk_signing_key)  # fmt: skip
        web_part = package_web_part(workspace.tree, recipe, spec.output_dir, spec.target, deadline=workspace.deadline)
        for packaged in (artifact, web_part) if web_part else (artifact,):
            result.artifacts.append(packaged)
            emit("artifact", {"kind": packaged.kind, "size": packaged.size, "sha256": packaged.sha256,
                              "filename": packaged.filename})  # fmt: skip

        workspace.exclude = (recipe.artifact.path,)
        message = f"{spec.idea.strip()}\n\n{result.summary}\n"
        result.result_commit = workspace.commit(message, spec.result_ref)
        if workspace.left_out:
            emit("log", {"text": f"Not kept in the repository (over {spec.max_committed_file_bytes // 2**20} MiB each): "
                                 + ", ".join(workspace.left_out[:20])})  # fmt: skip
        stat = workspace.diffstat(result.result_commit)
        result.diffstat = stat.as_dict()
        # The whole diff is streamed to a file; only its head is held in memory.
        result.diff_file = spec.output_dir / f"{spec.target}.patch"
        result.diff = workspace.diff(result.result_commit, to=result.diff_file)
        emit("diffstat", result.diffstat)
    except Cancelled:
        result.cancelled = True
        emit("log", {"text": "The build was cancelled."})
    except BuildError as exc:
        if workspace is not None and exc.code not in ("disk_quota", "timed_out"):
            # A full disk shows up as whatever failed next (a setup command, the tests, the agent):
            # name the cause instead.
            exc = _over_quota(workspace) or exc
        exc.detail = scrub(exc.detail)
        result.error = exc
    except Exception as exc:  # noqa: BLE001 - anything unexpected is ours, with the details kept
        result.error = ServiceError("internal", scrub("".join(traceback.format_exception(exc))[-4000:]))
    finally:
        if loop is not None:
            result.usage = loop.state.usage
            result.cost = loop.state.cost
            result.turns = loop.state.turns
        if judge is not None:  # kept on failures too: a rejected change shows what it still lacked
            result.checklist = judge.checklist
            result.judge = judge.outcome()
            if judge.pictured and not any(shot.moment == "after" for shot in result.screenshots):
                result.screenshots += judge.pictured  # and what the judge saw of it
        else:
            result.cost = Decimal(0)
        try:
            if opened is not None:
                opened.close()
            git.close_workspace(spec.work_dir / "ws")  # unmounts the overlay before the files go
        finally:
            git.remove_tree(spec.work_dir)  # without recursion: the tree may be nested thousands deep
    return result


def check_before(
    page_check: PageCheck, recipe: Recipe, sandbox: Sandbox, *, timeout, cancel, emit, result: BuildResult,
    shots_dir: Path,
) -> None:  # fmt: skip
    """Build the app as it is (the start commit) and open it in the browser: what it already shows wrong
    is not counted against the change, and its pictures are the "before" screenshots. A start that does
    not build, or whose page has problems, is only noted: the build goes on."""
    emit("step", {"step": "smoke", "text": "Opening the app as it is in a browser, to compare the change with"})
    if recipe.build is not None:
        try:
            outcome = sandbox.run(["bash", "-c", recipe.build.command], timeout=timeout(recipe.build.timeout),
                                  cancel=cancel)  # fmt: skip
        except SandboxError as exc:
            raise ServiceError("sandbox_unavailable", str(exc)) from exc
        if outcome.exit_code != 0 or outcome.killed_reason:
            emit("log", {"text": f"The app as it is did not build (exit code {outcome.exit_code}), so every problem "
                                 "the browser finds on the change counts."})  # fmt: skip
            return
    report, shots = page_check.before_change(shots_dir)
    result.screenshots += shots
    if report.skipped:
        emit("log", {"text": report.headline()})
    elif report.pages and any(page.problems() for page in report.pages):
        emit("log", {"text": "Before the change, the browser already saw: "
                             + "; ".join(f"{p.path}: {x}" for p in report.pages for x in p.problems())[:2000]
                             + ". These do not count against the change."})  # fmt: skip
    else:
        emit("log", {"text": f"Before the change the page opened without errors ({report.duration:.1f} s)."})


def keep_layer(deps: deplayer.DepLayer, workspace: git.Workspace) -> str:
    """Store what setup wrote as the dependency layer of `deps.key`; returns the line for the build log.
    A layer that cannot be kept (a full disk) costs the next build a setup, never this build."""
    try:
        stored = deplayer.store_layer(deps, workspace)
    except OSError as exc:
        return f"The installed dependencies could not be kept for later builds ({exc}): the next build sets up again."
    if not stored:
        return "Another build kept the same dependencies first: later builds use its layer."
    return (
        f"Dependencies kept for later builds of {deplayer.describe_inputs(deps.inputs)}: "
        "they will skip setup and need no network."
    )


def baseline_commit(repo_url: str, mirror, branch: str) -> str:
    """The commit `branch` points at now: the mirror is refreshed first, so a moved branch is seen."""
    git.sync_mirror(repo_url, mirror)
    return git.resolve(mirror, branch)


def build_baseline(spec: BaselineSpec) -> BuildResult:
    """Build a target's default branch as it is, the way a prototype's version is built without its agent:
    workspace at `spec.commit` → recipe (from that commit, or the admin-written one) → setup → the recipe's
    [build] → package. Everything runs in the sandbox, as for a prototype: a default branch is the
    company's code, but its build scripts still run with no secrets and no network beyond setup's hosts.
    Never raises for a failed build: `error` says why. The result has no result commit (nothing changed)."""
    started = time.monotonic()
    scrub = Scrubber(spec.secrets)
    result = BuildResult(base_commit=spec.commit)
    workspace: git.Workspace | None = None
    opened: Sandbox | None = None

    def timeout(wanted: float) -> float:
        left = spec.build_timeout - (time.monotonic() - started)
        if left <= 1:
            raise UserError("timed_out", f"the build took longer than {spec.build_timeout:.0f} s")
        return min(wanted, left)

    def run(sandbox, command: str, wanted: float, code: str, *, network: bool = False) -> None:
        try:
            outcome = sandbox.run(["bash", "-c", command], timeout=timeout(wanted), network=network)
        except SandboxError as exc:
            raise ServiceError("sandbox_unavailable", str(exc)) from exc
        if outcome.exit_code != 0 or outcome.killed_reason:
            raise UserError(code, f"'{command}' exited with {outcome.exit_code}: {outcome.output[-1500:]}")

    try:
        recipe = load_recipe(spec, spec.mirror, spec.commit)
        result.recipe_name = recipe.name
        result.serve = recipe.serve
        result.services = recipe.services
        if spec.work_dir.exists():
            git.close_workspace(spec.work_dir / "ws")
            git.remove_tree(spec.work_dir)
        spec.work_dir.mkdir(parents=True)
        spec.work_dir.chmod(0o711)  # the sandbox's unprivileged user must reach the tree inside
        deps = deplayer.find_layer(spec.mirror, spec.commit, recipe)  # a default branch: the shared layers
        workspace = git.prepare_workspace(
            spec.mirror, spec.commit, spec.work_dir / "ws", quota=spec.disk_quota_bytes,
            deps=deps.tree if deps else None, deps_lease=deps.take_lease() if deps else None,
        )  # fmt: skip
        workspace.deadline = started + spec.build_timeout
        sandbox, _ = open_sandbox(spec, recipe, workspace)
        opened = sandbox
        sandbox = route_steps(sandbox, recipe, spec.runners, workspace=workspace, repo_url=spec.repo_url,
                              base_commit=spec.commit, emit=lambda kind, data: None)  # fmt: skip
        if deps is None or deps.hit is None:
            for command in recipe.setup:
                run(sandbox, command, recipe.setup_timeout, "setup_failed", network=bool(spec.egress_hosts))
            if deps is not None:
                keep_layer(deps, workspace)
        if recipe.build is not None:
            run(sandbox, recipe.build.command, recipe.build.timeout, "build_failed")
        workspace.check_quota()
        result.artifacts.append(
            package(workspace.tree, recipe, spec.output_dir, spec.target, deadline=workspace.deadline,
                    signing_key=spec.apk_signing_key)
        )  # fmt: skip
        web_part = package_web_part(workspace.tree, recipe, spec.output_dir, spec.target, deadline=workspace.deadline)
        if web_part:
            result.artifacts.append(web_part)
    except BuildError as exc:
        exc.detail = scrub(exc.detail)
        result.error = exc
    except Exception as exc:  # noqa: BLE001 - anything unexpected is ours, with the details kept
        result.error = ServiceError("internal", scrub("".join(traceback.format_exception(exc))[-4000:]))
    finally:
        try:
            if opened is not None:
                opened.close()
            git.close_workspace(spec.work_dir / "ws")
        finally:
            git.remove_tree(spec.work_dir)
    return result
