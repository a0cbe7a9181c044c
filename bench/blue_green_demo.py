"""The blue-green demo's figures: each scenario run a few times on Envoy and NGINX, as a user runs it.

Run: .venv/bin/python bench/blue_green_demo.py [--runs 3] [--router envoy] [--scenario bad-under-load]

Prints, per router and scenario, the outcome of each run and the range over the runs of the
time from the first preview request to the decision, the failed user requests, and (after a
post-promotion failure) the time from the failed measurement to the users' first request back
on the stable, as the demo's own summary measures them on real traffic.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

from meshshift.processes import free_port

MESHSHIFT = str(Path(sys.executable).parent / "meshshift")
SCENARIOS = ("healthy", "bad-errors", "bad-latency", "bad-under-load")
FIGURES = {
    "decision": re.compile(r"time to decision:\s+([\d.]+) s"),
    "failed users": re.compile(r"failed user requests: (\d+)"),
    "switch back": re.compile(r"switch back:\s+(\d+) ms"),
}


def run_once(router: str, scenario: str) -> tuple[int, dict[str, float]]:
    argv = [MESHSHIFT, "demo", "--strategy", "blue-green", "--scenario", scenario, "--router", router]
    argv += ["--listen", f"127.0.0.1:{free_port()}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    found = {}
    for name, pattern in FIGURES.items():
        match = pattern.search(done.stdout)
        if match:
            found[name] = float(match.group(1))
    return done.returncode, found


def shown(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    low, high = (f"{v:.1f}" if unit == "s" else f"{v:g}" for v in (min(values), max(values)))
    return f"{low}{unit}" if low == high else f"{low}-{high}{unit}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--router", choices=["envoy", "nginx"], action="append")
    parser.add_argument("--scenario", choices=SCENARIOS, action="append")
    args = parser.parse_args()
    failures = 0
    for router in args.router or ["envoy", "nginx"]:
        for scenario in args.scenario or SCENARIOS:
            results = [run_once(router, scenario) for _ in range(args.runs)]
            codes = [code for code, _ in results]
            failures += sum(1 for code in codes if code != 0)
            figures = {name: [f[name] for _, f in results if name in f] for name in FIGURES}
            print(
                f"{router:<6} {scenario:<15} exit {codes}  decision {shown(figures['decision'], 's')}  "
                f"failed users {shown(figures['failed users'], '')}  "
                f"switch back {shown(figures['switch back'], ' ms')}",
                flush=True,
            )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
