"""A small dynamic client over kubernetes-asyncio: raw JSON objects, one code path for all kinds.

meshshift reads and writes a handful of kinds, built-in and custom, always as plain
dicts (the annotations parser and the routers work on manifests, not models). Every
call goes through the client (`ApiClient.call_api` for watches, its REST layer with its
authentication for the rest), so authentication, TLS, the proxy and token refresh are the
client's. Writes are JSON merge patches carrying `metadata.resourceVersion` when the
caller wants optimistic concurrency; strategic merge patch is never used.

Transient failures (5xx, 429, timeouts, dropped connections) are retried here with a
short exponential backoff; anything else is raised as `KubeApiError` for the caller.

Every request (each retry too, and each watch opened) is counted in `KubeRequests` by kind,
namespace, name, verb and status code, with Argo Rollouts' label values (its
controller_clientset_k8s_request_total); see `KubeRequests.totals` for counts by verb and kind.
"""

from __future__ import annotations

import asyncio
import copy
import functools
import json
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import quote, unquote

import aiohttp
import orjson
import structlog
from kubernetes_asyncio.client import ApiClient
from kubernetes_asyncio.client.exceptions import ApiException

from meshshift.kube import wire
from meshshift.kube.ratelimit import FairRateLimiter

log = structlog.get_logger(__name__)

JsonObject = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
TRANSIENT_STATUSES = frozenset({429, 500, 502, 503, 504})


@dataclass(frozen=True, slots=True)
class ResourceType:
    group: str  # "" for the core group
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        path = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace:
            path += f"/namespaces/{quote(namespace, safe='')}"
        path += f"/{self.plural}"
        if name:
            path += f"/{quote(name, safe='')}"
        if subresource:
            path += f"/{subresource}"
        return path

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


DEPLOYMENTS = ResourceType("apps", "v1", "deployments", "Deployment")
SERVICES = ResourceType("", "v1", "services", "Service")
CONFIG_MAPS = ResourceType("", "v1", "configmaps", "ConfigMap")
EVENTS = ResourceType("", "v1", "events", "Event")
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease")
INGRESSES = ResourceType("networking.k8s.io", "v1", "ingresses", "Ingress")


def virtual_services(version: str = "v1beta1") -> ResourceType:
    return ResourceType("networking.istio.io", version, "virtualservices", "VirtualService")


def analysis_templates(group: str, *, cluster: bool = False) -> ResourceType:
    if cluster:
        return ResourceType(group, "v1alpha1", "clusteranalysistemplates", "ClusterAnalysisTemplate", False)
    return ResourceType(group, "v1alpha1", "analysistemplates", "AnalysisTemplate")


class KubeApiError(Exception):
    """A Kubernetes API call failed; `status` is the HTTP status (0: no answer)."""

    def __init__(self, status: int, reason: str, message: str, *, what: str = "") -> None:
        self.status, self.reason, self.message = status, reason, message
        prefix = f"{what}: " if what else ""
        super().__init__(f"{prefix}{status} {reason}: {message}".rstrip(": "))

    @property
    def not_found(self) -> bool:
        return self.status == 404

    @property
    def conflict(self) -> bool:
        """409: a stale resourceVersion, or the object exists already."""
        return self.status == 409

    @property
    def gone(self) -> bool:
        return self.status == 410

    @property
    def transient(self) -> bool:
        return self.status == 0 or self.status in TRANSIENT_STATUSES


class NotHolderError(KubeApiError):
    """A write refused before it was sent: this daemon does not hold the Lease that covers it."""

    @property
    def transient(self) -> bool:
        return False


# Whether a write made for this rollout (None: for the daemon itself) may be sent now.
WriteGuard = Callable[[tuple[str, str] | None], bool]


def error_from_status(status: Mapping[str, Any], *, what: str = "") -> KubeApiError:
    """A KubeApiError from a `kind: Status` body (an ERROR watch event, an error response)."""
    return KubeApiError(
        int(status.get("code") or 0),
        str(status.get("reason") or ""),
        str(status.get("message") or ""),
        what=what,
    )


