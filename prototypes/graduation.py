"""Graduating a prototype: its version becomes a branch and a pull request on the real repository.

Two boundaries: git pushes the revision's result commit from the target's mirror to the target's
remote, and `GitHub` (the REST API through urllib) opens the pull request. The target's GitHub token
lives only in the environment of the process that graduates (`Target.github_token_env` names the
variable, or NAME_FILE). It reaches git through GIT_CONFIG_* environment variables, never the command
line (which `ps` shows), and is scrubbed from every error text before anyone can read it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.urls import reverse
from django.views.decorators.debug import sensitive_variables

from agents.errors import ServiceError
from agents.workspace import git
from prototypes.access import require
from prototypes.builds import NotAllowed
from prototypes.inputs import display_name
from prototypes.models import Build, Revision, Screenshot, Target
from prototypes.pipeline import lineage
from prototypes.progress import before_after, checklist_score, smoke_view

__all__ = ["GitHub", "GraduationFailed", "NotAllowed", "Plan", "graduate", "plan"]

log = logging.getLogger(__name__)

API_TIMEOUT = 15  # seconds for one GitHub API request
PUSH_TIMEOUT = 180  # seconds for pushing the branch
MAX_BODY_CHARS = 60_000  # GitHub refuses pull request bodies over 65,536 characters
MAX_TEXT_CHARS = 4_000  # one prompt or summary in the body
MAX_FILES_LISTED = 60
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_URL_CREDENTIALS = re.compile(r"(?<=://)[^/@\s]+@")

# code -> what the maker reads on the graduate page. Problems of the setup and of GitHub, not of the
# maker: each says who can fix it. `{repo}`, `{branch}`, `{base}`, `{variable}` and `{reason}` are filled in.
MESSAGES = {
    "not_connected": "This app is not connected to GitHub yet: an admin sets its GitHub repository and token. "
    "Meanwhile you can download the change as a patch.",
    "insecure_api": "This app's GitHub address does not use https, so the store will not send its token there. "
    "An admin needs to fix the app's GitHub API URL.",
    "no_token": "The store has no GitHub token for this app on this server (the variable {variable} is not set). "
    "An admin needs to set it.",
    "not_in_mirror": "The code of this version is not on this server any more, so it cannot be pushed. "
    "Ask for the change again, or download it as a patch.",
    "branch_taken": "The branch {branch} already exists on {repo} with other changes, so the store did not "
    "overwrite it. Someone with access to the repository can delete or rename it; then try again.",
    "push_failed": "The repository did not accept the branch {branch}. An admin can check that the store's "
    "GitHub token may push branches to {repo}.",
    "token_rejected": "GitHub did not accept the store's token for this app. An admin needs to renew it.",
    "no_access": "The store's GitHub token may not open pull requests on {repo}. An admin needs to give it access.",
    "rate_limited": "GitHub asked the store to slow down. Try again in a few minutes.",
    "repo_not_found": "GitHub does not know the repository {repo}, or the store's token cannot see it. "
    "An admin checks the repository name and the token's access.",
    "no_changes": "GitHub found no difference between {branch} and {base}, so there is nothing to review.",
    "pr_refused": "GitHub would not open the pull request: {reason}",
    "github_down": "GitHub did not answer. Try again in a few minutes.",
}


class GraduationFailed(Exception):
    """Git or GitHub did not do what was asked, or the app is not set up for it. `str()` is the plain
    message for the page; `code` is stable; `detail` is for the log and never holds the token."""

    def __init__(self, code: str, detail: str = "", **params: str):
        self.code = code
        self.detail = detail
        super().__init__(MESSAGES[code].format(**params))


@dataclass(frozen=True)
class Plan:
    """What graduating a revision will do, shown to the maker before they confirm."""

    repository: str  # owner/name
    base: str  # the branch the pull request asks to merge into
    branch: str  # the branch that will hold the prototype's change


def branch_name(revision: Revision) -> str:
    return f"prototype/{revision.prototype.slug}-v{revision.number}"


def plan(revision: Revision, *, by) -> Plan:
    """Check that `by` may graduate the revision and that its app is connected to GitHub.
    Raises NotAllowed (the person's side) or GraduationFailed (the setup's)."""
    require(by, "graduate")
    prototype = revision.prototype
    if prototype.owner_id != by.pk:
        raise NotAllowed("Only the prototype's owner can open a pull request from it.")
    if not revision.result_commit:
        raise NotAllowed("Only a version that was built can become a pull request. Wait until it is ready.")
    target = prototype.target
    if not _REPO.match(target.github_repo or "") or not target.github_token_env:
        raise GraduationFailed("not_connected")
    if not _safe_to_send_token(target.github_api_url):
        raise GraduationFailed("insecure_api")
    read_token(target)  # fail before the maker confirms, not after
    return Plan(repository=target.github_repo, base=target.default_branch, branch=branch_name(revision))


@sensitive_variables("token")
def graduate(revision: Revision, *, by) -> str:
    """Push the revision's result as a branch and open a pull request for it; returns its URL.

    Safe to repeat: pushing the same commit again changes nothing, and when GitHub already has an open
    pull request for the branch, that one is returned. A branch that exists with other commits is never
    overwritten. The branch is recorded on the revision as soon as it is pushed, the URL once opened."""
    planned = plan(revision, by=by)
    target = revision.prototype.target
    token = read_token(target)
    mirror = settings.MIRROR_ROOT / f"{target.slug}.git"
    push_branch(mirror, revision.result_commit, target.git_url, planned.branch, token=token, repo=planned.repository)
    if revision.branch != planned.branch:
        revision.branch = planned.branch
        revision.save(update_fields=["branch"])
    hub = GitHub(target.github_api_url, target.github_repo, token)
    url = hub.open_pull_request(
        title=revision.prototype.title, head=planned.branch, base=planned.base, body=pull_request_body(revision)
    )
    revision.pull_request_url = url
    revision.save(update_fields=["pull_request_url"])
    log.info("graduated %s to %s", revision, url)
    return url


def read_token(target: Target) -> str:
    """The target's token from the variable it names, or from the file named by NAME_FILE."""
    name = target.github_token_env.strip()
    if name.endswith("_FILE"):
        name = name.removesuffix("_FILE")
    path = os.environ.get(f"{name}_FILE")
    token = ""
    if path:
        try:
            token = Path(path).read_text().strip()
        except OSError:
            log.warning("cannot read the GitHub token file named by %s_FILE", name)
    else:
        token = os.environ.get(name, "").strip()
    if not token:
        raise GraduationFailed("no_token", variable=name)
    return token


