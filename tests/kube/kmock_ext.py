"""kmock 0.8 + kubernetes_asyncio 36.1: an emulator closer to the real API server.

Written against kmock 0.8's behaviour, with type hints. It fixes
`watch=True`, adds resourceVersion, conflict checks (409 on a stale resourceVersion, on writes
and as a DELETE precondition), PUT, `/status` and `/scale` subresources, label/field selectors,
`timeoutSeconds` on watches, 201 on create, and makes an injected error skip the write (as a
real failed write does). It uses kmock privates: `_payloads`, `_objects`, `_lock`, `_buses`,
`_internal.dicts`, and the name-mangled `__get_objs` / `__check` of KubernetesEmulator (for a
watch without a gap).

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
import uuid
from collections.abc import AsyncIterator
from typing import Any

import jsonpatch
import kmock
from kmock._internal.dicts import patch_dict  # private: kmock's own merge-patch function


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
        self.fallback[kmock.method.PUT] << self._serve_put

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

    async def _handle(self, request: Any) -> Any:
        r = request
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
            new = patch_dict(cur, r.data)
            r.data.setdefault("metadata", {})["resourceVersion"] = self._next_rv()
            if new.get("spec") != cur.get("spec"):
                r.data["metadata"]["generation"] = meta.get("generation", 1) + 1
        elif isinstance(r.data, list):  # RFC6902 JSON patch
            try:
                new = jsonpatch.apply_patch(cur, r.data)
            except jsonpatch.JsonPatchTestFailed as e:
                raise kmock.KubernetesError(status=422, reason="Invalid", message=str(e)) from e
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

    async def _serve_watch(self, request: Any) -> AsyncIterator[Any]:
        """A gap-free watch, with timeoutSeconds, resourceVersion and label/field selectors.

        Stock kmock snapshots the objects, then subscribes to the event bus: a write in
        between is lost. Here the bus is marked under the same lock the writes take, so
        every write after the snapshot is streamed. `resourceVersion` filters the replayed
        snapshot only (live events are all newer; a DELETED keeps its last version).
        """
        yield b""  # send the headers now: the client is waiting for them
        if self.hang_watches:
            while self.hang_watches:  # noqa: ASYNC110 - a flag the test flips; nothing to await
                await asyncio.sleep(0.05)
            return  # the server recovered: it ends the stuck stream
        loop = asyncio.get_running_loop()
        timeout = request.params.get("timeoutSeconds")
        deadline = loop.time() + float(timeout) if timeout else None
        since = int(request.params.get("resourceVersion") or 0)
        bus = self._buses[request.resource]
        stock: Any = self  # for the name-mangled privates of KubernetesEmulator
        async with self._lock:
            mark = await bus.mark()
            objects = [o for o in stock._KubernetesEmulator__get_objs(request, strict=False) if not o.deleted]
            replay = [{"type": "ADDED", "object": o.raw} for o in objects]
        stream: Any = bus.stream(since=mark)
        try:
            for event in replay:
                rv = int(event["object"].get("metadata", {}).get("resourceVersion") or 0)
                if not (since and rv and rv <= since) and self._selected(request, event["object"]):
                    yield event
            while True:
                left = None if deadline is None else deadline - loop.time()
                if left is not None and left <= 0:
                    return
                try:
                    event = await asyncio.wait_for(anext(stream), left)
                except (TimeoutError, StopAsyncIteration):
                    return  # closes the HTTP stream, like the real server does
                obj = event.get("object", {}) if isinstance(event, dict) else {}
                meta = obj.get("metadata", {})
                if not stock._KubernetesEmulator__check(
                    request, request.resource, meta.get("namespace"), meta.get("name"), strict=False
                ):
                    continue
                if event.get("type") in ("ADDED", "MODIFIED", "DELETED") and not self._selected(request, obj):
                    continue
                yield event
        finally:
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
