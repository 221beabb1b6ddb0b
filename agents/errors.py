"""Build errors: two families with stable codes, and their plain-language messages in one place.

`UserError` is about what the person asked for or the target they picked (budget reached, tests failed,
the idea was refused). `ServiceError` is ours (the sandbox would not start, the model service is down);
a build that failed with a ServiceError is not charged to the person's budget.
"""

from __future__ import annotations

from dataclasses import dataclass

USER = "user"
OURS = "ours"


@dataclass(frozen=True)
class ErrorInfo:
    family: str
    message: str


# code -> what a non-engineer reads on the build page, with the next step to take.
MESSAGES: dict[str, ErrorInfo] = {
    "no_recording": ErrorInfo(
        USER,
        "This store runs offline, so it can only replay its sample conversations (written by hand, not "
        "recorded with Claude), and there is none for this idea. Pick one of the suggested ideas, or ask an "
        "admin to set ANTHROPIC_API_KEY so Claude can build new ideas.",
    ),
    "tests_failed": ErrorInfo(
        USER,
        "The change was made, but the app's own tests did not pass, so nothing was published. "
        "Try describing the idea more simply, or in smaller steps, and build again.",
    ),
    "build_failed": ErrorInfo(
        USER,
        "The change was made, but the app no longer builds, so nothing was published. "
        "Try describing the idea more simply and build again.",
    ),
    "refused": ErrorInfo(
        USER,
        "Claude declined to build this idea. Rephrase it as a product change to the app and try again.",
    ),
    "budget_reached": ErrorInfo(
        USER,
        "This build reached its spending limit before it was done, so it was stopped. "
        "Try a smaller idea, or ask an admin to raise the limit.",
    ),
    "turns_exhausted": ErrorInfo(
        USER,
        "Claude used all the steps a build may take without finishing. "
        "Try a smaller idea, or split it into follow-ups.",
    ),
    "stuck": ErrorInfo(
        USER,
        "Claude kept repeating the same step without progress, so the build was stopped. "
        "Try describing the idea differently.",
    ),
    "no_finish": ErrorInfo(
        USER,
        "Claude stopped without finishing the change. Try describing the idea more concretely.",
    ),
    "timed_out": ErrorInfo(
        USER,
        "The build took longer than it is allowed to and was stopped. Try a smaller idea.",
    ),
    "recipe_invalid": ErrorInfo(
        USER,
        "This app's build recipe (prototype.toml) has a problem, so it cannot be built yet. "
        "The details below say where; ask the app's admin to fix it.",
    ),
    "context_exceeded": ErrorInfo(
        USER,
        "The conversation with Claude grew too long for one build. Try a smaller idea, or split it into follow-ups.",
    ),
    "setup_failed": ErrorInfo(
        USER,
        "The app's setup commands failed before Claude could start. Ask the app's admin to check its recipe.",
    ),
    "unsafe_files": ErrorInfo(
        USER,
        "The prototype left files behind that the store cannot save safely (for example folders nested "
        "thousands deep, or far too many files), so nothing was published. The details below say what; "
        "try the idea again, asking for a simpler result.",
    ),
    "disk_quota": ErrorInfo(
        USER,
        "The prototype wrote more to disk than a build may use, so the build was stopped. The details "
        "below give the limit; try a smaller idea, or ask an admin to raise BUILD_DISK_QUOTA_MB.",
    ),
    "sandbox_unavailable": ErrorInfo(
        OURS,
        "The build machine could not start its safe sandbox. This is our problem, not yours, and it "
        "was not charged to you. Try again later; an admin can see the details.",
    ),
    "model_unavailable": ErrorInfo(
        OURS,
        "Claude's service was unavailable, so the build could not go on. It was not charged to you. "
        "Try again in a few minutes.",
    ),
    "recording_mismatch": ErrorInfo(
        OURS,
        "The sample conversation no longer fits this app (the app changed since it was written). "
        "It was not charged to you; an admin needs to update the sample conversations.",
    ),
    "model_unpriced": ErrorInfo(
        OURS,
        "This store is set up to use a model it has no price for, so no build may start: its cost could not "
        "be counted. It was not charged to you; an admin needs to add the model's price or choose another model.",
    ),
    "workspace_failed": ErrorInfo(
        OURS,
        "We could not get a copy of the app's code to work on. It was not charged to you. "
        "Try again later; an admin can see the details.",
    ),
    "packaging_failed": ErrorInfo(
        USER,
        "The change built and passed its tests, but its result could not be packaged. The details below say why.",
    ),
    "worker_lost": ErrorInfo(
        OURS,
        "The machine running this build stopped answering. It was not charged to you. Try again.",
    ),
    "internal": ErrorInfo(
        OURS,
        "Something went wrong on our side. It was not charged to you. Try again; if it keeps happening, tell an admin.",
    ),
}


def describe(code: str) -> ErrorInfo:
    return MESSAGES.get(code, MESSAGES["internal"])


class BuildError(Exception):
    """A build cannot go on. `code` is stable and maps to a message in MESSAGES; `detail` is for the
    curious (shown under the message, never containing secrets)."""

    family = OURS

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail

    @property
    def message(self) -> str:
        return describe(self.code).message


class UserError(BuildError):
    family = USER


class ServiceError(BuildError):
    family = OURS


class Cancelled(Exception):
    """The person cancelled the build; not an error."""


def error_for(code: str, detail: str = "") -> BuildError:
    """Make the error of the right family for a code."""
    cls = UserError if describe(code).family == USER else ServiceError
    return cls(code, detail)