def _safe_to_send_token(url: str) -> bool:
    """Tokens travel over https only (plain http is allowed to this machine, for tests)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme == "https":
        return True
    if parsed.scheme != "http":
        return False
    try:
        return parsed.hostname == "localhost" or ipaddress.ip_address(parsed.hostname or "").is_loopback
    except ValueError:
        return False


def _scrub(text: str, *secrets: str) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return _URL_CREDENTIALS.sub("***@", text)


def _basic_auth(token: str) -> str:
    return base64.b64encode(f"x-access-token:{token}".encode()).decode()


@sensitive_variables("token", "env")
def push_branch(mirror: Path, commit: str, remote: str, branch: str, *, token: str, repo: str) -> None:
    """Push `commit` from the mirror to refs/heads/`branch` on `remote`, never forcing. Over https the
    token goes in an http.extraHeader set through the environment; other remotes (paths, file://, ssh)
    use no token."""
    try:
        git("cat-file", "-e", f"{commit}^{{commit}}", git_dir=mirror, timeout=60)
    except ServiceError as exc:
        raise GraduationFailed("not_in_mirror", _scrub(str(exc), token)) from None
    env = {}
    if "://" in remote and _safe_to_send_token(remote):
        env = {
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.extraHeader",
            "GIT_CONFIG_VALUE_0": f"Authorization: Basic {_basic_auth(token)}",
        }
    try:
        git("push", "--quiet", "--no-verify", "--end-of-options", remote, f"{commit}:refs/heads/{branch}",
            git_dir=mirror, env=env, timeout=PUSH_TIMEOUT)  # fmt: skip
    except ServiceError as exc:
        detail = _scrub(str(exc), token, _basic_auth(token))
        log.warning("pushing %s to %s failed: %s", branch, _scrub(remote), detail)
        taken = any(word in detail for word in ("non-fast-forward", "fetch first", "[rejected]"))
        raise GraduationFailed("branch_taken" if taken else "push_failed", detail, branch=branch, repo=repo) from None


class GitHub:
    """The one boundary to GitHub's REST API: open a pull request, or find the open one for a branch."""

    def __init__(self, api_url: str, repo: str, token: str):
        self.api = api_url.rstrip("/")
        self.repo = repo
        self._token = token

    def __repr__(self):
        return f"GitHub({self.api!r}, {self.repo!r})"

    def open_pull_request(self, *, title: str, head: str, base: str, body: str) -> str:
        """The URL of a new pull request, or of the open one GitHub already has for `head`."""
        payload = {"title": title, "head": head, "base": base, "body": body}
        status, answer = self._request("POST", f"/repos/{self.repo}/pulls", payload)
        if status == 201:
            return answer["html_url"]
        reasons = _reasons(answer)
        if any("already exists" in reason for reason in reasons):
            existing = self.find_pull_request(head)
            if existing:
                return existing
        if any("No commits between" in reason for reason in reasons):
            raise GraduationFailed("no_changes", "; ".join(reasons), branch=head, base=base)
        reason = "; ".join(reasons) or f"HTTP {status}"
        raise GraduationFailed("pr_refused", reason, reason=_scrub(reason, self._token)[:300])

    def find_pull_request(self, head: str) -> str | None:
        owner = self.repo.split("/")[0]
        query = urllib.parse.urlencode({"head": f"{owner}:{head}", "state": "open"})
        status, answer = self._request("GET", f"/repos/{self.repo}/pulls?{query}")
        if status == 200 and isinstance(answer, list) and answer:
            return answer[0]["html_url"]
        return None

    def _request(self, method: str, path: str, payload: dict | None = None) -> tuple[int, dict | list]:
        """(status, JSON) for 2xx and 422; every other answer becomes a GraduationFailed."""
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.api + path, data=data, method=method, headers={
            "Accept": "application/vnd.github+json",
            "Content-Type": "application/json",
            "User-Agent": "prototype-store",
            "X-GitHub-Api-Version": "2022-11-28",
        })  # fmt: skip
        # Unredirected: urllib would otherwise send the token on to wherever a redirect points.
        request.add_unredirected_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(request, timeout=API_TIMEOUT) as response:
                return response.status, _json(response.read())
        except urllib.error.HTTPError as exc:
            status, answer, headers = exc.code, _json(exc.read()), exc.headers
            exc.close()
        except (OSError, ValueError) as exc:  # URLError, timeouts, refused connections
            raise GraduationFailed("github_down", _scrub(f"{method} {path}: {exc}", self._token)) from None
        if status == 422:
            return status, answer
        detail = _scrub(f"{method} {path}: HTTP {status} {_message(answer)}", self._token)
        log.warning("GitHub answered %s", detail)
        if status == 401:
            raise GraduationFailed("token_rejected", detail)
        if status in (403, 429) and (status == 429 or headers.get("X-RateLimit-Remaining") == "0"):
            raise GraduationFailed("rate_limited", detail)
        if status == 403:
            raise GraduationFailed("no_access", detail, repo=self.repo)
        if status == 404:
            raise GraduationFailed("repo_not_found", detail, repo=self.repo)
        raise GraduationFailed("github_down", detail)


