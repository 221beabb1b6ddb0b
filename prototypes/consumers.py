"""The live build feed: a websocket per build page.

It opens for whoever may see the build: by its id alone, or with `?prototype=<slug>` (the link of a
link-only prototype) as the build's page allows. On connect it sends every event after
`?after=<seq>` from the event table, then forwards new events
as they are broadcast. The table is the source of truth: a broadcast that does not follow on from the
last event sent (a gap), and a periodic check (the only feed where the worker's broadcasts cannot
reach this process, as with the in-memory layer of the embedded default), both catch up from it.
Events go out in `seq` order, each exactly once per connection.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from prototypes import progress
from prototypes.live import frame, group_name, wire
from prototypes.models import Build, BuildEvent

BATCH = 500


class BuildConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        self.build_id = self.scope["url_route"]["kwargs"]["build_id"]
        query = parse_qs(self.scope.get("query_string", b"").decode())
        try:
            self.last = max(0, int(query.get("after", ["0"])[0]))
        except ValueError:
            self.last = 0
        self.slug = query.get("prototype", [""])[0].replace("\x00", "")
        self.lock = asyncio.Lock()
        self.poller = None
        self.summary_sent = False
        if not await self._visible():
            await self.close(code=4404)
            return
        await self.channel_layer.group_add(group_name(self.build_id), self.channel_name)
        await self.accept()
        await self.catch_up()
        self.poller = asyncio.create_task(self._poll())

    async def disconnect(self, code):
        if self.poller is not None:
            self.poller.cancel()
        await self.channel_layer.group_discard(group_name(self.build_id), self.channel_name)

    async def build_events(self, message):
        """A broadcast from the worker: forward its ready-made frame when it follows on from the last
        event sent, else catch up from the table."""
        async with self.lock:
            if message["last"] <= self.last:
                return  # already sent
            if message["first"] == self.last + 1 and self.summary_sent:
                self.last = message["last"]
                await self.send(text_data=message["frame"])
                return
        await self.catch_up()

    async def catch_up(self):
        async with self.lock:
            while True:
                events = await self._events_after(self.last)
                if not events:
                    break
                await self._send(events)
                if len(events) < BATCH:
                    break

    async def _send(self, events: list[dict]) -> None:
        """Send events (in order, all after self.last) with the build's summary as of the last of them:
        steps, bar and usage move with every batch, however many steps it covers. Caller holds the lock.
        Only catching up comes here (one query for the summary); the hot path, a broadcast that follows
        on, forwards the worker's ready-made frame in `build_events` and touches no database."""
        self.last = events[-1]["seq"]
        build = await self._summary(self.last)
        self.summary_sent = True
        items = [progress.describe_or_hide(BuildEvent(seq=e["seq"], kind=e["kind"], data=e["data"])) for e in events]
        await self.send(text_data=frame(items, self.last, build))

    async def _poll(self):
        interval = settings.BUILD_EVENTS_POLL
        while True:
            await asyncio.sleep(interval)
            if not await self._visible():  # made private, a collaborator removed, a takedown: stop the feed
                await self.close(code=4404)
                return
            await self.catch_up()

    @database_sync_to_async
    def _visible(self) -> bool:
        return Build.objects.visible_to(self.scope["user"], slug=self.slug).filter(pk=self.build_id).exists()

    @database_sync_to_async
    def _events_after(self, seq: int) -> list[dict]:
        rows = BuildEvent.objects.filter(build_id=self.build_id, seq__gt=seq).order_by("seq")[:BATCH]
        return [wire(e) for e in rows]

    @database_sync_to_async
    def _summary(self, last: int) -> dict:
        return progress.summary_as_of(self.build_id, last)
