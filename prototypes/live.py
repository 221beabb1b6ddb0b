"""Live build events: the channel group a build's events are broadcast to, and the broadcast itself.

The event table stays the source of truth: the broadcast only saves the page a trip to the database,
and the consumer fills any gap from the table by `seq`.
"""

from __future__ import annotations

import json
import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(build_id: int) -> str:
    return f"build-{build_id}"


def wire(event) -> dict:
    return {"seq": event.seq, "kind": event.kind, "data": event.data, "at": event.created_at.isoformat()}


def frame(items: list[dict], last: int, build: dict | None) -> str:
    """The websocket message a build page receives (see static/build.js)."""
    return json.dumps({"type": "events", "last": last, "items": items, "build": build})


def broadcast(build_id: int, events) -> None:
    """Send newly committed events to the pages following the build, described and encoded once here
    rather than by every page's connection. The build's summary as of these events goes along."""
    layer = get_channel_layer()
    if layer is None or not events:
        return
    from prototypes import progress  # progress imports the models, which import this module

    try:
        # The summary as of the last event sent, not the build's state now: a page must see each step
        # the events reach (and the turns and usage they carry), even when the build has moved on since.
        # Handing the events over continues the fold kept since the previous flush: no event is re-read.
        build = progress.summary_as_of(build_id, events[-1].seq, events)
        items = [progress.describe_or_hide(e) for e in events]
        message = {
            "type": "build.events",
            "first": events[0].seq,
            "last": events[-1].seq,
            "frame": frame(items, events[-1].seq, build),
        }
        async_to_sync(layer.group_send)(group_name(build_id), message)
    except Exception:  # noqa: BLE001 - a lost broadcast costs latency, never events: pages catch up from the table
        log.warning("could not broadcast events of build %s", build_id, exc_info=True)
