"""What a version page shows as proof that a prototype works: the browser check, the reviewer's
checklist, pictures before and after the change, and several attempts of one idea side by side.

Everything here reads what the pipeline stored (Build.smoke, Build.checklist, Build.judge, Build.verify,
evidence Screenshots); nothing is recomputed. Access is decided before: callers pass a revision the
person may see, and the files they link to are re-checked by their own views.
"""

from __future__ import annotations

from prototypes import attempts
from prototypes.models import Artifact, Build, Revision, Screenshot
from prototypes.progress import before_after, checklist_score, smoke_view

NO_BEFORE = (
    "There is no picture from before the change: the version it started from could not be built or opened "
    "in the browser."
)


def why_no_before(build: Build) -> str:
    """Why a picture from before the change is missing, in the words of the browser check when it said."""
    skipped = (build.smoke or {}).get("skipped")
    return f"No pictures were taken: {skipped}" if skipped else NO_BEFORE


def shown_build(revision: Revision, builds: list[Build]) -> Build | None:
    """The attempt whose proof the version page shows: the kept one, else the best ranked."""
    return next((b for b in builds if b.pk == revision.kept_build_id), None) or (builds[0] if builds else None)


def version_proof(revision: Revision, user, slug: str) -> dict:
    """The proof part of a version page's context. `slug` is the prototype's address, through which
    the person reached the page (it lets link-only work hand out its files, as its page does)."""
    builds = attempts.ranked(revision)
    shots: dict[int, list[Screenshot]] = {}
    for shot in Screenshot.objects.filter(build__in=builds).exclude(moment=Screenshot.Moment.GALLERY):
        shots.setdefault(shot.build_id, []).append(shot)
    previews = {
        a.build_id: a
        for a in Artifact.objects.available_to(user, slug=slug).filter(build__in=builds, kind=Artifact.Kind.WEB)
    }
    columns = []
    for rank, build in enumerate(builds, start=1):
        after = [s for s in shots.get(build.pk, []) if s.moment == Screenshot.Moment.AFTER]
        passed, total = checklist_score(build.checklist)
        columns.append({
            "build": build, "rank": rank if build.is_final else None, "kept": build.pk == revision.kept_build_id,
            "after": next((s for s in after if s.size == Screenshot.Size.DESKTOP), after[0] if after else None),
            "passed": passed, "total": total, "counts": (build.verify or {}).get("counts"),
            "preview": previews.get(build.pk), "smoke": smoke_view(build.smoke),
        })  # fmt: skip
    shown = shown_build(revision, builds)
    proof = {"builds": builds, "columns": columns if revision.attempts > 1 else [], "shown": shown}
    if shown is not None:
        proof.update({
            "pictures": before_after(shots.get(shown.pk, [])), "no_before": why_no_before(shown),
            "smoke": smoke_view(shown.smoke), "checklist": shown.checklist, "judge": shown.judge,
            "score": checklist_score(shown.checklist), "verify": shown.verify, "preview": previews.get(shown.pk),
        })  # fmt: skip
    return proof
