"""Telling people what happened: an email to the owner and, when configured, a Slack message.

Notifications never make a build fail: a mail server or Slack that does not answer is logged and
skipped.

A notification is a copy of a prototype's title, link and words, so it follows the visibility rule
like every page. A shared channel hears only about prototypes everyone in the company sees in the
store: company-visible and listed (`in_shared_channels`). Anything else — private, link-only, a draft,
waiting for review, hidden or removed — reaches only people who may see it now (`email_about`).
Both read the prototype from the database as it is when the message leaves, not as the caller
loaded it.

The same check decides the notice inside the store: `email_about(..., notice=...)` sends the `told`
signal for each person it lets through, and the store's inbox (store/inbox.py, connected at start-up:
this package never imports the store) writes their Notification row. One rule, two channels."""

from __future__ import annotations

import json
import logging
import urllib.request

from django.conf import settings
from django.core.mail import send_mail
from django.dispatch import Signal

from prototypes.inputs import without_bidi_controls

log = logging.getLogger(__name__)
SLACK_TIMEOUT = 5
# Sent once a person may hear about a prototype, with `prototype`, `user`, `notice` (a store Notification
# kind) and optionally `build` or `comment`: the store's inbox listens (store/inbox.py).
told = Signal()


def in_shared_channels(prototype) -> bool:
    """May a shared channel hear about this prototype? Only when it is company-visible and listed.
    Channels are read by people the store knows nothing about (guests, other teams, integrations), so
    anything less open would hand its title and address to people who may not see it."""
    from prototypes.models import Prototype  # imports this module: loaded late

    return Prototype.objects.filter(
        pk=prototype.pk, visibility=Prototype.Visibility.COMPANY, listing=Prototype.Listing.LISTED
    ).exists()


def post_to_slack(text: str, *, about) -> bool:
    """Post to the shared channel, about the prototype `about`; nothing when the channel may not hear of it."""
    url = settings.SLACK_WEBHOOK_URL
    if not url or not in_shared_channels(about):
        return False
    # Titles and names are people's words: a bidi override in one would reorder the rest of the line.
    text = without_bidi_controls(text)
    request = urllib.request.Request(url, data=json.dumps({"text": text}).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=SLACK_TIMEOUT) as response:
            return 200 <= response.status < 300
    except OSError:
        log.warning("could not post to Slack", exc_info=True)
        return False


def email(user, subject: str, body: str) -> bool:
    """Email one person. For anything about a prototype use `email_about`, which checks they may see it."""
    if not user.email or not user.is_active:
        return False
    try:
        send_mail(
            without_bidi_controls(subject), without_bidi_controls(body), settings.DEFAULT_FROM_EMAIL, [user.email]
        )
    except Exception:  # noqa: BLE001 - SMTP raises many kinds of errors
        log.warning("could not email %s", user.email, exc_info=True)
        return False
    return True


def email_about(
    prototype, user, subject: str, body: str, *, by_link: bool = True, notice: str = "", build=None, comment=None
) -> bool:
    """Email a person about a prototype only when they may see it now (`visible_to`). `by_link=False`
    for people who may never have had a link-only prototype's address (someone @mentioned): the store
    must not be the one that hands it to them. With `notice` (a kind of store Notification), the same
    person also gets a notice in the store's inbox, whether or not they have an email address: the
    access rule is what decides who hears, not the mail server. Returns whether the mail was sent."""
    from prototypes.models import Prototype  # imports this module: loaded late

    if not Prototype.objects.visible_to(user, by_link=by_link).filter(pk=prototype.pk).exists():
        log.info("not telling %s about prototype %s: they may not see it", user.pk, prototype.pk)
        return False
    if notice and user.is_active:
        # send_robust: a notice that cannot be written is logged, and the email still goes.
        answers = told.send_robust(
            sender=Prototype, prototype=prototype, user=user, notice=notice, build=build, comment=comment
        )
        for _receiver, answer in answers:
            if isinstance(answer, Exception):
                log.warning("could not record a notice for %s", user.pk, exc_info=answer)
    return email(user, subject, body)


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
    notice = "build_ready" if build.state == Build.State.SUCCEEDED else "build_failed"
    email_about(prototype, prototype.owner, subject, body, notice=notice, build=build)
    post_to_slack(slack, about=prototype)