def _from_api_exception(error: ApiException, what: str) -> KubeApiError:
    body: Any = error.body
    if isinstance(body, bytes | str) and body:
        try:
            body = json.loads(body)
        except ValueError:
            body = None
    if isinstance(body, dict) and body.get("kind") == "Status":
        status = dict(body)
        status.setdefault("code", error.status)
        return error_from_status(status, what=what)
    return KubeApiError(int(error.status or 0), str(error.reason or ""), "", what=what)


_Json = TypeVar("_Json")


def json_copy(value: _Json) -> _Json:
    """A deep copy of parsed JSON (dicts, lists, scalars): a third of copy.deepcopy's time.

    The cached objects are copied before every edit; at a thousand rollouts deepcopy's
    memo and dispatch were a tenth of the daemon's CPU. Anything else is deep-copied as usual.
    """
    kind = type(value)
    if kind is dict:
        return cast(_Json, {key: json_copy(item) for key, item in cast(dict[Any, Any], value).items()})
    if kind is list:
        return cast(_Json, [json_copy(item) for item in cast(list[Any], value)])
    if kind is str or kind is int or kind is float or kind is bool or value is None:
        return value
    return copy.deepcopy(value)


# A subclass, a dataclass or a datetime is no parsed JSON: json_copy keeps its type.
_COPY_OPTIONS = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)


def answer_copy(value: _Json) -> _Json:
    """A deep copy of an object as the API server sent it (parsed JSON: dicts, lists, strings,
    int64s, finite floats, booleans, None), through orjson: a third of json_copy's time.

    Only for what a JSON parser returned: orjson would write a tuple as a list and NaN as null,
    which JSON from the API server never holds. What orjson cannot write at all is copied by
    json_copy.
    """
    try:
        return cast(_Json, orjson.loads(orjson.dumps(value, option=_COPY_OPTIONS)))
    except TypeError:
        return json_copy(value)


