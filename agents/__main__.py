"""Run the engine without Django: `python -m agents build --repo PATH --idea "…"`."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

from agents.engine import build
from agents.providers import ProviderConfig
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
        print(f"[{kind}] {text}", file=self.stream, flush=True)

    def stage(self, name: str) -> None:
        print(f"== {name}", file=self.stream, flush=True)

    def cancelled(self) -> bool:
        return False


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agents")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="build one idea against a repository")
    cmd.add_argument("--repo", required=True, help="path or git URL of the repository")
    cmd.add_argument("--idea", required=True)
    cmd.add_argument("--ref", default="HEAD", help="branch, tag or commit to start from (default: HEAD)")
    cmd.add_argument("--target", default="", help="the target's name (picks the samples); default: the folder name")
    cmd.add_argument(
        "--provider",
        default="replay" if not os.environ.get("ANTHROPIC_API_KEY") else "anthropic",
        help="anthropic, bedrock, vertex, or replay: play a sample conversation written by hand, calling no model "
        "(default: anthropic with ANTHROPIC_API_KEY, else replay)",
    )
    cmd.add_argument("--model", default=os.environ.get("AGENT_MODEL", "claude-sonnet-5-5"))
    cmd.add_argument("--cassette", type=Path, help="replay this sample conversation, whatever the idea")
    cmd.add_argument(
        "--recordings",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "examples" / "recordings",
        help="the folder of sample conversations (written by hand) that replay picks from by target and idea",
    )
    cmd.add_argument("--sandbox", default="bwrap")
    cmd.add_argument("--out", type=Path, default=Path("."), help="where to write the artifact")
    cmd.add_argument("--json", action="store_true", help="print events as JSON lines")
    cmd.add_argument("--record", type=Path, help="write the live conversation to this file, to replay as a sample")
    cmd.add_argument(
        "--judge",
        action="store_true",
        default=os.environ.get("AGENT_JUDGE") == "on",
        help="ask a second model call whether the change does what was asked",
    )
    args = parser.parse_args(argv)

    key = os.environ.get("ANTHROPIC_API_KEY", "")
    target = args.target or Path(args.repo.rstrip("/")).name.removesuffix(".git")
    scratch = Path(tempfile.mkdtemp(prefix="agents-"))
    scratch.chmod(0o711)  # the sandbox's unprivileged user must reach the workspace inside
    spec = BuildSpec(
        target=target, repo_url=args.repo, base_ref=args.ref, idea=args.idea,
        mirror=scratch / "mirror.git", work_dir=scratch / "build", output_dir=args.out.resolve(),
        result_ref="refs/prototypes/cli/1",
        provider=ProviderConfig(name=args.provider, model=args.model, api_key=key,
                                base_url=os.environ.get("ANTHROPIC_BASE_URL", ""), recordings=args.recordings,
                                cassette=args.cassette),
        sandbox=args.sandbox, secrets=(key,), record_to=args.record, judge=args.judge,
    )  # fmt: skip
    result = build(spec, PrintSink(sys.stdout, args.json))
    if result.ok:
        for artifact in result.artifacts:
            print(f"artifact: {artifact.path} ({artifact.size} bytes, sha256 {artifact.sha256})")
        print(f"summary: {result.summary}")
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
