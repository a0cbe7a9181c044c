"""List+watch with resourceVersion, as client-go's reflector does it; no polling.

One list gives the objects and a resourceVersion; a watch from that version streams
every change after it. When the server ends the stream (timeoutSeconds), the watch
resumes from the last version seen (bookmarks included). A 410 Gone, as an HTTP status
or as an ERROR event, means that version is too old: the informer lists again and
reports the difference as ADDED / MODIFIED / DELETED, so a handler never misses a
deletion. Other failures reconnect with exponential backoff.

A watch can hang: the connection stays up and nothing arrives (a stuck proxy, a half-dead
API server). So the server is asked to end each watch after a short `timeoutSeconds`
(40 s by default) and to send bookmarks, and a read that hears nothing for
`timeoutSeconds + read_grace` (60 s) ends the watch as failed; the informer reconnects from
the last version seen. Until something is heard again, `silence()` says how long the
informer has been blind, and the daemon's /readyz fails with it.

A handler that raises is logged with the object's key; it never stops the list or the
watch, so one bad object cannot hold back the events of the others.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog

from meshshift.backoff import Backoff
from meshshift.kube import wire
from meshshift.kube.resources import (
    JsonObject,
    KubeApi,
    KubeApiError,
    ResourceType,
    error_from_status,
    object_key,
    resource_version,
)

log = structlog.get_logger(__name__)

EventHandler = Callable[[str, JsonObject], None]
ObjectKey = tuple[str, str]  # (namespace, name)

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
# A stream that ends this fast without a single event is treated as a failure, so a
# server that keeps closing at once cannot make the informer spin.
MIN_HEALTHY_STREAM = 1.0
WATCH_TIMEOUT = 40  # the server ends each watch after this many seconds (timeoutSeconds)
READ_GRACE = 20.0  # beyond timeoutSeconds, how long a silent watch is waited for
VERSIONS_KEPT = 8  # per object, the last resourceVersions the informer saw (has_seen)


class WatchExpiredError(Exception):
    """410 Gone: the resourceVersion is too old to watch from; list again."""


@dataclass
class InformerStats:
    lists: int = 0
    watches: int = 0
    expired: int = 0  # 410s seen
    failures: int = 0  # other errors, each followed by a backoff
    events: int = 0


class Informer:
    """Keeps a cache of one resource type in sync and calls `on_event` for every change."""

    def __init__(
        self,
        api: KubeApi,
        rt: ResourceType,
        *,
        on_event: EventHandler,
        namespace: str | None = None,
        label_selector: str | None = None,
        watch_timeout: int = WATCH_TIMEOUT,
        read_grace: float = READ_GRACE,
        backoff: Backoff | None = None,
    ) -> None:
        self.api = api
        self.rt = rt
        self.on_event = on_event
        self.namespace = namespace
        self.label_selector = label_selector
        self.watch_timeout = watch_timeout
        self.read_grace = read_grace
        self.last_heard: float | None = None  # monotonic: the last list, line or normal stream end
        self.backoff = backoff or Backoff(first=0.5, cap=30.0)
        self.cache: dict[ObjectKey, JsonObject] = {}
        self._versions: dict[ObjectKey, deque[str]] = {}  # key -> the last versions seen, oldest first
        self.resource_version: str | None = None
        self.synced = asyncio.Event()
        self.stats = InformerStats()
        self.log = log.bind(resource=str(rt), namespace=namespace or "*")

    @property
    def silence_bound(self) -> float:
        """How long a healthy informer can go without hearing from the server."""
        return self.watch_timeout + self.read_grace

    def silence(self, now: float | None = None) -> float | None:
        """Seconds since the server was last heard from, when past `silence_bound`; else None."""
        if self.last_heard is None:
            return None  # not listed yet: readiness waits for the first list anyway
        silent = (time.monotonic() if now is None else now) - self.last_heard
        return silent if silent > self.silence_bound else None

    def _heard(self) -> None:
        self.last_heard = time.monotonic()

    async def run(self) -> None:
        """List, then watch, forever; cancel to stop."""
        must_list = True
        while True:
            try:
                if must_list:
                    await self._relist()
                    must_list = False
                healthy = await self._watch()
            except asyncio.CancelledError:
                raise
            except WatchExpiredError:
                self.stats.expired += 1
                self.log.info("watch expired (410); listing again", resource_version=self.resource_version)
                must_list = True
                continue
            except Exception as error:
                self.stats.failures += 1
                delay = self.backoff.next()
                self.log.warning("list/watch failed; reconnecting", error=str(error), retry_in=delay)
                await asyncio.sleep(delay)
                continue
            if healthy:
                self.backoff.reset()
            else:
                await asyncio.sleep(self.backoff.next())

    def has_seen(self, key: ObjectKey, version: str | None) -> bool:
        """Whether this version of the object came through the watch or a list (of the last few).

        A write's answer and the watch race: once the version written was seen, the cache holds it
        or something newer, even if the watch brought the newer one before the answer arrived.
        """
        return version is not None and version in self._versions.get(key, ())

    def _saw(self, key: ObjectKey, obj: Mapping[str, Any]) -> None:
        version = resource_version(obj)
        if version is not None:
            self._versions.setdefault(key, deque(maxlen=VERSIONS_KEPT)).append(version)

    # --- list ---------------------------------------------------------------------------

    async def _relist(self) -> None:
        self.stats.lists += 1
        listing = await self.api.list_objects(self.rt, self.namespace, label_selector=self.label_selector)
        fresh: dict[ObjectKey, JsonObject] = {}
        for item in listing.get("items") or []:
            item.setdefault("apiVersion", self.rt.api_version)
            item.setdefault("kind", self.rt.kind)
            fresh[object_key(item)] = item
            self._saw(object_key(item), item)
        for key in self._versions.keys() - fresh.keys():
            del self._versions[key]
        previous, self.cache = self.cache, fresh
        self.resource_version = resource_version(listing)
        self._heard()
        for key, obj in fresh.items():
            old = previous.get(key)
            if old is None:
                self._emit(ADDED, obj)
            elif resource_version(old) != resource_version(obj) or resource_version(obj) is None:
                self._emit(MODIFIED, obj)
        for key, obj in previous.items():
            if key not in fresh:
                self._emit(DELETED, obj)
        self.synced.set()

    # --- watch --------------------------------------------------------------------------

    async def _watch(self) -> bool:
        """Stream events until the server ends the stream; True if it was a healthy one."""
        self.stats.watches += 1
        started = time.monotonic()
        seen = 0
        response = await self.api.open_watch(
            self.rt,
            self.namespace,
            resource_version=self.resource_version,
            timeout_seconds=self.watch_timeout,
            read_timeout=self.silence_bound,
            label_selector=self.label_selector,
        )
        try:
            if response.status >= 400:
                await self._raise_for(response)
            async for line in response.content:
                self._heard()
                if not line.strip():
                    continue
                self._handle(wire.loads(line))
                seen += 1
        finally:
            response.release()
        self._heard()  # the server ended the stream, as it should after timeoutSeconds
        lasted = time.monotonic() - started
        return seen > 0 or lasted >= min(MIN_HEALTHY_STREAM, self.watch_timeout / 2)

    async def _raise_for(self, response: Any) -> None:
        text = await response.text()
        try:
            body = json.loads(text)
        except ValueError:
            body = {"code": response.status, "reason": response.reason or "", "message": text[:200]}
        body.setdefault("code", response.status)
        if int(body.get("code") or 0) == 410:
            raise WatchExpiredError(body.get("message", ""))
        raise error_from_status(body, what=f"watch {self.rt}")

    def _handle(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if int(obj.get("code") or 0) == 410:
                raise WatchExpiredError(obj.get("message", ""))
            raise error_from_status(obj, what=f"watch {self.rt}")
        rv = resource_version(obj)
        if rv:
            self.resource_version = rv
        if kind == "BOOKMARK":
            return
        if kind not in (ADDED, MODIFIED, DELETED):
            raise KubeApiError(0, "BadEvent", f"unknown watch event type {kind!r}", what=f"watch {self.rt}")
        obj.setdefault("apiVersion", self.rt.api_version)
        obj.setdefault("kind", self.rt.kind)
        key = object_key(obj)
        if kind == DELETED:
            self.cache.pop(key, None)
            self._versions.pop(key, None)
        else:
            if kind == ADDED and key in self.cache:
                kind = MODIFIED  # as client-go's informers report it: an update of a known object
            self.cache[key] = obj
            self._saw(key, obj)
        self._emit(kind, obj)

    def _emit(self, kind: str, obj: JsonObject) -> None:
        self.stats.events += 1
        try:
            self.on_event(kind, obj)
        except Exception:  # a handler bug must not stop the informer
            # Not `event=`: that is structlog's own argument (the message).
            self.log.exception("event handler failed", event_type=kind, object="/".join(object_key(obj)))
