"""`meshshift get|list|status|promote|abort|retry|undo|pause|set image|version`, like `kubectl argo rollouts`.

Two places a rollout can live:
- a meshshift daemon's HTTP API (`--server URL` or `host:port`, or MESHSHIFT_SERVER; standalone
  mode and `meshshift demo`):
  views from /api/v1, commands POSTed with the bearer token (`--token` or MESHSHIFT_TOKEN);
- a Kubernetes cluster (the default): the view is built from the Deployment, its
  `-primary` and the state ConfigMap the daemon keeps; commands are written to the
  `meshshift.io/command` annotation and the CLI waits for the daemon's record of what
  it did. `undo` puts the stable revision's pod template back on the Deployment.

Output: an Argo-like block and tree that fits the terminal's width, or the API's JSON
view with `-o json|yaml`. `--watch` redraws on every change until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import shutil
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

import aiohttp
import yaml
from rich.cells import cell_len, set_cell_size

from meshshift.spec.durations import format_duration, parse_duration

View = dict[str, Any]

TOKEN_ENV = "MESHSHIFT_TOKEN"  # noqa: S105 - the name of a variable, not a secret
COMMAND_WAIT = 30.0  # seconds to wait for the daemon to act on a command
WATCH_REFRESH = 5.0  # seconds between redraws when nothing changes (ages move on)
CLEAR = "\x1b[H\x1b[2J"
ANALYSIS_RUN_ICON = "\N{GREEK SMALL LETTER ALPHA}"  # Argo's mark for an AnalysisRun

STATUS_ICONS = {
    "Healthy": "✔",
    "Progressing": "◌",
    "Paused": "॥",
    "Degraded": "✖",
    "InvalidSpec": "⚠",
    "Successful": "✔",
    "Running": "◌",
    "Pending": "◌",
    "Failed": "✖",
    "Error": "⚠",
    "Inconclusive": "⚠",
}
VERBS_DONE = {
    "promote": "promoted",
    "promote-full": "fully promoted",
    "abort": "aborted",
    "retry": "retried",
    "undo": "undone",
    "pause": "paused",
}
EXIT_DEGRADED = 1  # `status`: the rollout is Degraded or its spec invalid (Argo's status: an error)
EXIT_TIMEOUT = 3  # `status`: --timeout passed before it was Healthy or Degraded
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT), as a shell reports it


class CliError(Exception):
    """A problem the user can act on; printed without a traceback."""


# --- entry points (sync: called from meshshift.cli.main) --------------------------------


def get_rollout(args: argparse.Namespace) -> int:
    return _run(_get(args))


def control_rollout(args: argparse.Namespace) -> int:
    return _run(_control(args))


def rollout_status(args: argparse.Namespace) -> int:
    return _run(_rollout_status(args))


def set_image(args: argparse.Namespace) -> int:
    return _run(_set_image(args))


def print_version(args: argparse.Namespace) -> int:
    return _run(_version(args))


def _run(coro: Any) -> int:
    try:
        return int(asyncio.run(coro))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED  # Ctrl-C ends a watch (nothing is left half-done), as a shell counts it
    except CliError as error:
        print(f"meshshift: {error}", file=sys.stderr)
        return 1


# --- where rollouts come from ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ControlResult:
    applied: bool | None  # None: requested, not acted on yet
    message: str


class Source(Protocol):
    async def rollouts(self) -> list[View]: ...

    async def rollout(self, namespace: str, name: str) -> View | None: ...

    def watch(self, namespace: str, name: str) -> AsyncIterator[View | None]: ...

    async def control(self, namespace: str, name: str, action: str) -> ControlResult: ...

    async def close(self) -> None: ...


class DaemonSource:
    """A meshshift daemon's HTTP API."""

    def __init__(self, server: str, token: str | None) -> None:
        self.base = server_url(server)
        self.token = token
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))

    async def close(self) -> None:
        await self.session.close()

    async def _get(self, path: str) -> tuple[int, Any]:
        try:
            async with self.session.get(
                self.base + path, timeout=aiohttp.ClientTimeout(total=30)
            ) as response:
                return response.status, await _json_body(response)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CliError(f"cannot reach meshshift at {self.base}: {error}") from error

    async def rollouts(self) -> list[View]:
        status, body = await self._get("/api/v1/rollouts")
        if status != 200:
            raise CliError(f"{self.base}/api/v1/rollouts answered {status}: {_error_text(body)}")
        rollouts = body.get("rollouts") if isinstance(body, dict) else None
        if not isinstance(rollouts, list) or not all(isinstance(v, dict) for v in rollouts):
            raise CliError(f"{self.base}/api/v1/rollouts did not answer a list of rollouts")
        return rollouts

    async def rollout(self, namespace: str, name: str) -> View | None:
        status, body = await self._get(_rollout_path(namespace, name))
        if status == 404:
            return None
        if status != 200:
            raise CliError(f"{self.base} answered {status}: {_error_text(body)}")
        if not isinstance(body, dict):
            raise CliError(f"{self.base} did not answer a rollout view")
        return body

    async def watch(self, namespace: str, name: str) -> AsyncIterator[View | None]:
        url = self.base + _rollout_path(namespace, name) + "?watch=true"
        try:
            async with self.session.get(url) as response:
                if response.status != 200:
                    raise CliError(
                        f"{url} answered {response.status}: {_error_text(await _json_body(response))}"
                    )
                event = "message"
                async for raw in response.content:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        event = line.removeprefix("event: ")
                    elif line.startswith("data: "):
                        if event == "deleted":
                            yield None
                            return
                        yield json.loads(line.removeprefix("data: "))
                        event = "message"
            raise CliError(f"{self.base} ended the watch (the daemon stopped?)")
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CliError(f"lost the connection to {self.base}: {error}") from error

    async def control(self, namespace: str, name: str, action: str) -> ControlResult:
        if not self.token:
            raise CliError(f"--token (or {TOKEN_ENV}) is needed to {action} through {self.base}")
        url = self.base + _rollout_path(namespace, name) + f"/{action}"
        try:
            async with self.session.post(
                url,
                headers={"Authorization": f"Bearer {self.token}"},
                timeout=aiohttp.ClientTimeout(total=60),
            ) as response:
                status, body = response.status, await _json_body(response)
        except (aiohttp.ClientError, TimeoutError) as error:
            raise CliError(f"cannot reach meshshift at {self.base}: {error}") from error
        if status in (200, 409):
            return ControlResult(bool(body.get("applied")), str(body.get("message", "")))
        if status == 202:
            return ControlResult(None, str(body.get("message", "")))
        raise CliError(f"{action} refused ({status}): {_error_text(body)}")


