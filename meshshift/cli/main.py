"""The `meshshift` command line (DESIGN.md §4), with kubectl's habits.

Each subcommand lives in the module that owns its behaviour; this file only parses
arguments and dispatches, importing lazily so `meshshift lint` starts fast.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Callable, Sequence

from meshshift import __version__
from meshshift.logs import configure_logging
from meshshift.settings import (
    EVENT_LOOPS,
    LOG_LEVELS,
    DaemonSettings,
    NotificationSettings,
    bounded_number,
    split_host_port,
)

# The meshes of the builtin templates (meshshift.analysis.providers.builtin.MESHES, which this file
# does not import so that `meshshift lint` starts fast; tests/test_backtest.py checks they agree).
BUILTIN_MESHES = ("istio", "nginx", "envoy", "traefik", "gateway-api/istio", "gateway-api/traefik")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meshshift",
        description="Progressive delivery: shift traffic to a canary, step by step, on analysis.",
    )
    parser.add_argument("--version", action="version", version=f"meshshift {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the daemon (Kubernetes mode, or standalone with --config)")
    run.add_argument(
        "--config", metavar="STANDALONE.yaml", help="run one StandaloneRollout instead of Kubernetes"
    )
    run.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="the kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)",
    )
    run.add_argument("--context", metavar="NAME", help="the kubeconfig context (default: its current one)")
    run.add_argument("-n", "--namespace", help="watch one namespace (default: all)")
    run.add_argument("--selector", "-l", metavar="LABELS", help="label selector on Deployments")
    run.add_argument("--listen", metavar="HOST:PORT", help="HTTP listener (default 0.0.0.0:8090)")
    run.add_argument("--token", help="bearer token for control endpoints (or MESHSHIFT_TOKEN)")
    run.add_argument(
        "--allowed-hosts",
        metavar="NAMES",
        help="comma-separated host names the HTTP listener answers for, beyond IP addresses and "
        "localhost (or MESHSHIFT_ALLOWED_HOSTS; * for any): a DNS-rebinding guard",
    )
    run.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="elect a leader through a Lease (default: on)",
    )
    run.add_argument(
        "--shards",
        type=_at_least(1, integer=True, name="--shards"),
        metavar="K",
        help="hash rollouts onto K shards, each guarded by its own Lease meshshift-shard-<k>; "
        "replicas share them (default 1: one leader runs all; or MESHSHIFT_SHARDS)",
    )
    run.add_argument(
        "--qps",
        type=_at_least(0, integer=False, name="--qps"),
        help="client-side limit of API requests per second, as Argo Rollouts' (default 40; 0: none)",
    )
    run.add_argument(
        "--burst", type=_at_least(1, integer=True, name="--burst"), help="burst above --qps (default 80)"
    )
    run.add_argument(
        "--prometheus-address", metavar="URL", help="default Prometheus for templates without one"
    )
    _add_notification_options(run)
    run.add_argument(
        "--log-format", choices=["json", "console"], help="log lines as JSON (default) or for people"
    )
    run.add_argument(
        "--log-level",
        type=str.upper,
        choices=LOG_LEVELS,
        help="the least important lines logged (default INFO; env MESHSHIFT_LOG_LEVEL)",
    )
    run.add_argument(
        "--event-loop",
        type=str.lower,
        choices=EVENT_LOOPS,
        help="uvloop (default; asyncio's own where it is not installed) or asyncio's own "
        "(env MESHSHIFT_EVENT_LOOP)",
    )

    demo = commands.add_parser(
        "demo", help="the whole loop on this machine: real proxy, apps, traffic, metrics"
    )
    demo.add_argument(
        "--scenario",
        choices=["healthy", "bad-errors", "bad-latency", "bad-under-load"],
        default="healthy",
        help="the canary's behaviour: healthy (promoted), bad-errors or bad-latency (rolled back), "
        "bad-under-load (fails only under the users' load: blue-green's post-promotion analysis "
        "switches back)",
    )
    demo.add_argument(
        "--strategy",
        choices=["canary", "blue-green"],
        default="canary",
        help="canary: the tutorial's steps; blue-green: a preview listener, then one switch",
    )
    demo.add_argument(
        "--router",
        choices=["envoy", "nginx", "traefik"],
        default="envoy",
        help="the proxy to run (default envoy)",
    )
    demo.add_argument(
        "--judge",
        choices=["threshold", "sequential"],
        default="threshold",
        help="threshold: the tutorial's queries after a pause at each weight; sequential: the "
        "sequential judge (anytime-valid, from the first request)",
    )
    demo.add_argument(
        "--listen",
        metavar="HOST:PORT",
        default="127.0.0.1:8090",
        help="the daemon's HTTP listener (dashboard, /metrics)",
    )
    demo.add_argument(
        "--hold",
        metavar="SECONDS",
        type=_at_least(0, integer=False, name="--hold"),
        default=0.0,
        help="after the decision, keep the proxy, the dashboard and Prometheus up this long "
        "(Ctrl-C ends it sooner), to look around",
    )
    _add_notification_options(demo)

    lint = commands.add_parser("lint", help="validate Deployments, AnalysisTemplates and standalone files")
    lint.add_argument("files", nargs="+", metavar="FILE", help="YAML files (- for standard input)")
    lint.add_argument("-o", "--output", choices=["text", "json"], default="text", help=OUTPUT_HELP)

    analyze = commands.add_parser(
        "analyze",
        help="run an AnalysisTemplate now, once, or replayed over history (--from/--to)",
        description="Try an AnalysisTemplate before trusting it: its metrics measured now (or once, "
        "or replayed over the metrics store's history) with the providers, templating and phase "
        "rules of a rollout. Exit status: 0 Successful, 1 Failed, 2 Error or Inconclusive.",
    )
    _add_analyze_arguments(analyze)

    convert = commands.add_parser(
        "convert",
        help="Argo Rollouts and Flagger Canaries as meshshift's annotated Deployments",
        description="Convert Argo Rollouts (argoproj.io/v1alpha1) and Flagger Canaries "
        "(flagger.app/v1beta1) into Deployments with meshshift's annotations. The documents go to "
        "standard output; what could not be converted, or behaves differently, goes to standard error "
        "with its path. Exit status: 0 all converted, 1 something not converted (or the output does not "
        "lint clean), 2 unreadable input.",
    )
    convert.add_argument("files", nargs="+", metavar="FILE", help="YAML files holding Rollouts or Canaries")
    convert.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml", help=OUTPUT_HELP)
    convert.add_argument(
        "--router",
        choices=["istio", "nginx", "traefik", "gateway-api"],
        default="istio",
        help="the router for a rollout whose traffic routing meshshift has no router for (default istio)",
    )
    convert.add_argument(
        "--mesh-provider",
        default="istio",
        metavar="PROVIDER",
        help="Flagger's -mesh-provider flag: the provider of a Canary that names none (default istio)",
    )

    get = commands.add_parser("get", help="show a rollout, like `kubectl argo rollouts get`")
    get.add_argument("kind", choices=ROLLOUT_KINDS, help="rollout NAME, or rollouts for the list")
    get.add_argument("name", nargs="?", help="the rollout (a Deployment's name, or a standalone rollout's)")
    _add_target_options(get)
    get.add_argument("-w", "--watch", action="store_true", help="redraw on every change until Ctrl-C")
    get.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text", help=OUTPUT_HELP)

    listing = commands.add_parser(
        "list", help="list the rollouts, like `kubectl argo rollouts list rollouts`"
    )
    listing.add_argument("kind", choices=ROLLOUT_KINDS, help="what to list: rollouts")
    _add_target_options(listing)
    listing.add_argument(
        "-A", "--all-namespaces", action="store_true", help="the rollouts of every namespace"
    )
    listing.add_argument("-o", "--output", choices=["text", "json", "yaml"], default="text", help=OUTPUT_HELP)

    status = commands.add_parser(
        "status",
        help="watch a rollout until it is Healthy or Degraded, like `kubectl argo rollouts status`",
        description="Print the rollout's status (and message) each time it changes, until it is "
        "Healthy or Degraded. Exit status: 0 Healthy; 1 Degraded or InvalidSpec (or the rollout "
        "cannot be read); 3 the --timeout passed first. With --no-watch, the status now: 1 if "
        "Degraded or InvalidSpec, else 0.",
    )
    status.add_argument("name", help="the rollout")
    _add_target_options(status)
    status.add_argument(
        "-w",
        "--watch",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="watch until it is done (default; --no-watch or --watch=false: the status now)",
    )
    status.add_argument(
        "-t",
        "--timeout",
        default="0",
        metavar="DURATION",
        help="give up watching after this long (30s, 5m, 1h); 0 waits forever (default)",
    )

    for verb, help_text in [
        ("promote", "skip the current pause (--full: skip every step and analysis)"),
        ("abort", "send all traffic back to the stable"),
        ("retry", "retry an aborted rollout, or the analysis a paused rollout waits on"),
        ("undo", "back to the previous revision: the stable mid-rollout, else the one before it"),
        ("pause", "hold a rollout where it is until promote (or abort) resumes it"),
    ]:
        control = commands.add_parser(verb, help=help_text)
        control.add_argument("name", help="the rollout")
        _add_target_options(control)
        if verb == "promote":
            control.add_argument(
                "--full", action="store_true", help="skip every remaining step, pause and analysis"
            )

    setter = commands.add_parser("set", help="change a rollout's workload (Kubernetes)")
    what = setter.add_subparsers(dest="what", required=True, metavar="WHAT")
    image = what.add_parser(
        "image",
        help="set a container's image, like `kubectl argo rollouts set image`: a new revision to roll out",
    )
    image.add_argument("name", help="the rollout (its Deployment)")
    image.add_argument(
        "images",
        nargs="+",
        metavar="CONTAINER=IMAGE",
        help="the container (or * for every one) and its new image",
    )
    _add_target_options(image)

    version = commands.add_parser("version", help="print meshshift's version (and --server's)")
    version.add_argument("--short", action="store_true", help="the version number only")
    version.add_argument(
        "--server",
        metavar="HOST:PORT|URL",
        default=os.environ.get(SERVER_ENV),
        help=f"also ask this daemon its version (or {SERVER_ENV})",
    )
    return parser


OUTPUT_HELP = "output format"
ROLLOUT_KINDS = ["rollout", "rollouts", "ro"]
SERVER_ENV = "MESHSHIFT_SERVER"


def _add_analyze_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML files holding the templates")
    parser.add_argument(
        "--template",
        "-t",
        action="append",
        metavar="NAME",
        help="the AnalysisTemplate to run (repeat for several, as a step's analysis lists them; "
        "default: the only one in FILE)",
    )
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an arg of the template (or $MESHSHIFT_ARG_<NAME>)",
    )
    parser.add_argument("--once", action="store_true", help="one measurement of each metric, now")
    parser.add_argument(
        "--duration",
        metavar="DURATION",
        help="stop the run after this long (a metric with an interval and no count runs until then); "
        "with --every, the length of each replay (default: the --every interval)",
    )
    parser.add_argument("--from", dest="start", metavar="TIME", help="backtest: replay from TIME")
    parser.add_argument("--to", dest="end", metavar="TIME", help="backtest: until TIME (default: now)")
    parser.add_argument("--every", metavar="DURATION", help="backtest: start a replay every DURATION")
    parser.add_argument(
        "--incident",
        action="append",
        default=[],
        metavar="START..END",
        help="backtest: a period that was an incident (the rest of the range is taken as healthy)",
    )
    parser.add_argument("--plot", metavar="FILE.png|svg", help="backtest: draw the metrics and verdicts")
    parser.add_argument(
        "--prometheus-address",
        metavar="URL",
        help="query this Prometheus instead of the templates' addresses (a port-forward, say)",
    )
    parser.add_argument(
        "--mesh",
        choices=BUILTIN_MESHES,
        help="make the builtin templates (request-success-rate, request-duration...) of this mesh available",
    )
    parser.add_argument("-n", "--namespace", help="the namespace arg builtins and templates are given")
    parser.add_argument("-o", "--output", choices=["text", "json"], default="text", help=OUTPUT_HELP)


def _add_notification_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--slack-webhook-url",
        metavar="URL",
        help="Slack incoming webhook for rollout events (or MESHSHIFT_SLACK_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--webhook-url",
        metavar="URL",
        help="generic JSON webhook for rollout events (or MESHSHIFT_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--pagerduty-routing-key",
        metavar="KEY",
        help="PagerDuty Events API v2 routing key: incidents on aborts and failed analyses, resolved "
        "once healthy (prefer MESHSHIFT_PAGERDUTY_ROUTING_KEY: a flag shows in the process list; "
        "MESHSHIFT_PAGERDUTY_EVENTS_URL sets another endpoint)",
    )


def notification_settings(args: argparse.Namespace) -> NotificationSettings:
    """The environment's notification settings, with the flags given winning."""
    return NotificationSettings.from_env(
        slack_webhook_url=args.slack_webhook_url,
        webhook_url=args.webhook_url,
        pagerduty_routing_key=args.pagerduty_routing_key,
    )