def _json(raw: bytes) -> dict | list:
    try:
        return json.loads(raw.decode("utf-8", errors="replace") or "{}")
    except ValueError:
        return {}


def _message(answer) -> str:
    return str(answer.get("message", "")) if isinstance(answer, dict) else ""


def _reasons(answer) -> list[str]:
    """GitHub's validation messages: the top-level one and each error's."""
    if not isinstance(answer, dict):
        return []
    reasons = [str(e.get("message", "")) for e in answer.get("errors", []) if isinstance(e, dict)]
    reasons = [reason for reason in reasons if reason]
    return reasons or ([_message(answer)] if _message(answer) else [])


def _clip(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit].rstrip() + " …"


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in _clip(text).splitlines())


def _one_line(text: str, limit: int = 300) -> str:
    """Text from the model or the browser on one line of a list or table: no line breaks, no table pipes."""
    return _clip(" ".join(str(text).split()), limit).replace("|", "\\|")


def _proof(revision: Revision) -> list[str]:
    """What was checked before the version was published, from its kept attempt (else its newest that
    succeeded): the reviewer's checklist, the browser check, and links to the pictures before and after
    the change on the store (reviewers sign in to open them, as for the prototype itself)."""
    build = revision.kept_build or revision.builds.filter(state=Build.State.SUCCEEDED).order_by("-attempt").first()
    if build is None:
        return []
    smoke = smoke_view(build.smoke)
    pictures = before_after(build.evidence.exclude(moment=Screenshot.Moment.GALLERY))
    if not (build.checklist or smoke or pictures):
        return []
    lines = ["### Checked before publishing", ""]
    if build.checklist:
        passed, total = checklist_score(build.checklist)
        sample = ", a sample review written by hand for the offline demo" if build.judge.get("replayed") else ""
        lines += [f"Checklist written from the request ({passed} of {total} passed{sample}):", ""]
        for item in build.checklist:
            mark = {True: "✓", False: "✗"}.get(item.get("passed"), "–")
            note = f" — {_one_line(item['note'])}" if item.get("note") else ""
            lines.append(f"- {mark} {_one_line(item.get('item', ''))}{note}")
        lines.append("")
    if smoke:
        lines += [f"Browser check: {_one_line(smoke['headline'], 600)}", ""]
    if pictures:
        lines += ["| Page | Size | Before | After |", "|---|---|---|---|"]
        for group in pictures:
            for row in group["rows"]:
                links = [
                    f"[{moment}]({settings.SITE_URL}{reverse('screenshot', args=[revision.prototype.slug, shot.pk])})"
                    if shot else "none"
                    for moment, shot in (("before", row["before"]), ("after", row["after"]))
                ]  # fmt: skip
                page = _one_line(group["page"], 200).replace("`", "'")
                lines.append(f"| `{page}` | {row['label']} | {' | '.join(links)} |")
        lines.append("")
    return lines


