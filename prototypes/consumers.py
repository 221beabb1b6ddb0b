"""The live build feed: a websocket per build page.

It opens for whoever may see the build: by its id alone, or with `?prototype=<slug>` (the link of a
link-only prototype) as the build's page allows. On connect it sends every event after
`?after=<seq>` from the event table, then forwards new events
as they are broadcast. The table is the source of truth: a broadcast that does not follow on from the
last event sent (a gap), and a periodic check (the only feed where the worker's broadcasts cannot
reach this process, as with the in-memory layer of the embedded default), both catch up from it.
Events go out in `seq` order, each exactly once per connection.

Broadcasts reach a web process once per build, not once per page: the first page following a build
here subscribes a feed (one channel in the build's group) that hands each broadcast to every page
following the build in this process. Per page, the channel layer's receive and Channels' dispatch cost
more than the websocket send itself (py-spy, bench/events.py), and a build has many viewers.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings

from prototypes import progress
from prototypes.live import frame, group_name, wire
from prototypes.models import Build, BuildEvent

BATCH = 500
INBOX = 1000  # broadcasts a page may have waiting; past that it drops them and catches up from the table
log = logging.getLogger(__name__)


class BuildFeed:
    """One build's broadcasts, received once by this web process and handed to each page following it here."""

    def __init__(self, build_id: int):
        self.build_id = build_id
        self.pages: set[BuildConsumer] = set()
        self.channel = ""
        self.reader: asyncio.Task | None = None
        self.started: asyncio.Future | None = None

    async def start(self, layer) -> None:
        self.channel = await layer.new_channel()
        await layer.group_add(group_name(self.build_id), self.channel)
        self.reader = asyncio.create_task(self._read(layer))

    async def stop(self, layer) -> None:
        try:
            await self.started
        except Exception:  # noqa: BLE001 - it never subscribed: nothing to undo
            return
        self.reader.cancel()
        await layer.group_discard(group_name(self.build_id), self.channel)

    async def _read(self, layer) -> None:
        while True:
            try:
                message = await layer.receive(self.channel)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the pages' periodic check covers the pause; keep listening
                log.warning("build %s: could not receive its broadcasts", self.build_id, exc_info=True)
                await asyncio.sleep(1)
                continue
            for page in list(self.pages):
                page.deliver(message)


# The feeds of this process, per event loop (a feed's reader and channel belong to the loop it started on).
_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, BuildFeed]] = weakref.WeakKeyDictionary()


async def follow(build_id: int, page: BuildConsumer, layer) -> None:
    """Have `page` receive the build's broadcasts; returns once the feed is subscribed, so a page that
    then catches up from the table misses nothing in between."""
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    feed = feeds.get(build_id)
    if feed is None:
        feed = feeds[build_id] = BuildFeed(build_id)
        feed.started = asyncio.ensure_future(feed.start(layer))
    feed.pages.add(page)
    try:
        await asyncio.shield(feed.started)
    except Exception:
        if feeds.get(build_id) is feed:
            del feeds[build_id]  # the next page tries again
        raise


async def unfollow(build_id: int, page: BuildConsumer, layer) -> None:
    feeds = _feeds.get(asyncio.get_running_loop(), {})
    feed = feeds.get(build_id)
    if feed is None or page not in feed.pages:
        return
    feed.pages.discard(page)
    if not feed.pages:
        del feeds[build_id]
        await feed.stop(layer)


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
        self.poller = self.forwarder = None
        self.inbox: asyncio.Queue = asyncio.Queue(INBOX)
        if not await self._visible():
            await self.close(code=4404)
            return
        await follow(self.build_id, self, self.channel_layer)
        await self.accept()
        self.forwarder = asyncio.create_task(self._forward())  # after accepting: nothing goes out before it
        await self.catch_up()
        self.poller = asyncio.create_task(self._poll())

    async def disconnect(self, code):
        for task in (self.poller, self.forwarder):
            if task is not None:
                task.cancel()
        await unfollow(self.build_id, self, self.channel_layer)

    def deliver(self, message: dict) -> None:
        """A broadcast from this process's feed of the build. A page too slow to take it (its inbox full)
        drops it: the next one does not follow on, and it catches up from the table."""
        try:
            self.inbox.put_nowait(message)
        except asyncio.QueueFull:
            pass

    async def _forward(self):
        # Channels' own dispatch is not used for broadcasts: it would also close stale database connections
        # before each one, in a hop to its one database thread (py-spy: most of the web process's time with
        # 100 pages). Forwarding touches no database; catching up uses database_sync_to_async, which does.
        while True:
            message = await self.inbox.get()
            try:
                await self.build_events(message)
            except Exception:  # noqa: BLE001 - one lost forward costs latency: the next gap or check catches up
                log.warning("build %s: could not forward events to a page", self.build_id, exc_info=True)

    async def build_events(self, message):
        """A broadcast from the worker: forward its ready-made frame when it follows on from the last
        event sent, else catch up from the table."""
        async with self.lock:
            if message["last"] <= self.last:
                return  # already sent
            # Every broadcast frame carries the build's summary as of its last event, so the first one after
            # connecting can be forwarded as it is, like the rest.
            if message["first"] == self.last + 1:
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
        Only catching up comes here (the build row, and the progress events since the fold kept by
        progress.summary_as_of); the hot path, a broadcast that follows on, forwards the worker's
        ready-made frame in `build_events` and touches no database."""
        self.last = events[-1]["seq"]
        rows = [BuildEvent(seq=e["seq"], kind=e["kind"], data=e["data"]) for e in events]
        build = await self._summary(self.last, rows)
        items = [progress.describe_or_hide(row) for row in rows]
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
    def _summary(self, last: int, events: list[BuildEvent]) -> dict:
        return progress.summary_as_of(self.build_id, last, events)