def _at_least(minimum: float, *, integer: bool, name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            return bounded_number(name, text, minimum, integer=integer)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    return parse


def _add_target_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="the rollout's namespace (default: the context's, or found by name)",
    )
    parser.add_argument(
        "--kubeconfig", metavar="PATH", help="the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)"
    )
    parser.add_argument("--context", metavar="NAME", help="the kubeconfig context (default: its current one)")
    parser.add_argument(
        "--server",
        metavar="HOST:PORT|URL",
        default=os.environ.get(SERVER_ENV) or None,
        help=f"a meshshift daemon's HTTP API (standalone or demo) instead of Kubernetes (or {SERVER_ENV})",
    )
    parser.add_argument("--token", help="bearer token for --server's control endpoints (or MESHSHIFT_TOKEN)")


def daemon_settings(args: argparse.Namespace) -> DaemonSettings:
    notifications = notification_settings(args)
    return DaemonSettings.from_env(
        config=args.config,
        kubeconfig=args.kubeconfig,
        context=args.context,
        namespace=args.namespace,
        selector=args.selector,
        listen=args.listen,
        token=args.token,
        allowed_hosts=tuple(h.strip() for h in args.allowed_hosts.split(",") if h.strip())
        if args.allowed_hosts
        else None,
        leader_elect=args.leader_elect,
        shards=args.shards,
        qps=args.qps,
        burst=args.burst,
        prometheus_address=args.prometheus_address,
        notifications=notifications,
        log_format=args.log_format,
        log_level=args.log_level,
        event_loop=args.event_loop,
    )


