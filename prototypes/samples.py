"""The sample ideas of the offline demo (AGENT_PROVIDER=replay): which sample conversations can be
replayed on a version of a target's code.

A sample is a script of edits written for the target's default branch. On a version that already
differs where it makes its change (a follow-up or a remix of a version that has the same change), its
replay would build something broken, so the store offers only the samples that fit the version, and
refuses the others with the reason. The rule itself is agents.providers.replay.fit_problem; the engine
applies it again when the build starts, so a sample that slips past here still builds nothing broken.
"""

from __future__ import annotations

import logging

from django.conf import settings

from agents.errors import SampleDoesNotFit, ServiceError
from agents.providers.replay import Recording, find_recording, fit_problem, list_recordings
from prototypes.models import Target
from prototypes.targets import mirror_path

log = logging.getLogger(__name__)


def replaying() -> bool:
    return settings.AGENT_PROVIDER == "replay"


def _problem(target: Target, commit: str, recording: Recording) -> str | None:
    """Why `recording` does not fit `commit`, or None when it fits or when this host cannot tell (its
    mirror is missing or unreadable): the build then checks again, before anything runs."""
    try:
        return fit_problem(recording, mirror_path(target), commit)
    except (ServiceError, OSError):
        log.warning("could not check sample %s against %s of %s", recording.path, commit, target.slug, exc_info=True)
        return None


def fitting_samples(target: Target, commit: str) -> list[Recording]:
    """The target's samples that can be replayed on top of `commit` (a version's result commit; none for a
    version not built yet)."""
    if not replaying() or not commit:
        return []
    return [r for r in list_recordings(settings.RECORDINGS_DIR, target.slug) if _problem(target, commit, r) is None]


def sample_refusal(target: Target, commit: str, idea: str) -> str | None:
    """Why the sample conversation for `idea` cannot be replayed on top of `commit`, in the words the
    build would fail with; None when `idea` is not a sample (the build then says there is none), or it
    fits, or no model is replayed."""
    if not replaying():
        return None
    recording = find_recording(settings.RECORDINGS_DIR, target.slug, idea)
    if recording is None:
        return None
    problem = _problem(target, commit, recording)
    if problem is None:
        return None
    return SampleDoesNotFit(recording.idea, target.name, problem, on_version=True).message