def pull_request_body(revision: Revision) -> str:
    """Markdown for reviewers: the words asked at every step, what Claude said it changed, the files,
    and a link back to the prototype."""
    prototype = revision.prototype
    link = settings.SITE_URL + prototype.get_absolute_url()
    lines = [
        f"This change was made in Prototype Store as the prototype **[{prototype.title}]({link})** "
        f"(version {revision.number}), built by Claude from these requests:",
        "",
    ]
    steps = [*lineage(revision), revision]
    for step in steps:
        where = f"version {step.number}"
        if step.prototype_id != prototype.pk:
            where = f"“{step.prototype.title}” {where} (remixed from)"
        lines += [f"**{display_name(step.author)}** asked ({where}):", "",
                  _quote(step.prompt), ""]  # fmt: skip
        if step.summary.strip():
            lines += ["What Claude changed:", "", _clip(step.summary), ""]
    files = revision.diffstat.get("files") or []
    if files:
        lines += [
            f"### Files changed in version {revision.number}" + (" (the last request)" if len(steps) > 1 else ""),
            "",
            "| File | Added | Removed |",
            "|---|---:|---:|",
        ]
        for f in files[:MAX_FILES_LISTED]:
            added, deleted = ("binary", "") if f.get("added", 0) < 0 else (f.get("added", 0), f.get("deleted", 0))
            path = str(f.get("path", "")).replace("|", "\\|").replace("`", "'")
            lines.append(f"| `{path}` | {added} | {deleted} |")
        if len(files) > MAX_FILES_LISTED:
            lines.append(f"| … and {len(files) - MAX_FILES_LISTED} more | | |")
        lines.append("")
    lines += _proof(revision)
    lines += ["---", f"Try it, read the feedback and see every version: {link}"]
    body = "\n".join(lines)
    return body if len(body) <= MAX_BODY_CHARS else body[:MAX_BODY_CHARS] + f"\n\n… (shortened; see {link})"