def object_key(obj: Mapping[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def resource_version(obj: Mapping[str, Any] | None) -> str | None:
    if obj is None:
        return None
    value = (obj.get("metadata") or {}).get("resourceVersion")
    return str(value) if value else None


def owner_reference(owner: Mapping[str, Any], *, controller: bool = True) -> JsonObject:
    """An ownerReference to `owner` (a Deployment), so its deletion collects ours.

    Without `blockOwnerDeletion`: setting it needs `update` on `deployments/finalizers`
    where the OwnerReferencesPermissionEnforcement admission plugin runs, a permission
    the daemon would hold for nothing else; garbage collection works without it.
    """
    meta = owner.get("metadata") or {}
    return {
        "apiVersion": owner.get("apiVersion") or DEPLOYMENTS.api_version,
        "kind": owner.get("kind") or DEPLOYMENTS.kind,
        "name": meta.get("name"),
        "uid": meta.get("uid"),
        "controller": controller,
    }


# --- counting requests -------------------------------------------------------------------

# Argo's labels, in order: kind (the resource, plural), namespace, name, verb, status_code.
RequestLabels = tuple[str, str, str, str, str]
REQUEST_LABELS = ("kind", "namespace", "name", "verb", "status_code")
_VERBS = {"POST": "Create", "PUT": "Update", "PATCH": "Patch", "DELETE": "Delete"}
NO_NAME = "N/A"  # Argo's name for lists, events and replicasets (controller/metrics/client.go)
# Whose request it is: calls made while a rollout's controller runs are dropped with it.
_REQUEST_OWNER: ContextVar[tuple[str, str] | None] = ContextVar("meshshift_request_owner", default=None)


@contextmanager
def requests_owned_by(namespace: str, name: str) -> Iterator[None]:
    """Count the API calls made inside this block (and tasks started in it) as the rollout's."""
    token = _REQUEST_OWNER.set((namespace, name))
    try:
        yield
    finally:
        _REQUEST_OWNER.reset(token)


def request_labels(
    method: str, path: str, query: Sequence[tuple[str, str]], body: Mapping[str, Any] | None, status: int
) -> RequestLabels:
    """Argo's label values for one request to `path` (`/api/v1/namespaces/ns/pods/x`...).

    Verbs: Create, Update, Patch, Delete, Get, List, Watch (`watch=true`), Unknown. A create
    names the object of its body, a watch the one of its `metadata.name=` field selector; a
    list, and every events call, has the name `N/A`. A subresource call
    (`deployments/web/scale`) counts for its object (`deployments`, `web`); Argo's parser
    would read that one as kind `web`, name `scale`.
    """
    where = _path_labels(path)
    if where is None or method not in (*_VERBS, "GET"):
        return ("Unknown", "Unknown", "Unknown", "Unknown", str(status))
    namespace, kind, name = where
    if method == "GET":
        watching = any(k == "watch" and v == "true" for k, v in query)
        verb = "Get" if name else "Watch" if watching else "List"
        if verb == "Watch":  # a watch of one object names it in its field selector
            selected = [v for k, v in query if k == "fieldSelector" and v.startswith("metadata.name=")]
            name = selected[0].removeprefix("metadata.name=") if selected else ""
    else:
        verb = _VERBS[method]
        if verb == "Create":
            name = str(((body or {}).get("metadata") or {}).get("name") or "")
    if verb == "List" or kind in ("events", "replicasets"):
        name = NO_NAME
    return (kind, namespace, name, verb, str(status))


@functools.lru_cache(maxsize=16384)  # a few paths per rollout, each called again and again
def _path_labels(path: str) -> tuple[str, str, str] | None:
    """(namespace, kind, name) of an API path; None if it names no resource."""
    parts = [unquote(p) for p in path.split("?", 1)[0].strip("/").split("/")]
    # /api/v1/... or /apis/<group>/<version>/...
    rest = parts[2:] if parts[:1] == ["api"] else parts[3:] if parts[:1] == ["apis"] else []
    namespace = ""
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    elif len(rest) == 2 and rest[0] == "namespaces":  # a Namespace object itself
        rest = ["namespaces", rest[1]]
    if not rest:
        return None
    return namespace, rest[0], rest[1] if len(rest) > 1 else ""


class KubeRequests:
    """Counts of the API calls a KubeApi made, by Argo's labels; bounded by the rollouts.

    A counter of calls made for rollouts (see `requests_owned_by`) goes when the last of
    them goes (`forget`); the daemon's own (informer lists and watches, the leader Lease),
    and the `N/A`-named ones shared by a namespace (events, lists), stay.
    """

    def __init__(self) -> None:
        self._counts: Counter[RequestLabels] = Counter()
        self._owners: dict[RequestLabels, set[tuple[str, str]]] = {}
        self._unowned: set[RequestLabels] = set()

    def record(self, labels: RequestLabels) -> None:
        self._counts[labels] += 1
        owner = _REQUEST_OWNER.get()
        if owner is None or labels[2] in (NO_NAME, ""):
            self._unowned.add(labels)
        else:
            self._owners.setdefault(labels, set()).add(owner)

    def counts(self) -> dict[RequestLabels, int]:
        """Every counter, by (kind, namespace, name, verb, status_code)."""
        return dict(self._counts)

    def totals(self, by: Sequence[str] = ("verb", "kind")) -> Counter[tuple[str, ...]]:
        """The counts summed over the other labels: `totals()[("Patch", "virtualservices")]`."""
        indexes = [REQUEST_LABELS.index(label) for label in by]
        summed: Counter[tuple[str, ...]] = Counter()
        for labels, count in self._counts.items():
            summed[tuple(labels[i] for i in indexes)] += count
        return summed

    def total(self) -> int:
        return sum(self._counts.values())

    def forget(self, namespace: str, name: str) -> None:
        """One rollout is gone: drop the counters only its calls kept."""
        owner = (namespace, name)
        for labels in [labels for labels, owners in self._owners.items() if owner in owners]:
            owners = self._owners[labels]
            owners.discard(owner)
            if not owners:
                del self._owners[labels]
                if labels not in self._unowned:
                    self._counts.pop(labels, None)


class KubeApi:
    """Raw-JSON calls to the API server, with retries of transient failures."""

    def __init__(
        self,
        client: ApiClient,
        *,
        request_timeout: float = 30.0,
        retries: int = 4,
        retry_delay: float = 0.2,
        requests: KubeRequests | None = None,
        write_guard: WriteGuard | None = None,
        limiter: FairRateLimiter | None = None,
    ) -> None:
        self.client = client
        self.request_timeout = request_timeout
        self.retries = retries
        self.retry_delay = retry_delay
        self.requests = requests if requests is not None else KubeRequests()
        # Leader election or sharding: a write is only sent while the Lease covering it is held.
        self.write_guard = write_guard
        self.limiter = limiter  # client-side QPS and burst, fair between rollouts

    # --- reads --------------------------------------------------------------------

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> JsonObject | None:
        """The object, or None when it does not exist."""
        try:
            return await self._call("GET", rt.path(namespace, name), what=f"get {rt} {name}")
        except KubeApiError as error:
            if error.not_found:
                return None
            raise

    async def list_objects(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
    ) -> JsonObject:
        """Every object (following `continue` tokens); the list's metadata is the last page's."""
        items: list[JsonObject] = []
        token: str | None = None
        while True:
            query: list[tuple[str, str]] = [("limit", str(page_size))]
            if label_selector:
                query.append(("labelSelector", label_selector))
            if token:
                query.append(("continue", token))
            page = await self._call("GET", rt.path(namespace), query=query, what=f"list {rt}")
            items.extend(page.get("items") or [])
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                page["items"] = items
                return page

    # --- writes -------------------------------------------------------------------

    async def create(
        self, rt: ResourceType, body: Mapping[str, Any], namespace: str | None = None
    ) -> JsonObject:
        name = (body.get("metadata") or {}).get("name", "")
        return await self._call("POST", rt.path(namespace), body=dict(body), what=f"create {rt} {name}")

    async def merge_patch(
        self,
        rt: ResourceType,
        name: str,
        patch: Mapping[str, Any],
        namespace: str | None = None,
        *,
        subresource: str | None = None,
    ) -> JsonObject:
        """An RFC 7386 merge patch; put `metadata.resourceVersion` in it for a conflict check."""
        what = f"patch {rt}{'/' + subresource if subresource else ''} {name}"
        return await self._call(
            "PATCH",
            rt.path(namespace, name, subresource),
            body=dict(patch),
            content_type=MERGE_PATCH,
            what=what,
        )

    async def delete(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None = None,
        *,
        resource_version: str | None = None,
    ) -> None:
        """Delete the object (gone already is fine); with `resource_version`, only that version (else 409)."""
        body: JsonObject | None = None
        if resource_version:
            body = {
                "apiVersion": "v1",
                "kind": "DeleteOptions",
                "preconditions": {"resourceVersion": resource_version},
            }
        try:
            await self._call("DELETE", rt.path(namespace, name), body=body, what=f"delete {rt} {name}")
        except KubeApiError as error:
            if not error.not_found:
                raise

    # --- watches ------------------------------------------------------------------

    async def open_watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        *,
        resource_version: str | None,
        timeout_seconds: int,
        read_timeout: float | None = None,
        label_selector: str | None = None,
    ) -> aiohttp.ClientResponse:
        """A streaming watch response; the caller reads its lines and closes it.

        `watch=true` is sent in lower case, as the API server documents it.
        """
        query: list[tuple[str, str]] = [
            ("watch", "true"),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", str(timeout_seconds)),
        ]
        if resource_version:
            query.append(("resourceVersion", resource_version))
        if label_selector:
            query.append(("labelSelector", label_selector))
        # The server ends the stream after timeoutSeconds; the read timeout catches a
        # watch that hangs (nothing read for that long: not even the end of the stream).
        timeout = aiohttp.ClientTimeout(
            total=None,
            sock_connect=self.request_timeout,
            sock_read=read_timeout if read_timeout is not None else timeout_seconds + 30,
        )
        path = rt.path(namespace)
        if self.limiter is not None:
            await self.limiter.acquire(_REQUEST_OWNER.get())
        try:
            response = await self.client.call_api(
                path,
                "GET",
                query_params=query,
                header_params={"Accept": "application/json"},
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout,
            )
        except (aiohttp.ClientError, TimeoutError) as error:
            self.requests.record(request_labels("GET", path, query, None, 0))
            raise KubeApiError(0, type(error).__name__, str(error), what=f"watch {rt}") from error
        except ApiException as error:
            self.requests.record(request_labels("GET", path, query, None, int(error.status or 0)))
            raise
        watch = cast(aiohttp.ClientResponse, response)
        self.requests.record(request_labels("GET", path, query, None, watch.status))
        return watch

    # --- plumbing -----------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]] | None = None,
        body: JsonObject | None = None,
        content_type: str = "application/json",
        what: str,
    ) -> JsonObject:
        delay = self.retry_delay
        for attempt in range(self.retries + 1):
            self._fence(method, what)  # early: a write that cannot go is not queued
            try:
                return await self._call_once(method, path, query, body, content_type, what)
            except KubeApiError as error:
                if not error.transient or attempt == self.retries:
                    raise
                log.info("transient API error; retrying", call=what, error=str(error), retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
        raise AssertionError("unreachable")

    def _fence(self, method: str, what: str) -> None:
        guard = self.write_guard
        if method != "GET" and guard is not None and not guard(_REQUEST_OWNER.get()):
            raise NotHolderError(
                0, "NotHolder", "this daemon does not hold the Lease for it; not sent", what=what
            )

    async def _request(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: JsonObject | None,
        content_type: str,
    ) -> tuple[Any, int]:
        """One request through the client's REST layer: (the decoded answer, its status).

        What `ApiClient.call_api` does for a JSON body and answer, without its walk over both
        (sanitize_for_serialization, deserialize: they leave plain JSON as it is, and cost more
        than the request itself at a thousand rollouts). Headers, authentication (token refresh
        included), the session, TLS and the proxy are still the client's; a non-2xx answer
        raises ApiException there, as before.
        """
        client = self.client
        headers = {"Accept": "application/json", "Content-Type": content_type, **client.default_headers}
        if client.cookie:
            headers["Cookie"] = client.cookie
        params = list(query or [])
        await client.update_params_for_auth(headers, params, ["BearerToken"])
        response = await client.rest_client.request(
            method,
            f"{client.configuration.host}{path}",
            query_params=params,  # type: ignore[arg-type]  # urlencode takes pairs, repeated keys too
            headers=headers,
            body=body,
            _request_timeout=self.request_timeout,
        )
        try:
            result = wire.loads(response.data) if response.data else None
        except ValueError:  # not JSON: as call_api, nothing to return
            result = None
        return result, int(response.status)

    async def _call_once(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None,
        body: JsonObject | None,
        content_type: str,
        what: str,
    ) -> JsonObject:
        status = 0  # no answer
        result: Any = None
        if self.limiter is not None:
            await self.limiter.acquire(_REQUEST_OWNER.get())
            self._fence(method, what)  # again after the wait: the Lease must be held as it leaves
        try:
            result, status = await self._request(method, path, query, body, content_type)
        except ApiException as error:
            status = int(error.status or 0)
            raise _from_api_exception(error, what) from error
        except (aiohttp.ClientError, TimeoutError) as error:
            raise KubeApiError(0, type(error).__name__, str(error) or "no answer", what=what) from error
        except RecursionError:  # the client's JSON decoder on an absurdly nested object
            raise KubeApiError(
                422, "NestedTooDeeply", "the answer is nested too deeply to read", what=what
            ) from None
        finally:
            self.requests.record(request_labels(method, path, query or [], body, status))
        return cast(JsonObject, result) if isinstance(result, dict) else {}
