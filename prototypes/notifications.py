"""Telling people what happened: an email to the owner and, when configured, a Slack message.

Notifications never make a build fail: a mail server or Slack that does not answer is logged and
skipped."""

from __future__ import annotations

import json
import logging
import urllib.request

from django.conf import settings
from django.core.mail import send_mail

log = logging.getLogger(__name__)
SLACK_TIMEOUT = 5


def post_to_slack(text: str) -> bool:
    url = settings.SLACK_WEBHOOK_URL
    if not url:
        return False
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=SLACK_TIMEOUT) as response:
            return 200 <= response.status < 300
    except OSError:
        log.warning("could not post to Slack", exc_info=True)
        return False


def email(user, subject: str, body: str) -> None:
    if not user.email:
        return
    try:
        send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, [user.email])
    except Exception:  # noqa: BLE001 - SMTP raises many kinds of errors
        log.warning("could not email %s", user.email, exc_info=True)


def build_finished(build_id: int) -> None:
    """Tell the owner a build succeeded or failed (not when they cancelled it themselves)."""
    from prototypes.models import Build

    build = Build.objects.select_related("revision__prototype__owner").get(pk=build_id)
    prototype = build.revision.prototype
    link = settings.SITE_URL + build.get_absolute_url()
    if build.state == Build.State.SUCCEEDED:
        subject = f"Your prototype “{prototype.title}” is ready"
        body = (f"Version {build.revision.number} of “{prototype.title}” is built and ready to try.\n\n"
                f"{build.revision.summary}\n\nOpen it: {settings.SITE_URL}{prototype.get_absolute_url()}\n")  # fmt: skip
        slack = f"✅ “{prototype.title}” version {build.revision.number} is ready: {link}"
    elif build.state == Build.State.FAILED:
        subject = f"“{prototype.title}” could not be built"
        body = f"{build.error_message}\n\nSee what happened: {link}\n"
        slack = f"⚠️ “{prototype.title}” version {build.revision.number} could not be built: {link}"
    else:
        return
    email(prototype.owner, subject, body)
    post_to_slack(slack)