def server_url(server: str) -> str:
    """`--server`'s base URL: `host:port` (as kubectl's --server takes it) means http://host:port."""
    from urllib.parse import urlsplit

    text = server.strip().rstrip("/")
    if "://" not in text:
        text = f"http://{text}"
    parts = urlsplit(text)
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as error:
        raise CliError(f"--server {server!r}: {error}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise CliError(f"--server {server!r}: expected host:port or an http(s):// URL")
    return text


def _rollout_path(namespace: str, name: str) -> str:
    from urllib.parse import quote

    return f"/api/v1/rollouts/{quote(namespace, safe='')}/{quote(name, safe='')}"


async def _json_body(response: aiohttp.ClientResponse) -> Any:
    try:
        return await response.json(content_type=None)
    except (ValueError, aiohttp.ContentTypeError):
        return {"error": (await response.text())[:200]}


def _error_text(body: Any) -> str:
    return str(body.get("error") or body) if isinstance(body, dict) else str(body)


# --- the commands ---------------------------------------------------------------------------


async def _source(args: argparse.Namespace) -> tuple[Source, str | None]:
    """The source to use and the namespace it defaults to (None: find it by name)."""
    if args.server:
        return DaemonSource(args.server, args.token or os.environ.get(TOKEN_ENV)), args.namespace
    from meshshift.cli.cluster import ClusterSource

    source = await ClusterSource.connect(kubeconfig=args.kubeconfig, context=args.context)
    return source, args.namespace or source.default_namespace


async def _get(args: argparse.Namespace) -> int:
    if args.command == "list":
        return await _list(args)
    source, namespace = await _source(args)
    try:
        if args.name is None:
            if args.kind == "rollout":
                raise CliError("a rollout name is needed (or `meshshift get rollouts` for all of them)")
            views = await source.rollouts()
            if namespace is not None:
                views = [v for v in views if v["namespace"] == namespace]
            _print_list(views, args.output)
            return 0
        namespace = await _resolve_namespace(source, namespace, args.name)
        if args.watch:
            await _watch(source, namespace, args.name, args.output)
            return 0
        view = await source.rollout(namespace, args.name)
        if view is None:
            raise CliError(f"rollout {namespace}/{args.name} not found")
        print(render(view, args.output, width=_width()), end="")
        return 0
    finally:
        await source.close()


async def _list(args: argparse.Namespace) -> int:
    """`meshshift list rollouts`: Argo's columns; the context's namespace unless -n or -A."""
    source, namespace = await _source(args)
    try:
        views = await source.rollouts()
    finally:
        await source.close()
    if not args.all_namespaces and namespace is not None:
        views = [v for v in views if v["namespace"] == namespace]
    if args.output != "text":
        _print_list(views, args.output)
        return 0
    try:
        print(list_table(views, all_namespaces=args.all_namespaces or namespace is None), end="")
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise not_a_view(error) from None
    return 0


def list_table(views: Sequence[View], *, all_namespaces: bool) -> str:
    """kubectl-argo-rollouts' `list rollouts` table (with NAMESPACE first when listing all)."""
    if not views:
        return "No resources found.\n"
    header = [
        "NAME",
        "STRATEGY",
        "STATUS",
        "STEP",
        "SET-WEIGHT",
        "READY",
        "DESIRED",
        "UP-TO-DATE",
        "AVAILABLE",
    ]
    if all_namespaces:
        header.insert(0, "NAMESPACE")
    rows = [header]
    for view in sorted(views, key=lambda v: (str(v["namespace"]), str(v["name"]))):
        replicas = view.get("replicas") or {}
        blue_green = view.get("strategy") == "blueGreen"
        cells = [
            str(view["name"]),
            "BlueGreen" if blue_green else "Canary",
            str(view.get("phase") or "Unknown"),
            "-" if blue_green else str(view["step"]["label"]),
            "-" if blue_green else str(view["weights"].get("setWeight", "")),
            f"{replicas.get('available', 0)}/{replicas.get('desired', 0)}",
            str(replicas.get("desired", 0)),
            str(replicas.get("updated", 0)),
            str(replicas.get("available", 0)),
        ]
        rows.append([str(view["namespace"]), *cells] if all_namespaces else cells)
    widths = [max(cell_len(row[i]) for row in rows) for i in range(len(header))]
    # Never cut, as kubectl's tables: a narrow terminal wraps rather than hides a column.
    return "".join(
        "  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip() + "\n" for row in rows
    )


TERMINAL_PHASES = {"Healthy": 0, "Degraded": EXIT_DEGRADED, "InvalidSpec": EXIT_DEGRADED}
UNOBSERVED = "waiting for rollout spec update to be observed"  # Argo's words for the same wait


def status_phase(view: View) -> tuple[str, str]:
    """The phase and message `status` goes by. A Healthy rollout whose workload already asks for a
    revision its state does not know (`set image` a moment ago) is Progressing, as Argo's status
    is until the controller observed the new generation: a watch never ends on the old revision."""
    phase, message = str(view.get("phase")), _message(view)
    asked = view.get("workloadRevision")
    known = set((view.get("revisions") or {}).values())
    if phase == "Healthy" and asked is not None and asked not in known:
        return "Progressing", UNOBSERVED
    return phase, message


def status_line(view: View) -> str:
    """`Paused - CanaryPauseStep (...)`: the status and its message, as Argo's `status` prints it."""
    phase, message = status_phase(view)
    return f"{phase} - {message}" if message and phase != "Healthy" else phase


async def _rollout_status(args: argparse.Namespace) -> int:
    try:
        timeout = 0.0 if str(args.timeout).strip() in ("0", "") else parse_duration(args.timeout)
    except ValueError as error:
        raise CliError(f"--timeout {args.timeout!r}: {error}") from None
    source, namespace = await _source(args)
    try:
        namespace = await _resolve_namespace(source, namespace, args.name)
        if not args.watch:
            view = await source.rollout(namespace, args.name)
            if view is None:
                raise CliError(f"rollout {namespace}/{args.name} not found")
            print(status_line(view), flush=True)
            return TERMINAL_PHASES.get(status_phase(view)[0], 0)
        return await watch_status(source, namespace, args.name, timeout)
    finally:
        await source.close()


async def watch_status(
    source: Source, namespace: str, name: str, limit: float, out: TextIO | None = None
) -> int:
    """Print each new status line until Healthy (0) or Degraded/InvalidSpec (1); 3 on --timeout."""
    out = out or sys.stdout
    printed = None
    updates = source.watch(namespace, name)
    try:
        async with asyncio.timeout(limit or None):
            async for view in updates:
                if view is None:
                    raise CliError(f"rollout {namespace}/{name} is gone")
                line = status_line(view)
                if line != printed:
                    out.write(line + "\n")
                    out.flush()
                    printed = line
                phase, message = status_phase(view)
                if phase in TERMINAL_PHASES:
                    if phase != "Healthy":
                        print(f"meshshift: rollout {namespace}/{name} is {phase}: {message}", file=sys.stderr)
                    return TERMINAL_PHASES[phase]
    except TimeoutError:
        print(
            f"meshshift: rollout {namespace}/{name}: the status watch exceeded --timeout "
            f"{format_duration(limit)}",
            file=sys.stderr,
        )
        return EXIT_TIMEOUT
    finally:
        await updates.aclose()  # type: ignore[attr-defined]
    raise CliError(f"the watch of {namespace}/{name} ended")


async def _set_image(args: argparse.Namespace) -> int:
    """`set image NAME CONTAINER=IMAGE...`: the Deployment's pod template, a new revision."""
    changes: dict[str, str] = {}
    for item in args.images:
        container, sep, image = item.partition("=")
        if not sep or not container or not image:
            raise CliError(f"{item!r}: expected CONTAINER=IMAGE (or *=IMAGE for every container)")
        changes[container] = image
    if args.server:
        raise CliError(
            "set image needs Kubernetes: a standalone rollout's new revision is new canary endpoints "
            "in its file (spec.canary.endpoints)"
        )
    from meshshift.cli.cluster import ClusterSource

    source = await ClusterSource.connect(kubeconfig=args.kubeconfig, context=args.context)
    try:
        namespace = args.namespace or source.default_namespace
        message = await source.set_images(namespace, args.name, changes)
    finally:
        await source.close()
    print(f"rollout '{args.name}' {message}")
    return 0


async def _version(args: argparse.Namespace) -> int:
    from meshshift import __version__

    if args.short:
        print(__version__)
    else:
        print(f"meshshift: v{__version__}")
    if args.server:
        source = DaemonSource(args.server, None)
        try:
            status, body = await source._get("/api/v1/info")
        finally:
            await source.close()
        if status != 200 or not isinstance(body, dict):
            raise CliError(f"{source.base}/api/v1/info answered {status}: {_error_text(body)}")
        version = body.get("version")
        print(str(version) if args.short else f"server ({source.base}): v{version}")
    return 0


async def _control(args: argparse.Namespace) -> int:
    action = "promote-full" if args.command == "promote" and args.full else args.command
    source, namespace = await _source(args)
    try:
        namespace = await _resolve_namespace(source, namespace, args.name)
        result = await source.control(namespace, args.name, action)
    finally:
        await source.close()
    if result.applied is None:
        print(f"rollout '{args.name}' {action} requested: {result.message}")
        return 0
    if result.applied:
        print(f"rollout '{args.name}' {VERBS_DONE[action]}: {result.message}")
        return 0
    print(f"rollout '{args.name}' not {VERBS_DONE[action]}: {result.message}", file=sys.stderr)
    return 1


async def _resolve_namespace(source: Source, namespace: str | None, name: str) -> str:
    """The namespace given, or the only one holding a rollout of that name."""
    if namespace is not None:
        return namespace
    found = sorted({str(v["namespace"]) for v in await source.rollouts() if v["name"] == name})
    if len(found) == 1:
        return found[0]
    if not found:
        raise CliError(f"no rollout named {name!r}")
    raise CliError(f"rollouts named {name!r} exist in several namespaces ({', '.join(found)}): pass -n")


async def _watch(source: Source, namespace: str, name: str, output: str, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    redraw = out.isatty() and output == "text"
    updates = source.watch(namespace, name)
    last: View | None = None
    next_view = asyncio.ensure_future(anext(updates, None))
    try:
        while True:
            done, _ = await asyncio.wait({next_view}, timeout=WATCH_REFRESH)
            if done:
                view = next_view.result()
                if view is None:
                    out.write(f"rollout {namespace}/{name} is gone\n")
                    out.flush()
                    return
                last = view
                next_view = asyncio.ensure_future(anext(updates, None))
            elif last is None or output != "text":
                continue  # nothing new; only the text block has ages to move on
            assert last is not None
            text = render(last, output, width=_width(), watching=True)
            out.write((CLEAR + text) if redraw else (text + "\n" if output == "text" else text))
            out.flush()
    finally:
        next_view.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration, CliError):
            await next_view
        await updates.aclose()  # type: ignore[attr-defined]


def _width() -> int:
    return max(40, shutil.get_terminal_size((100, 24)).columns)


# --- rendering -------------------------------------------------------------------------------


def render(view: View, output: str, *, width: int, now: float | None = None, watching: bool = False) -> str:
    if output == "json":
        return (
            json.dumps(view, separators=(",", ":")) + "\n" if watching else json.dumps(view, indent=2) + "\n"
        )
    if output == "yaml":
        return ("---\n" if watching else "") + yaml.safe_dump(view, sort_keys=False)
    try:
        return render_text(view, width=width, now=now)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise not_a_view(error) from None


def not_a_view(error: Exception) -> CliError:
    """What a server answering something other than meshshift's rollout view gets reported as."""
    return CliError(
        f"the answer is not a rollout view this meshshift can show ({type(error).__name__}: {error})"
    )


def render_text(view: View, *, width: int, now: float | None = None) -> str:
    """The Argo-like block, then the tree; no line wider than `width` cells."""
    now = time.time() if now is None else now
    lines = [*_block(view), "", *_tree(view, width, now)]
    failures = _analysis_failures(view, width)
    if failures:
        lines += ["", *failures]
    judges = _judges(view)
    if judges:
        lines += ["", *judges]
    return "".join(_fit(line, width) + "\n" for line in lines)


def _analysis_failures(view: View, width: int) -> list[str]:
    """Why each live analysis run failed, erred or is inconclusive: per metric, the value it
    measured, the condition it was held to and the limit it crossed (the API's `why`), wrapped
    rather than cut to the terminal's width."""
    lines = []
    for run in view.get("analysisRuns") or []:
        if run.get("superseded") or run.get("phase") not in ("Failed", "Error", "Inconclusive"):
            continue
        step = run.get("stepIndex")
        where = "background" if step is None else f"step {int(step) + 1}"
        lines.append(f"  {ANALYSIS_RUN_ICON} {run['name']} ({where}): {_status(run.get('phase'))}")
        explained = [m for m in run.get("metrics") or [] if m.get("why")]
        for metric in explained:
            icon = STATUS_ICONS.get(str(metric.get("phase")), "?")
            lines += textwrap.wrap(
                str(metric["why"]), width - 1, initial_indent=f"    {icon} ", subsequent_indent="      "
            )
        if not explained and run.get("message"):
            lines += textwrap.wrap(
                str(run["message"]), width - 1, initial_indent="    ", subsequent_indent="    "
            )
    return ["Analysis:", *lines] if lines else []


VERDICT_ICONS = {"worse": "✖", "not-worse": "✔", "undecided": "◌"}


def _judges(view: View) -> list[str]:
    """The sequential judges of the live analysis runs: verdict, counts, evidence against alpha."""
    lines = []
    for run in view.get("analysisRuns") or []:
        if run.get("superseded"):
            continue
        for metric in run.get("metrics") or []:
            judge = metric.get("judge")
            if not judge:
                continue
            verdict = str(judge.get("verdict"))
            elapsed = judge.get("elapsed")
            after = f" after {float(elapsed):.1f}s" if isinstance(elapsed, int | float) else ""
            lines.append(
                f"  {metric['name']} ({run['name']}): {VERDICT_ICONS.get(verdict, '?')} {verdict}{after}"
            )
            for side in ("canary", "stable"):
                counts = judge.get(side) or {}
                lines.append(f"    {side:<8}{_judge_counts(counts)}")
            evidence, needed = _judge_number(judge.get("evidence")), _judge_number(judge.get("threshold"))
            lines.append(f"    evidence {evidence} of {needed} needed (alpha {judge.get('alpha')})")
    return ["Judge:", *lines] if lines else []


def _judge_counts(counts: Mapping[str, Any]) -> str:
    requests, bad, rate = counts.get("requests") or 0, counts.get("bad") or 0, counts.get("rate")
    share = "" if rate is None else f" ({float(rate) * 100:.3g}%)"
    return f"{float(bad):g} {counts.get('badName', 'errors')} in {float(requests):g} requests{share}"


def _judge_number(value: object) -> str:
    if isinstance(value, str):
        return value  # "inf"
    if not isinstance(value, int | float):
        return "?"
    return f"{value:.3g}" if value < 1e4 else f"{value:.2e}"


def _status(phase: str | None) -> str:
    phase = phase or "Unknown"
    return f"{STATUS_ICONS.get(phase, '?')} {phase}"


def _field(label: str, value: object, indent: int = 0) -> str:
    return f"{' ' * indent}{label + ':':<{17 - indent}}{value}"


def _block(view: View) -> list[str]:
    weights = view.get("weights") or {}
    lines = [
        _field("Name", view["name"]),
        _field("Namespace", view["namespace"]),
        _field("Status", _status(view.get("phase"))),
        _field("Message", _message(view)),
    ]
    blue_green = view.get("blueGreen")
    if blue_green:
        # As Argo's plugin shows a blue-green Rollout: no steps or weights, the roles instead.
        lines += [
            _field("Strategy", "BlueGreen"),
            _field("Active", _revision_and_roles(blue_green, blue_green.get("activeRevision")), 2),
            _field("Preview", _revision_and_roles(blue_green, blue_green.get("previewRevision")), 2),
        ]
    else:
        lines += [
            _field("Strategy", "Canary"),
            _field("Step", view["step"]["label"], 2),
            _field("SetWeight", weights.get("setWeight", 0), 2),
            _field("ActualWeight", weights.get("actual", 0), 2),
        ]
    applied = weights.get("applied") or {}
    if len(applied) > 1 or (applied and not weights.get("appliedAgree", True)):
        shown = ", ".join(f"{router} {'?' if w is None else w}" for router, w in sorted(applied.items()))
        lines.append(_field("Applied", shown, 2))
    for label, listed in (("Images", _tagged(view, "images")), ("Endpoints", _tagged(view, "endpoints"))):
        if listed:
            lines.append(_field(label, listed[0]))
            lines.extend(" " * 17 + item for item in listed[1:])
    routes = view.get("headerRoutes") or []
    if routes:
        lines.append(_field("HeaderRoutes", ", ".join(_header_route(r) for r in routes)))
    replicas = view.get("replicas") or {}
    if replicas:
        lines.append("Replicas:")
        for key in ("desired", "updated", "available", "unavailable"):
            if key in replicas:
                lines.append(_field(key.capitalize(), replicas[key], 2))
    return lines


def _tagged(view: View, key: str) -> list[str]:
    """Argo's `Images:` (here also standalone `Endpoints:`): each item once, sorted, with the tags
    of every live revision running it (`example/app:v1 (stable, canary)`); a canary's only while
    a canary revision is up. Endpoints add their set's `version` label."""
    revisions = view.get("revisions") or {}
    live = ["stable"]
    if revisions.get("canary") and revisions.get("canary") != revisions.get("stable"):
        live.append("canary")
    tags: dict[str, list[str]] = {}
    for role in live:
        version = (view.get("versions") or {}).get(role) if key == "endpoints" else None
        role_tags = [t for t in _image_roles(view, role).split(", ") if t]
        if version:
            role_tags.append(f"version {version}")
        for item in (view.get(key) or {}).get(role, ()):
            merged = tags.setdefault(str(item), [])
            merged += [t for t in role_tags if t not in merged]
    return [f"{item} ({', '.join(t)})" if t else item for item, t in sorted(tags.items())]


def _revision_and_roles(blue_green: Mapping[str, Any], revision: object) -> str:
    if revision is None:
        return "none"
    roles = (blue_green.get("roles") or {}).get(revision) or []
    return f"{revision} ({', '.join(roles)})" if roles else str(revision)


def _image_roles(view: View, role: str) -> str:
    """`stable`/`canary` for a canary; Argo's `stable, active`, `preview` for a blue-green rollout."""
    blue_green = view.get("blueGreen")
    if not blue_green:
        return role
    revision = (view.get("revisions") or {}).get(role)
    return ", ".join((blue_green.get("roles") or {}).get(revision) or [])


def _message(view: View) -> str:
    message = str(view.get("message") or "")
    if view.get("phase") == "Paused" and view.get("pauseReason"):
        return f"{view['pauseReason']} ({message})" if message else str(view["pauseReason"])
    if view.get("phase") == "Degraded" and view.get("abortReason"):
        return f"{view['abortReason']}: {message}"
    return message


def _header_route(route: Mapping[str, Any]) -> str:
    rules = " and ".join(
        f"{m['headerName']} {m['value']['kind']} {m['value']['value']!r}" for m in route.get("match") or []
    )
    return f"{route['name']} ({rules})" if rules else str(route["name"])


@dataclass(frozen=True, slots=True)
class _Row:
    name: str
    kind: str
    status: str
    age: str
    info: str


def _tree(view: View, width: int, now: float) -> list[str]:
    revisions = view.get("revisions") or {}
    rows = [
        _Row(
            f"⟳ {view['name']}",
            "Rollout",
            _status(view.get("phase")),
            _age(view.get("rolloutStartedAt"), now),
            "",
        )
    ]
    groups: list[tuple[str, list[_Row]]] = []
    canary, stable = revisions.get("canary"), revisions.get("stable")
    runs = [r for r in view.get("analysisRuns") or [] if not r.get("superseded")]
    if canary and canary != stable:
        info = ",".join(_roles(view, canary)) if view.get("blueGreen") else "canary"
        children = [_Row(f"⧉ {canary}", "Revision", _status(_canary_health(view)), "", info)]
        children += [
            _Row(
                f"{ANALYSIS_RUN_ICON} {run['name']}",
                "AnalysisRun",
                _status(run.get("phase")),
                _age(run.get("startedAt"), now),
                _counts(run),
            )
            for run in runs
        ]
        groups.append((f"# revision:{canary}", children))
    if stable:
        info = ",".join(_roles(view, stable)) if view.get("blueGreen") else "stable"
        groups.append(
            (f"# revision:{stable}", [_Row(f"⧉ {stable}", "Revision", _status("Healthy"), "", info)])
        )
    tree: list[tuple[str, _Row | None]] = [("", rows[0])]
    for index, (label, children) in enumerate(groups):
        last_group = index == len(groups) - 1
        tree.append(("└──" if last_group else "├──", _Row(label, "", "", "", "")))
        stem = "   " if last_group else "│  "
        for child_index, child in enumerate(children):
            branch = "└──" if child_index == len(children) - 1 else "├──"
            tree.append((stem + branch, child))
    return _table([(prefix + row.name, row) for prefix, row in tree if row is not None], width)


def _roles(view: View, revision: str) -> list[str]:
    return list(((view.get("blueGreen") or {}).get("roles") or {}).get(revision) or [])


def _canary_health(view: View) -> str:
    return "Degraded" if view.get("phase") == "Degraded" else "Healthy"


def _counts(run: Mapping[str, Any]) -> str:
    total: dict[str, int] = {"successful": 0, "failed": 0, "error": 0, "inconclusive": 0}
    for metric in run.get("metrics") or []:
        for key in total:
            total[key] += int((metric.get("counts") or {}).get(key, 0))
    parts = [f"✔ {total['successful']}", f"✖ {total['failed']}"]
    if total["error"]:
        parts.append(f"⚠ {total['error']}")
    if total["inconclusive"]:
        parts.append(f"? {total['inconclusive']}")
    return ",".join(parts)


def _table(rows: Sequence[tuple[str, _Row]], width: int) -> list[str]:
    header = ("NAME", "KIND", "STATUS", "AGE", "INFO")
    cells = [header] + [(name, row.kind, row.status, row.age, row.info) for name, row in rows]
    widths = [max(cell_len(c[i]) for c in cells) for i in range(1, 5)]
    fixed = sum(widths) + 2 * 4
    name_width = max(12, min(max(cell_len(c[0]) for c in cells), width - fixed))
    lines = []
    for cell in cells:
        parts = [_pad(cell[0], name_width)] + [_pad(cell[i], widths[i - 1]) for i in range(1, 5)]
        lines.append("  ".join(parts).rstrip())
    return lines


def _pad(text: str, width: int) -> str:
    if cell_len(text) > width:
        return set_cell_size(text, width - 1) + "…"
    return set_cell_size(text, width)


def _fit(line: str, width: int) -> str:
    return line if cell_len(line) <= width else set_cell_size(line, width - 1) + "…"


def _age(since: float | None, now: float) -> str:
    if since is None:
        return ""
    seconds = max(0, int(now - since))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _print_list(views: list[View], output: str) -> None:
    try:
        _print_views(views, output)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as error:
        raise not_a_view(error) from None


def _print_views(views: list[View], output: str) -> None:
    if output == "json":
        print(json.dumps({"rollouts": views}, indent=2))
        return
    if output == "yaml":
        print(yaml.safe_dump({"rollouts": views}, sort_keys=False), end="")
        return
    header = ("NAME", "NAMESPACE", "STATUS", "STEP", "SET-WEIGHT", "ACTUAL-WEIGHT")
    rows = [header] + [
        (
            v["name"],
            v["namespace"],
            _status(v.get("phase")),
            "-" if v.get("strategy") == "blueGreen" else v["step"]["label"],
            str(v["weights"].get("setWeight", "")),
            str(v["weights"].get("actual", "")),
        )
        for v in views
    ]
    widths = [max(cell_len(r[i]) for r in rows) for i in range(len(header))]
    width = _width()
    for row in rows:
        print(_fit("  ".join(_pad(c, w) for c, w in zip(row, widths, strict=True)).rstrip(), width))
    if not views:
        print("no rollouts")


# --- helpers for the Kubernetes source -------------------------------------------------------


def command_value(action: str, clock: Callable[[], float] = time.time) -> str:
    """`promote/2026-11-26T10:00:00.123456Z`: the verb plus a token that makes it a new command."""
    stamp = datetime.datetime.fromtimestamp(clock(), datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{action}/{stamp}"
