"""kmock 0.8 + kubernetes_asyncio 36.1: an emulator closer to the real API server.

Written against kmock 0.8's behaviour, with type hints. It fixes
`watch=True`, adds resourceVersion, conflict checks (409 on a stale resourceVersion, on writes
and as a DELETE precondition), PUT, `/status` and `/scale` subresources, label/field selectors,
`timeoutSeconds` on watches, watch bookmarks (`allowWatchBookmarks`) and client-go's watch-list
(`sendInitialEvents`), 201 on create, and makes an injected error skip the write (as a real
failed write does). Resources registered with a schema (`validators`, from the CRDs of
tests/data/crds) have every create, patch and update checked against it: an invalid object is
refused with 422 Invalid and is not stored, as a real API server refuses it. Service and
EndpointSlice ports get the API server's default protocol (TCP), which Traefik's Gateway API
provider requires. It uses kmock privates: its URL parser (patched for Namespace paths),
`_payloads`, `_objects`, `_lock`, `_buses`, `_internal.dicts`, and the name-mangled
`__get_objs` / `__check` of KubernetesEmulator (for a watch without a gap), and its views'
internals (`_source`, `criteria`, `Root._requests`, `Request.id`) for a membership test that
does not walk the whole request history (see `_view_contains`).

`write_audit = []` records every write a meshshift daemon sends (but to Leases), with the Lease
holders at the moment the emulator handles it: (identity, plural, namespace, name, {Lease name:
(holder, renewTime, leaseDurationSeconds)}, time), for tests that check who wrote when.

`hang_watches = True` makes every watch hang as a stuck API server or proxy would: the
headers are sent, then nothing, whatever timeoutSeconds says, until it is set back.
"""

import asyncio
import copy
import datetime
import math
import random
import re
import string
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import jsonpatch
import kmock
from kmock._internal import dsl, parsing  # private: kmock's views and URL parser
from kmock._internal.dicts import patch_dict  # private: kmock's own merge-patch function

_parse_path = parsing.parse_path


def _parse_k8s_path(path: str) -> Any:
    """kmock's parser, except that `/api/v1/namespaces[/NAME[/status|/finalize]]` is the Namespace resource.

    kmock reads every `namespaces/X` as the namespace prefix of a namespaced path, so a
    client listing, watching or reading Namespaces (Traefik's Gateway API provider does) got
    a 500 instead of the objects.
    """
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and (
        len(parts) <= 4 or (len(parts) == 5 and parts[4] in ("status", "finalize"))
    ):
        name = parts[3] if len(parts) >= 4 else None
        subresource = parts[4] if len(parts) == 5 else None
        return parsing.ParsedPath("", "v1", "namespaces", None, name, subresource)
    return _parse_path(path)


parsing.parse_path = _parse_k8s_path


class _WalksHistory(Exception):
    """A view whose membership needs kmock's own walk of the history (unions, exclusions, streams)."""


class _SliceProgress:
    """How far a slice has read its source's requests: their count so far, those inside the slice."""

    def __init__(self, view: Any) -> None:
        self.view = weakref.ref(view)  # an id is only the view's while it lives
        self.read = 0  # requests of the root looked at
        self.seen = 0  # of those, the ones in the source
        self.inside: set[int] = set()  # ids of the requests inside the slice


_slices: dict[int, _SliceProgress] = {}
_stock_contains = dsl.View.__contains__


def _member(view: Any, request: Any) -> bool:
    """Whether `request` is in `view`, in time linear in the chain of views, not in the history."""
    kind = type(view)
    if isinstance(view, dsl.Root):
        requests = view._requests
        return request.id < len(requests) and requests[request.id] is request
    if kind is dsl.Filter:
        return bool(view.criteria(request)) and _member(view._source, request)
    if kind is dsl.Priority:
        return _member(view._source, request)
    if kind is dsl.Slicer and view.s.step in (None, 1) and (view.s.start or 0) >= 0:
        if view.s.stop is not None and view.s.stop < 0:
            raise _WalksHistory
        return _in_slice(view, request)
    raise _WalksHistory


def _in_slice(view: Any, request: Any) -> bool:
    """A slice `[start:stop]` of a source: the requests seen since last time are counted once."""
    progress = _slices.get(id(view))
    if progress is None or progress.view() is not view:
        for key in [key for key, old in _slices.items() if old.view() is None]:
            del _slices[key]
        progress = _slices[id(view)] = _SliceProgress(view)
    roots = list(view._walk(dsl.Root, unique=True))
    if len(roots) != 1:
        raise _WalksHistory
    requests = roots[0]._requests
    start, stop = view.s.start or 0, view.s.stop
    while progress.read < len(requests):
        candidate = requests[progress.read]
        progress.read += 1
        if _member(view._source, candidate):
            if progress.seen >= start and (stop is None or progress.seen < stop):
                progress.inside.add(id(candidate))
            progress.seen += 1
    return id(request) in progress.inside


