"""Run the engine without Django: `python -m agents build --repo PATH --idea "…"`, and measure it:
`python -m agents eval SUITE` (agents/evals.py)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

from agents import workspace as git
from agents.cli import (
    RECORDINGS,
    default_cache,
    default_judge,
    default_model,
    default_provider,
    mirror_for,
    provider_config,
    repo_source,
    safe_name,
)
from agents.egress import check_hosts
from agents.engine import build
from agents.errors import BuildError, UserError
from agents.recipe import parse_recipe
from agents.spec import BuildSpec


class PrintSink:
    def __init__(self, stream, as_json: bool):
        self.stream = stream
        self.as_json = as_json

    def emit(self, kind: str, data: dict) -> None:
        if self.as_json:
            print(json.dumps({"kind": kind, **data}), file=self.stream, flush=True)
            return
        text = data.get("text") or data.get("headline") or ""
        if kind == "tool_call":
            text = " ".join(str(v) for k, v in data.items() if k not in {"id"} and v)
        elif kind == "tool_result":
            text = ("ok " if data["ok"] else "error ") + data["output"].splitlines()[0][:160] if data["output"] else ""
        elif kind == "model_call":
            text = (f"turn {data['turn']}: {data['input_tokens']} in, {data['cache_read_tokens']} cached, "
                    f"{data['cache_write_tokens']} written, {data['output_tokens']} out, ${data['cost']}")  # fmt: skip
        elif kind == "checklist":
            text = " | ".join(data["items"])
        elif kind == "judge":
            marks = {True: "done", False: "NOT done", None: "not graded"}
            text = f"round {data['round']}: {data['verdict']} " + " | ".join(
                f"{item['item']}: {marks[item['passed']]}" for item in data["items"]
            )
        print(f"[{kind}] {text}", file=self.stream, flush=True)

    def stage(self, name: str) -> None:
        print(f"== {name}", file=self.stream, flush=True)

    def cancelled(self) -> bool:
        return False


BUILD_HELP = """\
Build one idea against a repository, as the store would: the repository's own prototype.toml (or
--recipe), its setup, Claude's change in the sandbox, its build and tests, the packaged artifact.

