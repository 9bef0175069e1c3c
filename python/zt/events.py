"""Node events: libzt's numeric codes with typed payloads.

Events reach an application three ways, all fed by the same native queues:

* a callback (``NodeOptions(on_event=...)`` or :meth:`zt.Node.add_event_callback`), called on a
  dispatcher thread;
* a blocking iterator, ``for event in node.events(): ...``;
* an asynchronous iterator, ``async for event in node.events(): ...``.

Each consumer has its own bounded queue; a consumer that falls more than its capacity behind loses
the oldest events, and :attr:`EventStream.dropped` counts them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

from . import _native

if TYPE_CHECKING:
    import asyncio

__all__ = [
    "AddressEvent",
    "Event",
    "EventCode",
    "EventStream",
    "FatalErrorEvent",
    "NetworkEvent",
    "NodeEvent",
    "PeerPathEvent",
    "StoreEvent",
    "UserMessageEvent",
    "WorldEvent",
]

log = logging.getLogger("zt.events")


class EventCode(enum.IntEnum):
    """Event codes. 2xx are libzt's ``ZTS_EVENT_*`` values; 275 and 3xx are zt's own."""

    NODE_UP = 200
    NODE_ONLINE = 201
    NODE_OFFLINE = 202
    NODE_DOWN = 203
    NODE_FATAL_ERROR = 204
    STORE_IDENTITY_SECRET = 270
    STORE_IDENTITY_PUBLIC = 271
    STORE_PLANET = 272
    STORE_PEER = 273
    STORE_NETWORK = 274
    STORE_MOON = 275
    NETWORK_NOT_FOUND = 210
    NETWORK_CLIENT_TOO_OLD = 211
    NETWORK_REQ_CONFIG = 212
    NETWORK_OK = 213
    NETWORK_ACCESS_DENIED = 214
    NETWORK_READY_IP4 = 215
    NETWORK_READY_IP6 = 216
    NETWORK_DOWN = 218
    NETWORK_UPDATE = 219
    NETWORK_AUTHENTICATION_REQUIRED = 220
    ADDR_ADDED_IP4 = 260
    ADDR_REMOVED_IP4 = 261
    ADDR_ADDED_IP6 = 262
    ADDR_REMOVED_IP6 = 263
    PEER_PATH_DISCOVERED = 243
    PEER_PATH_DEAD = 244
    PLANET_CHANGED = 300
    MOON_CHANGED = 301
    USER_MESSAGE = 310


@dataclass(frozen=True)
class Event:
    """An event. ``code`` is an :class:`EventCode`; subclasses carry the payload."""

    code: EventCode

    @property
    def name(self) -> str:
        """The code's name, e.g. ``"NODE_UP"``."""
        return self.code.name


@dataclass(frozen=True)
class NodeEvent(Event):
    """NODE_UP / ONLINE / OFFLINE / DOWN. ``address`` is set on NODE_UP."""

    address: Optional[str] = None


@dataclass(frozen=True)
class FatalErrorEvent(Event):
    """NODE_FATAL_ERROR: the node could not start or keep running."""

    message: str = ""


@dataclass(frozen=True)
class StoreEvent(Event):
    """STORE_*: an object was persisted under ``key`` (zerotier-one's file name)."""

    key: str = ""


@dataclass(frozen=True)
class WorldEvent(Event):
    """PLANET_CHANGED / MOON_CHANGED: a world revision was adopted."""

    world_id: int = 0
    timestamp: int = 0


@dataclass(frozen=True)
class PeerPathEvent(Event):
    """PEER_PATH_DISCOVERED / PEER_PATH_DEAD: a direct path to ``address`` at ``remote``."""

    address: str = ""
    remote: str = ""


@dataclass(frozen=True)
class UserMessageEvent(Event):
    """USER_MESSAGE: ``data`` of type ``type_id`` from ``address``."""

    address: str = ""
    type_id: int = 0
    data: bytes = b""


@dataclass(frozen=True)
class NetworkEvent(Event):
    """NETWORK_*: a network's state changed (``network`` is its 16-hex-digit ID)."""

    network: str = ""


@dataclass(frozen=True)
class AddressEvent(Event):
    """ADDR_ADDED_* / ADDR_REMOVED_*: a managed address (``ip/prefix``) on ``network``."""

    network: str = ""
    address: str = ""


def _make(code: int, payload: dict[str, Any]) -> Event:
    c = EventCode(code)
    if 210 <= c <= 220:
        return NetworkEvent(c, str(payload.get("network", "")))
    if 260 <= c <= 263:
        return AddressEvent(c, str(payload.get("network", "")), str(payload.get("address", "")))
    if c in (EventCode.PEER_PATH_DISCOVERED, EventCode.PEER_PATH_DEAD):
        return PeerPathEvent(c, str(payload["address"]), str(payload["remote"]))
    if c == EventCode.USER_MESSAGE:
        return UserMessageEvent(
            c, str(payload["address"]), int(payload["type_id"]), bytes(payload["data"])
        )
    if c == EventCode.NODE_FATAL_ERROR:
        return FatalErrorEvent(c, str(payload.get("message", "")))
    if 270 <= c <= 279:
        return StoreEvent(c, str(payload.get("key", "")))
    if c in (EventCode.PLANET_CHANGED, EventCode.MOON_CHANGED):
        return WorldEvent(c, int(payload["id"]), int(payload["timestamp"]))
    return NodeEvent(c, payload.get("address"))


class EventStream:
    """One consumer's queue of a node's events; iterate it with ``for`` or ``async for``.

    With ``until_down`` (the default) iteration ends after NODE_DOWN is delivered; otherwise it
    ends when the stream or its node is closed.
    """

    def __init__(self, sub: _native.EventSubscription, *, until_down: bool = True) -> None:
        self._sub = sub
        self._until_down = until_down
        self._finished = False

    def get(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, waiting up to ``timeout`` seconds (forever if None).

        Returns None on timeout; raises EOFError once the stream is closed and drained.
        """
        item = self._sub.recv(timeout)
        if item is None:
            return None
        ev = _make(*item)
        log.debug("%s %s", ev.name, ev)
        return ev

    def _deliver(self, ev: Event) -> Event:
        if self._until_down and ev.code == EventCode.NODE_DOWN:
            self._finished = True
        return ev

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        if self._finished:
            raise StopIteration
        try:
            ev = self.get()
        except EOFError:
            raise StopIteration from None
        assert ev is not None  # a wait without timeout returns an event or raises
        return self._deliver(ev)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        if self._finished:
            raise StopAsyncIteration
        import asyncio  # only async users pay for importing it

        loop = asyncio.get_running_loop()
        fd = self._sub.fileno()
        while True:
            try:
                ev = self.get(0)
            except EOFError:
                raise StopAsyncIteration from None
            if ev is not None:
                return self._deliver(ev)
            ready: asyncio.Future[None] = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_reader(fd, wake)
            try:
                await ready
            finally:
                loop.remove_reader(fd)

    def fileno(self) -> int:
        """A descriptor readable while an event is queued (for ``select``/``selectors``)."""
        return self._sub.fileno()

    @property
    def dropped(self) -> int:
        """Events this consumer lost by falling behind."""
        return self._sub.dropped

    def close(self) -> None:
        """Stops this stream; iteration ends once the queued events are consumed."""
        self._sub.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
