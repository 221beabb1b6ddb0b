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
    "smoke_failed": ErrorInfo(
        USER,
        "The change was made and the app's own tests passed, but the page showed errors when it was opened "
        "in a browser, so nothing was published. The details below say what the browser saw. Try describing "
        "the idea more simply, or in smaller steps, and build again.",
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
        "Claude stopped without finishing the change, so nothing was published. Build again, or ask for a "
        "smaller first step.",
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
    "judge_rejected": ErrorInfo(
        USER,
        "The change was made and the app's own tests passed, but a review against the checklist written from "
        "your idea found it still does not do what was asked, so nothing was published. The details below say "
        "what was missing; try describing the idea more precisely and build again.",
    ),
    "sandbox_unavailable": ErrorInfo(
        OURS,
        "The build machine could not start its safe sandbox. This is our problem, not yours, and it "
        "was not charged to you. Try again later; an admin can see the details.",
    ),
    "service_missing": ErrorInfo(
        OURS,
        "This app's tests need a service (a database or a cache) that the build machines do not have yet, so "
        "the build stopped before Claude started. It was not charged to you; the details below say which, for "
        "an admin to install.",
    ),
    "toolchain_missing": ErrorInfo(
        OURS,
        "This app needs a version of its programming language or tools that the build machines do not have "
        "yet, so the build stopped before Claude started. It was not charged to you; the details below say "
        "which, for an admin to add.",
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
    "sample_does_not_fit": ErrorInfo(
        OURS,
        "This store runs offline and replays sample conversations written for the app's code as it is on its "
        "default branch; this version already differs where the sample makes its change, so it cannot be "
        "replayed here. Nothing was spent. With a Claude API key any idea can be built.",
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
    "signing_failed": ErrorInfo(
        OURS,
        "The app was built, but the store could not sign it, so it could not be installed. It was not charged "
        "to you. An admin needs to check the store's Android signing key (the details say what went wrong).",
    ),
    "worker_lost": ErrorInfo(
        OURS,
        "The machine running this build stopped answering. It was not charged to you. Try again.",
    ),
    "runner_lost": ErrorInfo(
        OURS,
        "The build machine this app needs (a runner, such as a Mac for iOS) stopped answering twice in the middle "
        "of its step. It was not charged to you. Try again; an admin can see which runner it was.",
    ),
    "runner_unavailable": ErrorInfo(
        OURS,
        "No build machine of the kind this app needs (a runner, such as a Mac for iOS) took the step in time. "
        "It was not charged to you. Try again later, or ask an admin to start a runner.",
    ),
    "internal": ErrorInfo(
        OURS,
        "Something went wrong on our side. It was not charged to you. Try again; if it keeps happening, tell an admin.",
    ),
}


def describe(code: str) -> ErrorInfo:
    return MESSAGES.get(code, MESSAGES["internal"])


@dataclass(frozen=True)
class ChangeState:
    """Where Claude's change stood when the agent stopped: whether the app's own build and tests
    (`verify`) ran on it, and what the last run found. Plain values, so this module stays free of the
    engine's types."""

    edited: bool  # Claude changed at least one file
    checked: bool  # verify ran at least once
    passed: bool = False  # the last verify passed
    edited_since: bool = False  # files were edited after the last verify
    broken_step: str = ""  # "build" or "test": where the last verify failed
    failing: tuple[str, ...] = ()  # the tests the last verify saw fail, in its order
    handed_over: bool = False  # Claude called finish, and the engine's own last check failed on the change


# The codes with which the agent stops before its change is done, and why, said in brackets after
# "Claude stopped before …". The stop is rarely the real cause: when the app's tests were failing at
# that moment, that is what the person reads first, with the tests' names.
STOP_REASONS: dict[str, str] = {
    "no_finish": "",
    "turns_exhausted": "it used all the steps a build may take",
    "budget_reached": "the build reached its spending limit",
    "stuck": "it kept repeating the same step without progress",
    "tests_failed": "it used all the checks a build may run",
    "build_failed": "it used all the checks a build may run",
}
NEXT_STEP = {
    "budget_reached": "Try a smaller idea, or ask an admin to raise the limit.",
    "stuck": "Try describing the idea differently, or in smaller steps.",
}
MAX_NAMED_TESTS = 10


def _named(tests: tuple[str, ...]) -> str:
    shown = [name if len(name) <= 120 else name[:119] + "…" for name in tests[:MAX_NAMED_TESTS]]
    more = len(tests) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more else "")


def stop_message(code: str, change: ChangeState) -> str | None:
    """The message for an agent that stopped (a code in STOP_REASONS) with its change as `change`
    says, naming the real cause; None when the code's own message in MESSAGES says it best."""
    if code not in STOP_REASONS:
        return None
    because = f" ({STOP_REASONS[code]})" if STOP_REASONS[code] else ""
    step = NEXT_STEP.get(code, "Try a smaller idea, or split it into follow-ups.")
    if change.handed_over:
        if change.broken_step == "build":
            found = "The app no longer built with Claude's finished change"
        else:
            names = f": {_named(change.failing)}" if change.failing else ""
            found = f"The app's own tests failed on Claude's finished change{names}"
        return f"{found}, so nothing was published. {step}"
    if change.checked and not change.passed and not change.edited:
        # Nothing was edited (through the editor), so the tests may fail on the app as it is.
        build = change.broken_step == "build"
        what, they = ("build failed", "it") if build else ("tests failed", "they")
        names = f": {_named(change.failing)}" if change.failing and not build else ""
        return (f"The app's own {what} before Claude edited any file{names}. Claude stopped before {they} passed"
                f"{because}, so nothing was published. If that also happens on the app as it is, ask the "
                "app's admin to check its recipe.")  # fmt: skip
    if change.checked and not change.passed:
        if change.broken_step == "build":
            found, them = "The app no longer built after Claude's change", "it"
        elif change.failing:
            found, them = f"The app's own tests failed after Claude's change: {_named(change.failing)}", "them"
        else:
            found, them = "The app's own tests failed after Claude's change", "them"
        return f"{found}. Claude stopped before fixing {them}{because}, so nothing was published. {step}"
    if not change.edited:
        return f"Claude stopped before editing any file{because}, so nothing was published. {step}"
    if not change.checked or change.edited_since:
        latest = "its latest change" if change.checked else "its change"
        return (f"Claude stopped before checking {latest} with the app's own build and tests{because}, "
                f"so nothing was published. {step}")  # fmt: skip
    if code == "no_finish":
        return ("Claude stopped without handing over its change, although the app's own build and tests "
                "passed on it, so nothing was published. Build again to try once more.")  # fmt: skip
    return None


class BuildError(Exception):
    """A build cannot go on. `code` is stable and maps to a message in MESSAGES; `detail` is for the
    curious (shown under the message, never containing secrets). `change` is set by the agent loop
    when the agent stopped: the message then names the real cause (the tests that were failing)."""

    family = OURS

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.change: ChangeState | None = None

    @property
    def message(self) -> str:
        if self.change is not None:
            specific = stop_message(self.code, self.change)
            if specific:
                return specific
        return describe(self.code).message


class UserError(BuildError):
    family = USER


class JudgeRejected(UserError):
    """The judge still found checklist items unmet after its last round (code "judge_rejected"). The
    message names them, so the person reads what the prototype still does not do."""

    def __init__(self, unmet: tuple[str, ...] | list[str], detail: str = ""):
        super().__init__("judge_rejected", detail)
        self.unmet = tuple(unmet)

    @property
    def message(self) -> str:
        if not self.unmet:
            return describe(self.code).message
        shown = [item if len(item) <= 200 else item[:199] + "…" for item in self.unmet[:MAX_NAMED_TESTS]]
        more = len(self.unmet) - len(shown)
        listed = "; ".join(f"“{item}”" for item in shown) + (f" and {more} more" if more else "")
        return (
            "The change was made and the app's own tests passed, but a review against the checklist written from "
            f"your idea found these still not done: {listed}. Nothing was published; try describing the idea more "
            "precisely and build again."
        )


class ServiceError(BuildError):
    family = OURS


class SampleDoesNotFit(ServiceError):
    """A sample conversation (the offline demo) refused on code it was not written for (code
    "sample_does_not_fit"): its edits would not apply there as written. Ours, so never charged: it is
    refused before anything runs, and the store offers only the samples that fit. The message names the
    sample and the first edit that would not apply (`reason`, in plain words)."""

    def __init__(self, idea: str, app: str, reason: str, *, on_version: bool):
        super().__init__("sample_does_not_fit", reason)
        self.idea, self.app, self.on_version = idea, app, on_version

    @property
    def message(self) -> str:
        sample = f"The sample conversation for “{self.idea.strip()}” was written for {self.app}'s code"
        if self.on_version:  # a follow-up or a remix: the version already has other changes
            return (f"{sample} as it is on its default branch; this version already differs where it makes its "
                    f"change ({self.detail}), so it cannot be replayed here. Nothing was spent. With a Claude "
                    "API key any idea can be built.")  # fmt: skip
        # The default branch itself: the app's code moved on since the sample was written.
        return (f"{sample} as it was on its default branch; that code has changed since where the sample makes "
                f"its change ({self.detail}), so it cannot be replayed. Nothing was spent. An admin needs to "
                "update the sample conversations; with a Claude API key any idea can be built.")  # fmt: skip


class Cancelled(Exception):
    """The person cancelled the build; not an error."""


def error_for(code: str, detail: str = "") -> BuildError:
    """Make the error of the right family for a code."""
    cls = UserError if describe(code).family == USER else ServiceError
    return cls(code, detail)