Paths may be relative to the folder you run this from. The artifact and the change as a patch are
written to --out. The result commit is copied into --results, a bare git repository kept between runs
(created when missing): the command prints its commit, its ref and a `git fetch` line that brings it
into your clone. Your own repository is never written to. The temporary folder the build works in
(its mirror of the repository and workspace) is removed at the end, unless --keep is given.
"""


def next_ref(results: Path, target: str) -> str:
    """refs/prototypes/<target>/<n>, the first n not used in the results repository yet."""
    used = set()
    if (results / "HEAD").exists():
        listed = git.git("for-each-ref", "--format=%(refname)", f"refs/prototypes/{target}/", git_dir=results)
        used = {line.rsplit("/", 1)[-1] for line in listed.splitlines()}
    return f"refs/prototypes/{target}/{next(n for n in itertools.count(1) if str(n) not in used)}"


def keep_result(mirror: Path, results: Path, ref: str) -> None:
    """Copy the result commit into the results repository. Fetched from the build's mirror rather than
    pushed to it, so no hook of the results repository ever runs."""
    if not (results / "HEAD").exists():
        results.mkdir(parents=True, exist_ok=True)
        git.git("init", "--bare", "--quiet", str(results))
    git.git("fetch", "--quiet", "--no-tags", str(mirror), f"+{ref}:{ref}", git_dir=results)


def parse_args(argv) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m agents")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("runner", help="take build steps from a store and run them here (see: runner --help)")
    sub.add_parser("eval", help="run a suite of ideas and measure the results (see: eval --help)")
    cmd = sub.add_parser("build", help="build one idea against a repository", description=BUILD_HELP,
                         formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    cmd.add_argument("--repo", required=True, help="path or git URL of the repository")
    cmd.add_argument("--idea", required=True)
    cmd.add_argument("--ref", default="HEAD", help="branch, tag or commit to start from (default: HEAD)")
    cmd.add_argument("--target", default="", help="the target's name (picks the samples); default: the folder name")
    cmd.add_argument("--recipe", type=Path, metavar="FILE",
                     help="the recipe to use when the repository has no prototype.toml")  # fmt: skip
    cmd.add_argument("--allow-host", action="append", default=[], metavar="HOST", dest="allow_hosts",
                     help="a host the recipe's setup commands may reach, like registry.npmjs.org or *.example.com "
                     "(repeat for more); nothing else is reachable")  # fmt: skip
    cmd.add_argument("--ro-bind", action="append", default=[], type=Path, metavar="FOLDER", dest="ro_binds",
                     help="a folder of this machine the sandbox shows read-only at the same path, like a package "
                     "mirror the recipe's setup reads (repeat for more; the store's SANDBOX_RO_BINDS)")  # fmt: skip
    cmd.add_argument("--cache", type=Path, metavar="FOLDER",
                     default=default_cache(),
                     help="where each repository's mirror and dependency layers are kept between runs, so later "
                     "builds skip setup (default: ~/.cache/prototype-store)")  # fmt: skip
    cmd.add_argument("--toolchains", type=Path, metavar="FOLDER",
                     default=Path(os.environ["TOOLCHAIN_ROOT"]) if os.environ.get("TOOLCHAIN_ROOT") else None,
                     help="the toolchain folder a recipe's [toolchain] versions come from (default: $TOOLCHAIN_ROOT; "
                     "see docs/deploy.md, Toolchains)")  # fmt: skip
    cmd.add_argument(
        "--provider",
        default=default_provider(),
        help="anthropic, bedrock, vertex, or replay: play a sample conversation written by hand, calling no model "
        "(default: anthropic with ANTHROPIC_API_KEY, else replay)",
    )
    cmd.add_argument("--model", default=default_model())
    cmd.add_argument("--cassette", type=Path, help="replay this sample conversation, whatever the idea")
    cmd.add_argument(
        "--recordings",
        type=Path,
        default=RECORDINGS,
        help="the folder of sample conversations (written by hand) that replay picks from by target and idea",
    )
    cmd.add_argument("--sandbox", default="bwrap")
    cmd.add_argument("--out", type=Path, default=Path("."), help="where to write the artifact (default: here)")
    cmd.add_argument("--results", type=Path, metavar="PATH",
                     help="the bare git repository the result commit is copied into, kept between runs "
                     "(default: OUT/prototypes.git)")  # fmt: skip
    cmd.add_argument("--keep", action="store_true", help="keep the temporary folder the build worked in")
    cmd.add_argument("--json", action="store_true", help="print events as JSON lines")
    cmd.add_argument("--record", type=Path, help="write the live conversation to this file, to replay as a sample")
    cmd.add_argument(
        "--judge",
        action=argparse.BooleanOptionalAction,
        default=default_judge(),
        help="write a checklist from the idea and grade the finished change against it before it is kept "
        "(default: on, unless AGENT_JUDGE=off; a replayed sample is judged only when it carries a sample review)",
    )
    cmd.add_argument(
        "--browser-check",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="open a web or served result in headless Chromium in the sandbox before it is kept, with screenshots "
        "before and after the change (default: on; --no-browser-check relies on the app's own tests alone)",
    )
    args = parser.parse_args(argv)
    try:
        args.repo = repo_source(args.repo)
        args.allow_hosts = check_hosts(args.allow_hosts)
    except ValueError as exc:
        message = str(exc) if str(exc).startswith("--") else f"--allow-host: {exc}"
        cmd.error(message)
    args.recipe_text = None
    if args.recipe is not None:
        try:
            args.recipe_text = args.recipe.read_text()
            parse_recipe(args.recipe_text)
        except OSError as exc:
            cmd.error(f"--recipe: cannot read {args.recipe.resolve()}: {exc.strerror}")
        except UserError as exc:
            cmd.error(f"--recipe {args.recipe}: {exc.detail}")
    # Everything else the build opens is made absolute too, so no path depends on where a step runs.
    args.out = args.out.resolve()
    args.results = (args.results or args.out / "prototypes.git").resolve()
    args.cache = args.cache.resolve()
    for name in ("cassette", "record", "recordings"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    return args


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["runner"]:  # python -m agents runner: take build steps from a store (docs/runners.md)
        from agents.runner import main as runner_main

        return runner_main(argv[1:])
    if argv[:1] == ["eval"]:  # python -m agents eval SUITE: run a suite of ideas and measure them
        from agents.evals import main as eval_main

        return eval_main(argv[1:])
    args = parse_args(argv)
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    target = args.target or Path(args.repo.rstrip("/")).name.removesuffix(".git")
    try:
        result_ref = next_ref(args.results, safe_name(target))
    except BuildError as exc:
        print(f"--results: {args.results} is not a git repository the result can go into: {exc.detail}",
              file=sys.stderr)  # fmt: skip
        return 2
    scratch = Path(tempfile.mkdtemp(prefix="agents-"))
    scratch.chmod(0o711)  # the sandbox's unprivileged user must reach the workspace inside
    # The repository's mirror, its shared checkouts and its dependency layers are kept between runs in
    # the cache folder (one mirror per repository), so a second build of the same repository needs no
    # setup and no network, as in the store.
    mirror = mirror_for(args.cache, args.repo, target)
    mirror.parent.mkdir(parents=True, exist_ok=True)
    spec = BuildSpec(
        target=target, repo_url=args.repo, base_ref=args.ref, idea=args.idea,
        mirror=mirror, work_dir=scratch / "build", output_dir=args.out, result_ref=result_ref,
        provider=provider_config(args.provider, args.model, args.recordings, args.cassette),
        recipe_text=args.recipe_text, egress_hosts=args.allow_hosts,
        toolchain_root=args.toolchains.resolve() if args.toolchains else None,
        sandbox_ro_binds=tuple(str(p.resolve()) for p in args.ro_binds), sandbox=args.sandbox, secrets=(key,), record_to=args.record, judge=args.judge, browser_check=args.browser_check,
    )  # fmt: skip
    keep = args.keep
    try:
        result = build(spec, PrintSink(sys.stdout, args.json))
        if result.ok and result.result_commit:
            try:
                keep_result(spec.mirror, args.results, result_ref)
            except BuildError as exc:
                keep = True  # the result commit then lives only in the build's own mirror: keep it
                print(f"could not copy the result commit into {args.results}: {exc.detail}", file=sys.stderr)
                args.results = spec.mirror
    finally:
        if keep:
            print(f"kept the build's temporary folder: {scratch}")
        else:
            git.remove_tree(scratch)  # without recursion, never following links
    if result.ok:
        for artifact in result.artifacts:
            print(f"artifact: {artifact.path} ({artifact.size} bytes, sha256 {artifact.sha256})")
        if result.diff_file is not None:
            print(f"change: {result.diff_file}")
        if result.screenshots:
            moments = [m for m in ("before", "after") if any(shot.moment == m for shot in result.screenshots)]
            print(f"screenshots: {len(result.screenshots)} ({' and '.join(moments)} the change) in "
                  f"{result.screenshots[0].path.parent}")  # fmt: skip
        print(f"result commit: {result.result_commit}, kept in {args.results} as {result_ref}")
        branch = "prototype-" + result_ref.removeprefix("refs/prototypes/").replace("/", "-")
        print(f"to get it into your clone: git fetch {shlex.quote(str(args.results))} {result_ref}:{branch}")
        print(f"summary: {result.summary}")
        if result.judge:
            done = sum(item["passed"] is True for item in result.checklist)
            review = "sample review" if result.judge["replayed"] else "judge"
            print(f"{review}: {done} of {len(result.checklist)} checklist items done. {result.judge['verdict']}")
        if result.live_model:
            print(f"tokens: {result.usage.total} ({result.usage.cache_share:.0%} from cache), cost ${result.cost}, "
                  f"turns {result.turns}")  # fmt: skip
        else:
            print(f"replayed a sample conversation: no model was called, nothing was spent; turns {result.turns} "
                  f"(the sample's own token counts, not measured: {result.usage.total})")  # fmt: skip
        return 0
    if result.cancelled:
        print("cancelled")
        return 130
    print(f"failed ({result.error.code}): {result.error.message}\n{result.error.detail}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
