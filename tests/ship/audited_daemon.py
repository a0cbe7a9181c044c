"""The daemon in its own process, reporting each attempt to write a file.

`python -m tests.ship.audited_daemon REPORT KUBECONFIG NAMESPACE IDENTITY`. A Python
audit hook, installed before anything else runs, appends one line to REPORT for each
file opened for writing and each filesystem change (mkdir, rename, remove...), then
tests.kube.daemon_process runs the daemon. The first line is a deliberate write-mode
open of os.devnull, so a report without it means the hook was never armed.
"""

from __future__ import annotations

import os
import sys
from typing import Any

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
CHANGES = frozenset(
    {
        "os.mkdir",
        "os.rename",
        "os.remove",
        "os.rmdir",
        "os.symlink",
        "os.link",
        "os.truncate",
        "os.chmod",
        "os.chown",
        "os.utime",
        "shutil.copyfile",
        "shutil.rmtree",
    }
)


def main(argv: list[str]) -> None:
    report_path, *daemon_args = argv
    report = open(report_path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - open for the process's life

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event == "open" and isinstance(args[2], int) and args[2] & WRITE_FLAGS:
            report.write(f"open {args[0]!r} mode={args[1]!r}\n")
        elif event in CHANGES:
            report.write(f"{event} {args!r}\n")

    sys.addaudithook(hook)
    os.close(os.open(os.devnull, os.O_WRONLY))  # the marker line
    from tests.kube.daemon_process import main as run_daemon

    run_daemon(daemon_args)


if __name__ == "__main__":
    main(sys.argv[1:])
