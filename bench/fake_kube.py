"""A light fake Kubernetes API server for bench/scale.py, in its own process.

It serves what meshshift calls, as the API server answers it: get, list (label selectors),
watch (from a resourceVersion, timeoutSeconds, bookmarks), create (201, 409 when it exists),
JSON merge patch and update with the resourceVersion precondition (409 when stale), delete,
the `scale` and `status` subresources of Deployments. It plays the Deployment controller
(a Deployment whose spec changed is rolled out `--rollout-delay` seconds later) and
Prometheus (`/api/v1/query` answers one sample of 1).

It records every Kubernetes request (time, verb, resource, name, client identity, status)
and every rollout state written, which the benchmark reads from `/_bench/*` (not counted).

Run: .venv/bin/python bench/fake_kube.py --port PORT
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import re
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from aiohttp import web

JsonObject = dict[str, Any]
ResourceKey = tuple[str, str]  # (group, plural)
ObjectKey = tuple[str, str, str, str]  # (group, plural, namespace, name)

EVENT_LOG_KEPT = 200_000  # watch events kept per resource for watches from a resourceVersion
BOOKMARK_EVERY = 20.0
NAMESPACE = "bench"
_IDENTITY = re.compile(r"\(([^)]*)\)")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def status_body(code: int, reason: str, message: str) -> JsonObject:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


def labels_match(labels: dict[str, str], selector: str) -> bool:
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if labels.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Parsed:
    group: str
    version: str
    plural: str
    namespace: str
    name: str
    subresource: str


def parse_path(path: str) -> Parsed | None:
    parts = [unquote(p) for p in path.strip("/").split("/")]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif parts[:1] == ["apis"] and len(parts) >= 3:
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest:
        return None
    return Parsed(
        group, version, rest[0], namespace, rest[1] if len(rest) > 1 else "", rest[2] if len(rest) > 2 else ""
    )


@dataclass
class Watcher:
    resource: ResourceKey
    namespace: str
    selector: str
    queue: asyncio.Queue[tuple[str, JsonObject]] = field(default_factory=asyncio.Queue)


class FakeKube:
    def __init__(self, rollout_delay: float) -> None:
        self.rollout_delay = rollout_delay
        self.objects: dict[ObjectKey, JsonObject] = {}
        self.rv = 0
        self.events: dict[ResourceKey, list[tuple[int, str, JsonObject]]] = defaultdict(list)
        self.watchers: list[Watcher] = []
        self.started = time.time()
        # (time, verb, resource, namespace, name, identity, status)
        self.requests: list[tuple[float, str, str, str, str, str, int]] = []
        self.last_rollout_request = 0.0
        # (time, rollout, state) for every rollout state written
        self.states: list[tuple[float, str, JsonObject]] = []
        self.latest: dict[str, JsonObject] = {}  # rollout -> its last state
        self.weights: list[tuple[float, str, int]] = []  # (time, virtual service, canary weight)
        self.queries = 0

    # --- storage ---------------------------------------------------------------------

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    def emit(self, group: str, plural: str, kind: str, obj: JsonObject) -> None:
        resource = (group, plural)
        log = self.events[resource]
        log.append((self.rv, kind, obj))
        if len(log) > EVENT_LOG_KEPT:
            del log[: len(log) - EVENT_LOG_KEPT]
        meta = obj.get("metadata") or {}
        for watcher in self.watchers:
            if watcher.resource != resource:
                continue
            if watcher.namespace and watcher.namespace != meta.get("namespace"):
                continue
            if watcher.selector and not labels_match(meta.get("labels") or {}, watcher.selector):
                continue
            watcher.queue.put_nowait((kind, obj))

    def store(self, key: ObjectKey, obj: JsonObject, kind: str) -> JsonObject:
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[key] = obj
        self.emit(key[0], key[1], kind, obj)
        self.observe_write(key, obj)
        if key[1] == "deployments" and self.rollout_delay >= 0:
            self.schedule_rollout(key)
        return obj

    def observe_write(self, key: ObjectKey, obj: JsonObject) -> None:
        now = time.time()
        if key[1] == "configmaps" and key[3].endswith("-meshshift-state"):
            text = (obj.get("data") or {}).get("state.json")
            if text:
                rollout = key[3].removesuffix("-meshshift-state")
                state = json.loads(text)["rollout"]
                self.states.append((now, rollout, state))
                self.latest[rollout] = state
        elif key[1] == "virtualservices":
            for route in (obj.get("spec") or {}).get("http") or []:
                for destination in route.get("route") or []:
                    host = str((destination.get("destination") or {}).get("host") or "")
                    if host.endswith("-canary"):
                        self.weights.append((now, key[3], int(destination.get("weight") or 0)))
                        return

    def schedule_rollout(self, key: ObjectKey) -> None:
        obj = self.objects.get(key)
        if obj is None:
            return
        generation = obj["metadata"].get("generation", 1)
        status = obj.get("status") or {}
        if status.get("observedGeneration") == generation and status.get("updatedReplicas") == _replicas(obj):
            return
        asyncio.get_running_loop().call_later(self.rollout_delay, self.roll_out, key, generation)

    def roll_out(self, key: ObjectKey, generation: int) -> None:
        obj = self.objects.get(key)
        if obj is None or obj["metadata"].get("generation") != generation:
            return
        replicas = _replicas(obj)
        wanted = {
            "observedGeneration": generation,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": replicas,
            "availableReplicas": replicas,
        }
        if all((obj.get("status") or {}).get(k) == v for k, v in wanted.items()):
            return
        obj = copy.deepcopy(obj)
        obj["status"] = wanted
        obj["metadata"]["resourceVersion"] = self.next_rv()
        self.objects[key] = obj
        self.emit(key[0], key[1], "MODIFIED", obj)

    # --- the API -----------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        path = request.path
        if path.startswith("/_bench/"):
            return await self.control(request)
        if path == "/api/v1/query" or path == "/api/v1/query_range":
            self.queries += 1
            return web.json_response(
                {
                    "status": "success",
                    "data": {"resultType": "vector", "result": [{"metric": {}, "value": [time.time(), "1"]}]},
                }
            )
        parsed = parse_path(path)
        if parsed is None:
            return web.json_response(status_body(404, "NotFound", path), status=404)
        method = request.method
        query = request.query
        watching = method == "GET" and query.get("watch") in ("true", "1")
        verb = _verb(method, parsed, watching)
        identity_match = _IDENTITY.search(request.headers.get("User-Agent", ""))
        identity = identity_match.group(1) if identity_match else ""
        name = parsed.name
        body: Any = None
        if method in ("POST", "PUT", "PATCH"):
            body = json.loads(await request.read() or b"null")
            if verb == "Create" and isinstance(body, dict):
                name = str((body.get("metadata") or {}).get("name") or "")
        if watching:
            self.requests.append((time.time(), verb, parsed.plural, parsed.namespace, name, identity, 200))
            return await self.watch(request, parsed)
        try:
            code, answer = self.serve(method, parsed, body, query)
        except ApiError as error:
            code, answer = error.code, status_body(error.code, error.reason, error.message)
        self.requests.append((time.time(), verb, parsed.plural, parsed.namespace, name, identity, code))
        if name.startswith("app-") and parsed.plural != "leases":
            self.last_rollout_request = time.time()
        return web.Response(body=json.dumps(answer).encode(), status=code, content_type="application/json")

    def serve(self, method: str, p: Parsed, body: Any, query: Any) -> tuple[int, JsonObject]:
        key: ObjectKey = (p.group, p.plural, p.namespace, p.name)
        if method == "GET" and not p.name:
            return 200, self.list(p, query.get("labelSelector", ""))
        if method == "GET":
            obj = self._get(key)
            return 200, _subresource(obj, p.subresource)
        if method == "POST":
            meta = body.setdefault("metadata", {})
            if p.namespace:
                meta.setdefault("namespace", p.namespace)
            key = (p.group, p.plural, p.namespace, str(meta.get("name") or ""))
            if key in self.objects:
                raise ApiError(409, "AlreadyExists", f"{p.plural} {key[3]} already exists")
            meta.update(
                uid=str(uuid.uuid4()),
                generation=1,
                creationTimestamp=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            )
            return 201, self.store(key, body, "ADDED")
        if method == "DELETE":
            obj = self._get(key)
            wanted = ((body or {}).get("preconditions") or {}).get("resourceVersion") if body else None
            if wanted and wanted != obj["metadata"]["resourceVersion"]:
                raise ApiError(409, "Conflict", "precondition failed")
            del self.objects[key]
            self.next_rv()
            self.emit(p.group, p.plural, "DELETED", obj)
            return 200, obj
        current = self._get(key)
        if method == "PATCH":
            if not isinstance(body, dict):
                raise ApiError(415, "UnsupportedMediaType", "only merge patches")
            if p.subresource == "scale":
                body = {"spec": {"replicas": (body.get("spec") or {}).get("replicas")}}
            elif p.subresource == "status":
                body = {"status": body.get("status")}
            elif p.plural == "deployments":
                body.pop("status", None)
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            new = merge_patch(current, body)
        else:  # PUT
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            new = copy.deepcopy(body)
            if p.plural == "deployments":
                new["status"] = current.get("status")
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                "the object has been modified; please apply your changes to the latest version and try again",
            )
        for kept in ("uid", "creationTimestamp", "namespace", "name", "generation"):
            if kept in current["metadata"]:
                new.setdefault("metadata", {})[kept] = current["metadata"][kept]
        if new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        stored = self.store(key, new, "MODIFIED")
        return 200, _subresource(stored, p.subresource)

    def _get(self, key: ObjectKey) -> JsonObject:
        obj = self.objects.get(key)
        if obj is None:
            raise ApiError(404, "NotFound", f'{key[1]} "{key[3]}" not found')
        return obj

    def list(self, p: Parsed, selector: str) -> JsonObject:
        items = [
            obj
            for (group, plural, namespace, _), obj in self.objects.items()
            if group == p.group
            and plural == p.plural
            and (not p.namespace or namespace == p.namespace)
            and (not selector or labels_match(obj["metadata"].get("labels") or {}, selector))
        ]
        return {
            "kind": "List",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    async def watch(self, request: web.BaseRequest, p: Parsed) -> web.StreamResponse:
        query = request.query
        since = int(query.get("resourceVersion") or 0)
        timeout = float(query.get("timeoutSeconds") or 1800)
        bookmarks = query.get("allowWatchBookmarks") == "true"
        watcher = Watcher((p.group, p.plural), p.namespace, query.get("labelSelector", ""))
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        if since:
            replay = [(kind, obj) for rv, kind, obj in self.events[(p.group, p.plural)] if rv > since]
        else:
            replay = [("ADDED", obj) for obj in self.list(p, watcher.selector)["items"]]
        self.watchers.append(watcher)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            for kind, obj in replay:
                await self._send(response, watcher, kind, obj)
            while (left := deadline - loop.time()) > 0:
                try:
                    async with asyncio.timeout(min(left, BOOKMARK_EVERY)):
                        kind, obj = await watcher.queue.get()
                except TimeoutError:
                    if bookmarks and deadline - loop.time() > 0:
                        bookmark = {
                            "kind": "Deployment",
                            "apiVersion": "apps/v1",
                            "metadata": {"resourceVersion": str(self.rv)},
                        }
                        await response.write(
                            json.dumps({"type": "BOOKMARK", "object": bookmark}).encode() + b"\n"
                        )
                    continue
                await self._send(response, watcher, kind, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(watcher)
        return response

    async def _send(self, response: web.StreamResponse, watcher: Watcher, kind: str, obj: JsonObject) -> None:
        meta = obj.get("metadata") or {}
        if watcher.namespace and watcher.namespace != meta.get("namespace"):
            return
        await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")

    # --- the bench's own calls (not counted) -------------------------------------------

    async def control(self, request: web.BaseRequest) -> web.StreamResponse:
        what = request.path.removeprefix("/_bench/")
        if what == "load":
            for obj in json.loads(await request.read()):
                group, _, _version = obj["apiVersion"].rpartition("/")
                plural = PLURALS[obj["kind"]]
                meta = obj["metadata"]
                meta.update(uid=str(uuid.uuid4()), generation=1)
                self.store((group, plural, meta.get("namespace", ""), meta["name"]), obj, "ADDED")
            return web.json_response({"ok": True})
        if what == "set-image":
            wanted = json.loads(await request.read())
            for key, obj in list(self.objects.items()):
                if key[1] != "deployments" or (obj["metadata"].get("labels") or {}).get("bench") != "rollout":
                    continue
                new = copy.deepcopy(obj)
                new["spec"]["template"]["spec"]["containers"][0]["image"] = wanted["image"]
                new["metadata"]["generation"] = new["metadata"].get("generation", 1) + 1
                self.store(key, new, "MODIFIED")
            return web.json_response({"ok": True, "at": time.time()})
        if what == "states":  # rollout -> [phase, stage, stable revision, canary replicas]
            return web.json_response(
                {
                    name: [
                        state.get("phase"),
                        state.get("stage"),
                        state.get("stableRevision"),
                        _replicas(self.objects.get(("apps", "deployments", NAMESPACE, name)) or {}),
                    ]
                    for name, state in self.latest.items()
                }
            )
        if what == "last-rollout-request":  # when the server last heard a request for a rollout
            return web.json_response({"at": self.last_rollout_request})
        if what == "log":
            return web.json_response(
                {
                    "requests": self.requests,
                    "states": self.states,
                    "weights": self.weights,
                    "queries": self.queries,
                }
            )
        if what == "state-reads":  # how many rollouts' states one daemon read since a moment
            asked = json.loads(await request.read())
            reads = [
                (r[0], r[4])
                for r in self.requests
                if r[0] >= asked["since"]
                and r[5] == asked["identity"]
                and r[2] == "configmaps"
                and r[1] == "Get"
            ]
            return web.json_response(
                {
                    "rollouts": len({name for _, name in reads}),
                    "last": max((at for at, _ in reads), default=0.0),
                }
            )
        if what == "count":
            return web.json_response({"requests": len(self.requests)})
        return web.json_response(status_body(404, "NotFound", what), status=404)


PLURALS = {
    "Deployment": "deployments",
    "Service": "services",
    "VirtualService": "virtualservices",
    "AnalysisTemplate": "analysistemplates",
    "ConfigMap": "configmaps",
}


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message


def _replicas(obj: JsonObject) -> int:
    replicas = (obj.get("spec") or {}).get("replicas")
    return 1 if replicas is None else int(replicas)


def _subresource(obj: JsonObject, subresource: str) -> JsonObject:
    if subresource != "scale":
        return obj
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": obj["metadata"],
        "spec": {"replicas": _replicas(obj)},
    }


_VERBS: dict[str, str] = {"POST": "Create", "PUT": "Update", "PATCH": "Patch", "DELETE": "Delete"}


def _verb(method: str, p: Parsed, watching: bool) -> str:
    if method == "GET":
        return "Watch" if watching else "Get" if p.name else "List"
    return _VERBS.get(method, "Unknown")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rollout-delay", type=float, default=0.1)
    args = parser.parse_args(argv)
    fake = FakeKube(args.rollout_delay)
    handler: Callable[[web.BaseRequest], Any] = fake.handle

    async def serve() -> None:
        server = web.Server(handler, access_log=None)
        runner = web.ServerRunner(server)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", args.port, backlog=1024).start()
        await asyncio.Event().wait()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
