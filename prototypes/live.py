"""Live build events: the channel group a build's events are broadcast to, and the broadcast itself.

The event table stays the source of truth: the broadcast only saves the page a trip to the database,
and the consumer fills any gap from the table by `seq`.
"""

from __future__ import annotations

import logging

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

log = logging.getLogger(__name__)


def group_name(build_id: int) -> str:
    return f"build-{build_id}"


def wire(event) -> dict:
    return {"seq": event.seq, "kind": event.kind, "data": event.data, "at": event.created_at.isoformat()}


def broadcast(build_id: int, events) -> None:
    layer = get_channel_layer()
    if layer is None or not events:
        return
    try:
        message = {"type": "build.events", "events": [wire(e) for e in events]}
        async_to_sync(layer.group_send)(group_name(build_id), message)
    except Exception:  # noqa: BLE001 - a lost broadcast costs latency, never events: pages catch up from the table
        log.warning("could not broadcast events of build %s", build_id, exc_info=True)