def _boolean_flags(argv: Sequence[str]) -> list[str]:
    """`--watch=false` (kubectl-argo-rollouts' spelling) as `--no-watch`, `--watch=true` as `--watch`."""
    spelled = {"--watch=false": "--no-watch", "-w=false": "--no-watch", "--watch=true": "--watch"}
    return [spelled.get(item.lower(), item) if item.lower() in spelled else item for item in argv]


# Options whose value may be a time offset from now ("-2h"), which argparse takes for an option.
_TIME_OPTIONS = ("--from", "--to", "--incident")


def _join_time_offsets(argv: Sequence[str]) -> list[str]:
    """`--from -2h` as `--from=-2h`, so a time written as an offset from now reads as one."""
    joined: list[str] = []
    items = list(argv)
    index = 0
    while index < len(items):
        item = items[index]
        following = items[index + 1] if index + 1 < len(items) else ""
        if item in _TIME_OPTIONS and following.startswith("-") and following[1:2].isdigit():
            joined.append(f"{item}={following}")
            index += 2
            continue
        joined.append(item)
        index += 1
    return joined


EXIT_INTERNAL_ERROR = 70  # EX_SOFTWARE: a bug in meshshift, never "findings" (1) or usage (2)
EXIT_IO_ERROR = 74  # EX_IOERR: the output could not be written (a full disk, a closed pipe)
TRACEBACK_ENV = "MESHSHIFT_TRACEBACK"


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; an unexpected error is one line on stderr and exit 70, never a traceback."""
    try:
        code = _main(argv)
        sys.stdout.flush()  # output that cannot be written is an error, not a silent success
        return code
    except KeyboardInterrupt:
        return 130
    except OSError as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        with contextlib.suppress(OSError):
            print(f"meshshift: {error.strerror or error}", file=sys.stderr)
        _silence_stdout()  # the interpreter's own flush at exit must not print a traceback either
        return EXIT_IO_ERROR
    except Exception as error:
        if os.environ.get(TRACEBACK_ENV):
            raise
        message = " ".join(str(error).split())[:500]
        print(
            f"meshshift: internal error: {type(error).__name__}: {message}\n"
            f"(a bug in meshshift; {TRACEBACK_ENV}=1 shows the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL_ERROR


def _silence_stdout() -> None:
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    given = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(_boolean_flags(_join_time_offsets(given)))
    if getattr(args, "listen", None):
        try:
            split_host_port(args.listen)
        except ValueError as error:
            parser.error(f"--listen: {error}")
    if args.command == "lint":
        from meshshift.cli.lint import run_lint

        return run_lint(args.files, args.output)
    if args.command == "run":
        try:
            settings = daemon_settings(args)
        except ValueError as error:  # a MESHSHIFT_* variable that cannot be read: it is named
            raise SystemExit(f"meshshift: {error}") from None
        configure_logging("json" if settings.log_format == "json" else "console", settings.log_level)
        from meshshift.runtime.lifecycle import run_daemon

        if settings.config:
            from meshshift.standalone.daemon import run_standalone

            run_daemon(run_standalone(settings), settings.event_loop)
        else:
            from kubernetes_asyncio.config.config_exception import ConfigException

            from meshshift.kube.operator import run_operator

            try:
                run_daemon(run_operator(settings), settings.event_loop)
            except ConfigException as error:
                print(f"meshshift: no Kubernetes configuration ({error})", file=sys.stderr)
                return 1
        return 0
    configure_logging("console", "WARNING")
    if args.command == "convert":
        from meshshift.cli.convert import run_convert

        return run_convert(
            args.files, output=args.output, router=args.router, mesh_provider=args.mesh_provider
        )
    if args.command == "analyze":
        from meshshift.cli.analyze import run_analyze

        return run_analyze(args)
    if args.command == "demo":
        from meshshift.demo.runner import run_demo

        return asyncio.run(
            run_demo(
                scenario=args.scenario,
                router=args.router,
                listen=args.listen,
                judge=args.judge,
                notifications=notification_settings(args),
                strategy=args.strategy,
                hold=args.hold,
            )
        )
    if args.command == "version":
        from meshshift.cli.rollouts import print_version

        return print_version(args)
    if args.command in ("get", "list"):
        from meshshift.cli.rollouts import get_rollout

        return get_rollout(args)
    if args.command == "status":
        from meshshift.cli.rollouts import rollout_status

        return rollout_status(args)
    if args.command == "set":
        from meshshift.cli.rollouts import set_image

        return set_image(args)
    from meshshift.cli.rollouts import control_rollout

    return control_rollout(args)


if __name__ == "__main__":
    sys.exit(main())