def _view_contains(self: Any, item: Any) -> bool:
    """kmock's `request in view`, which kmock asks of every reaction for every request.

    kmock answers it by walking every request the view ever saw; with a few fault reactions
    (`view[n : n + 1] << 500`) and a few thousand requests, serving one request cost as much as
    all the ones before it, and the emulator fell behind its clients (timeouts everywhere).
    Filters, priorities and non-negative slices are answered here from the request itself and
    the slice's running count; anything else is asked of kmock.
    """
    if isinstance(item, kmock.Request):
        try:
            return _member(self, item)
        except _WalksHistory:
            pass
    return bool(_stock_contains(self, item))


dsl.View.__contains__ = _view_contains  # type: ignore[method-assign]


def k8s_status(code: int, reason: str, message: str = "") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


Validator = Callable[[dict[str, Any]], list[str]]


def _invalid(kind: str, name: str, errors: list[str]) -> Exception:
    shown = "; ".join(errors[:5]) + ("; ..." if len(errors) > 5 else "")
    return kmock.KubernetesError(status=422, reason="Invalid", message=f"{kind} {name!r} is invalid: {shown}")


def _conflict() -> Exception:
    return kmock.KubernetesError(status=409, reason="Conflict", message="the object has been modified")


def _terms(sel: str) -> list[str]:  # split on commas outside of "(...)"
    return [t.strip() for t in re.split(r",(?![^()]*\))", sel or "") if t.strip()]


def _labels_match(labels: dict[str, str], sel: str) -> bool:
    for t in _terms(sel):
        if m := re.fullmatch(r"(\S+)\s+(in|notin)\s+\((.*)\)", t):
            if (labels.get(m[1]) in {v.strip() for v in m[3].split(",")}) != (m[2] == "in"):
                return False
        elif m := re.fullmatch(r"([^!=\s]+)\s*(==|=|!=)\s*(\S*)", t):
            if (labels.get(m[1]) == m[3]) != (m[2] != "!="):
                return False
        elif (t[1:] in labels) if t.startswith("!") else (t not in labels):
            return False
    return True


def _fields_match(obj: dict[str, Any], sel: str) -> bool:
    for t in _terms(sel):
        match = re.fullmatch(r"([^!=]+)(==|=|!=)(.*)", t)
        if match is None:
            return False
        path, op, val = match.groups()
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, dict) else None
        if (str("" if cur is None else cur) == val) != (op != "!="):
            return False
    return True


