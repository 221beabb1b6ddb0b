"""The build engine: a plain Python package that never imports Django.

    from agents import BuildSpec, build
    result = build(spec, sink)

Runs from the command line too: `python -m agents build --repo PATH --idea "…"`.
"""

from agents.engine import baseline_commit, build, build_baseline
from agents.errors import BuildError, ServiceError, UserError
from agents.spec import ArtifactFile, Attachment, BaselineSpec, BuildResult, BuildSpec, PriorRevision, Sink

__all__ = [
    "ArtifactFile",
    "Attachment",
    "BaselineSpec",
    "BuildError",
    "BuildResult",
    "BuildSpec",
    "PriorRevision",
    "ServiceError",
    "Sink",
    "UserError",
    "baseline_commit",
    "build",
    "build_baseline",
]