class K8sEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._rv_last = 0
        self.hang_watches = False
        self.validators: dict[tuple[str, str, str], Validator] = {}  # (group, version, plural)
        self.bookmark_interval = 5.0  # seconds of quiet between BOOKMARKs (the API server: about 60)
        self.write_audit: list[tuple[str, str, str, str, dict[str, tuple[Any, ...]], float]] | None = None
        self.fallback[kmock.method.PUT] << self._serve_put

    @staticmethod
    def _apply_defaults(r: Any, obj: Any) -> None:
        """The API server's defaults that clients rely on: a Service (or EndpointSlice) port is TCP."""
        res = r.resource
        if not isinstance(obj, dict) or (res.group, res.plural) not in (
            ("", "services"),
            ("discovery.k8s.io", "endpointslices"),
        ):
            return
        spec = obj.get("spec") if res.plural == "services" else obj
        ports = spec.get("ports") if isinstance(spec, dict) else None
        for port in ports if isinstance(ports, list) else []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        if res.plural == "services" and isinstance(spec, dict) and r.action == kmock.action.CREATE:
            spec.setdefault("type", "ClusterIP")

    def _validate(self, r: Any, obj: Any) -> None:
        """422 Invalid (nothing stored) when `obj` breaks the schema of its resource."""
        res = r.resource
        validator = self.validators.get((res.group, res.version, res.plural))
        if validator is None or not isinstance(obj, dict):
            return
        errors = validator(obj)
        if errors:
            kind = self.resources[res].kind if res in self.resources else res.plural
            raise _invalid(str(kind), str((obj.get("metadata") or {}).get("name", "")), errors)

    def _next_rv(self) -> str:
        self._rv_last += 1
        return str(self._rv_last)

    def _has_status_sub(self, res: Any) -> bool:
        return res in self.resources and "status" in self.resources[res].subresources

    def _injected_error(
        self, request: Any
    ) -> bool:  # a user (non-fallback) reaction answers with >=400/exception?
        for p in self._payloads:
            if -math.inf in p.priorities or p._disabled.is_set():
                continue
            st, pl = p.response.status, p.response.payload
            err = (
                (st or 0) >= 400
                or isinstance(pl, BaseException)
                or (isinstance(pl, type) and issubclass(pl, BaseException))
            )
            if err and request in p._source:
                return True
        return False

    def _audit_write(self, r: Any) -> None:
        agent = str(r.headers.get("User-Agent", ""))
        if self.write_audit is None or not agent.startswith("meshshift/") or r.resource.plural == "leases":
            return
        name = r.name or str(((r.data if isinstance(r.data, dict) else {}).get("metadata") or {}).get("name"))
        holders = {
            key[2]: (spec.get("holderIdentity"), spec.get("renewTime"), spec.get("leaseDurationSeconds"))
            for key, obj in self._objects.items()
            if key[0].plural == "leases" and not obj.deleted
            for spec in [obj.raw.get("spec") or {}]
        }
        identity = agent.partition("(")[2].rstrip(")")
        self.write_audit.append((identity, r.resource.plural, r.namespace or "", name, holders, time.time()))

    async def _handle(self, request: Any) -> Any:
        r = request
        if r.resource is not None and r.method.value in ("POST", "PUT", "PATCH", "DELETE"):
            self._audit_write(r)
        if r.resource is not None:
            if r.method == "GET" and str(r.params.get("watch", "")).lower() in ("true", "1"):
                object.__setattr__(r, "action", kmock.action.WATCH)  # watch=True -> WATCH
            if self._injected_error(r):
                return await kmock.RawHandler._handle(self, r)  # no state change
            if r.action == kmock.action.CREATE and isinstance(r.data, dict):
                meta = r.data.setdefault("metadata", {})
                if r.namespace:
                    meta.setdefault("namespace", r.namespace)
                if not meta.get("name") and meta.get("generateName"):
                    meta["name"] = meta["generateName"] + "".join(
                        random.choices(string.ascii_lowercase + string.digits, k=5)
                    )
                meta.setdefault("uid", str(uuid.uuid4()))
                meta.setdefault(
                    "creationTimestamp", datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                )
                self._apply_defaults(r, r.data)
                self._validate(r, r.data)
                meta.update(generation=1, resourceVersion=self._next_rv())
            elif r.action == kmock.action.UPDATE and r.data is not None:
                self._prepare_patch(r)
            elif r.method == "PUT" and r.name and isinstance(r.data, dict):
                await self._apply_put(r)
            elif r.method == "DELETE" and r.name and isinstance(r.data, dict):
                self._check_preconditions(r)
        return await super()._handle(r)

    def _current(self, r: Any) -> Any:
        key = (r.resource, r.namespace, r.name)
        if key not in self._objects or self._objects[key].deleted:
            raise kmock.KubernetesObjectNotFoundError()
        return self._objects[key]

    def _check_preconditions(self, r: Any) -> None:
        """DeleteOptions.preconditions: a stale resourceVersion or uid is a 409, as on the real server."""
        wanted = r.data.get("preconditions") or {}
        meta = self._current(r).raw.get("metadata", {})
        for key in ("resourceVersion", "uid"):
            if wanted.get(key) and wanted[key] != meta.get(key):
                raise kmock.KubernetesError(
                    status=409,
                    reason="Conflict",
                    message=f"Precondition failed: {key} in precondition: {wanted[key]}, "
                    f"{key} in object meta: {meta.get(key)}",
                )

    def _prepare_patch(self, r: Any) -> None:  # mutates r.data in place (r.body keeps the original bytes)
        cur = copy.deepcopy(self._current(r).raw)
        meta = cur.get("metadata", {})
        if isinstance(r.data, dict):  # merge & strategic-merge patches: both applied as RFC7386 merge
            if r.subresource == "status":
                for k in [k for k in r.data if k not in ("status", "metadata")]:
                    del r.data[k]
            elif self._has_status_sub(r.resource):
                r.data.pop("status", None)
            want = (r.data.get("metadata") or {}).get("resourceVersion")
            if want and want != meta.get("resourceVersion"):
                raise _conflict()
            self._apply_defaults(r, r.data)  # a merge patch replaces a ports list whole
            new = patch_dict(cur, r.data)
            self._validate(r, new)
            r.data.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
            if new.get("spec") != cur.get("spec"):
                r.data["metadata"]["generation"] = meta.get("generation", 1) + 1
        elif isinstance(r.data, list):  # RFC6902 JSON patch
            try:
                new = jsonpatch.apply_patch(cur, r.data)
            except jsonpatch.JsonPatchTestFailed as e:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e
            self._validate(r, new)
            r.data.append({"op": "add", "path": "/metadata/resourceVersion", "value": self._next_rv()})
            if new.get("spec") != cur.get("spec"):
                r.data.append(
                    {"op": "add", "path": "/metadata/generation", "value": meta.get("generation", 1) + 1}
                )

    async def _apply_put(self, r: Any) -> None:
        async with self._lock:
            obj = self._current(r)
            cur = copy.deepcopy(obj.raw)
            meta = cur.get("metadata", {})
            want = (r.data.get("metadata") or {}).get("resourceVersion")
            if want and want != meta.get("resourceVersion"):
                raise _conflict()
            if r.subresource == "status":
                new = dict(cur, status=r.data.get("status"))
            else:
                new = copy.deepcopy(r.data)
                if self._has_status_sub(r.resource) and "status" in cur:
                    new["status"] = cur["status"]
                new.setdefault("metadata", {}).update(
                    {
                        k: meta[k]
                        for k in ("uid", "creationTimestamp", "namespace", "name", "generation")
                        if k in meta
                    }
                )
                if new.get("spec") != cur.get("spec"):
                    new["metadata"]["generation"] = meta.get("generation", 1) + 1
            self._apply_defaults(r, new)
            self._validate(r, new)
            new.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
            obj.create(new)  # appends a new version to obj.history
            await self._buses[r.resource].put({"type": "MODIFIED", "object": obj.raw})

    async def _serve_put(self, request: Any) -> Any:
        return self._as_sub(request, self._current(request).raw)

    def _as_sub(self, r: Any, obj: Any) -> Any:  # render the /scale subresource as autoscaling/v1 Scale
        if r.subresource != "scale":
            return obj
        sel = obj.get("spec", {}).get("selector", {}).get("matchLabels", {})
        return {
            "apiVersion": "autoscaling/v1",
            "kind": "Scale",
            "metadata": obj.get("metadata", {}),
            "spec": {"replicas": obj.get("spec", {}).get("replicas", 0)},
            "status": {
                "replicas": obj.get("status", {}).get("replicas", 0),
                "selector": ",".join(f"{k}={v}" for k, v in sel.items()),
            },
        }

    async def _serve_fetch(self, request: Any) -> Any:
        return self._as_sub(request, await super()._serve_fetch(request))

    async def _serve_update(self, request: Any) -> Any:
        return self._as_sub(request, await super()._serve_update(request))

    async def _serve_create(
        self, request: Any
    ) -> Any:  # real k8s: 201; CustomObjectsApi.create returns None on 200
        return kmock.Response(status=201, payload=await super()._serve_create(request))  # type: ignore[attr-defined]

    def _selected(self, request: Any, obj: Any) -> bool:
        return _labels_match(
            obj.get("metadata", {}).get("labels") or {}, request.params.get("labelSelector", "")
        ) and _fields_match(obj, request.params.get("fieldSelector", ""))

    async def _serve_list(self, request: Any) -> Any:
        result: Any = await super()._serve_list(request)
        res = request.resource
        kind = self.resources[res].kind if res in self.resources else None
        result["items"] = [o for o in result["items"] if self._selected(request, o)]
        result["metadata"]["resourceVersion"] = str(self._rv_last)
        result["apiVersion"] = f"{res.group}/{res.version}" if res.group else res.version
        result["kind"] = f"{kind}List" if kind else "List"
        return result

    def _type_meta(self, res: Any) -> dict[str, str]:
        kind = self.resources[res].kind if res in self.resources else None
        return {"apiVersion": f"{res.group}/{res.version}" if res.group else res.version, "kind": kind or ""}

    def _with_type_meta(self, res: Any, event: Any) -> Any:
        """Watch events carry apiVersion and kind in their object, as the real server sends them."""
        obj = event.get("object") if isinstance(event, dict) else None
        if not isinstance(obj, dict) or (obj.get("apiVersion") and obj.get("kind")):
            return event
        return {**event, "object": {**self._type_meta(res), **obj}}

    def _bookmark(self, res: Any, resource_version: str, *, initial_events_end: bool = False) -> Any:
        metadata: dict[str, Any] = {"resourceVersion": resource_version}
        if initial_events_end:
            metadata["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {"type": "BOOKMARK", "object": {**self._type_meta(res), "metadata": metadata}}

    def _serve_watch(self, request: Any) -> Any:
        # `application/json`, as the API server labels a JSON watch stream: client-go picks its
        # stream decoder by this type (kmock's default, application/octet-stream, has none).
        events = self._watch_events(request)
        return kmock.Response(headers={"Content-Type": "application/json"}, payload=events)  # type: ignore[attr-defined]

    async def _watch_events(self, request: Any) -> AsyncIterator[Any]:
        """A gap-free watch, with timeoutSeconds, resourceVersion, selectors, bookmarks and watch-list.

        Stock kmock snapshots the objects, then subscribes to the event bus: a write in
        between is lost. Here the bus is marked under the same lock the writes take, so
        every write after the snapshot is streamed. `resourceVersion` filters the replayed
        snapshot only (live events are all newer; a DELETED keeps its last version).

        As the API server does: with `allowWatchBookmarks=true` a BOOKMARK carrying the
        current resourceVersion comes every `bookmark_interval` seconds of quiet; with
        `sendInitialEvents=true` (client-go's watch-list, which needs bookmarks) every
        object is sent first, whatever the resourceVersion, then a BOOKMARK annotated
        `k8s.io/initial-events-end: "true"` at the resourceVersion of that snapshot.
        """
        yield b""  # send the headers now: the client is waiting for them
        if self.hang_watches:
            while self.hang_watches:  # noqa: ASYNC110 - a flag the test flips; nothing to await
                await asyncio.sleep(0.05)
            return  # the server recovered: it ends the stuck stream
        loop = asyncio.get_running_loop()
        timeout = request.params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        initial_events = str(request.params.get("sendInitialEvents", "")).lower() == "true"
        bookmarks = str(request.params.get("allowWatchBookmarks", "")).lower() == "true"
        if initial_events and not bookmarks:
            raise kmock.KubernetesError(
                status=422, reason="Invalid", message="sendInitialEvents requires allowWatchBookmarks=true"
            )
        since = 0 if initial_events else int(request.params.get("resourceVersion") or 0)
        res = request.resource
        bus = self._buses[res]
        stock: Any = self  # for the name-mangled privates of KubernetesEmulator
        async with self._lock:
            mark = await bus.mark()
            objects = [o for o in stock._KubernetesEmulator__get_objs(request, strict=False) if not o.deleted]
            replay = [{"type": "ADDED", "object": o.raw} for o in objects]
            snapshot_rv = str(self._rv_last)
        stream: Any = bus.stream(since=mark)
        last_rv = snapshot_rv
        pending: asyncio.Future[Any] | None = None
        try:
            for event in replay:
                rv = int(event["object"].get("metadata", {}).get("resourceVersion") or 0)
                if not (since and rv and rv <= since) and self._selected(request, event["object"]):
                    yield self._with_type_meta(res, event)
            if initial_events:
                yield self._bookmark(res, snapshot_rv, initial_events_end=True)
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return  # closes the HTTP stream, like the real server does
                wait = left
                if bookmarks:
                    wait = self.bookmark_interval if left is None else min(left, self.bookmark_interval)
                # One pending read of the bus, kept across bookmarks: cancelling a read would
                # close kmock's stream (and end the watch) at every bookmark.
                if pending is None:
                    pending = asyncio.ensure_future(anext(stream))
                done, _ = await asyncio.wait({pending}, timeout=wait)
                if not done:
                    if bookmarks and (left is None or left > self.bookmark_interval):
                        yield self._bookmark(res, last_rv)
                    continue
                read, pending = pending, None
                try:
                    event = read.result()
                except StopAsyncIteration:
                    return
                obj = event.get("object", {}) if isinstance(event, dict) else {}
                meta = obj.get("metadata", {})
                if not stock._KubernetesEmulator__check(
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    continue
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and not self._selected(request, obj):
                    continue
                last_rv = str(meta.get("resourceVersion") or last_rv)
                yield self._with_type_meta(res, event)
        finally:
            if pending is not None:
                pending.cancel()
                await asyncio.gather(pending, return_exceptions=True)
            await stream.aclose()
            await bus.unmark(mark)

    async def send_watch_event(
        self, resource: str, type_: str, obj: dict[str, Any], namespace: str | None = None
    ) -> None:
        """Push BOOKMARK/ERROR/... into open watches of `resource` (namespaced ones need `namespace`)."""
        obj = copy.deepcopy(obj)
        if namespace:
            obj.setdefault("metadata", {})["namespace"] = namespace
        await self._buses[kmock.resource(resource)].put({"type": type_, "object": obj})
