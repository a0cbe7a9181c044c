"""`meshshift lint FILE... [-o json]`: check rollout specs before they reach a cluster.

Every YAML document of every FILE is checked (see meshshift.spec.documents for the
kinds); templates defined in one file may be used by rollouts in another. FILE `-`
reads standard input.

Text output, one line per finding:

    FILE:DOCUMENT:PATH: REASON
    FILE:DOCUMENT:PATH: warning: REASON

DOCUMENT is the 0-based index of the YAML document in the file (as `yq`'s
document_index), `-` for a finding about the whole file; PATH uses the user's field
names (`spec.strategy.canary.steps[3].setWeight`) and is empty for the whole document.
A count of errors and warnings goes to standard error.

`-o json` prints a JSON list of {file, document, path, reason, severity, line}; `line`
is the 1-based line of the path (or of its closest ancestor), null when unknown.

Exit status: 0 without errors (warnings allowed), 1 with errors, 2 on usage errors; 70 on
an internal error (a bug in meshshift: one line on standard error, never a traceback).
Input past meshshift's bounds (size, aliases, depth: meshshift.spec.bounds) is an error
finding naming the bound, found before anything is expanded.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TextIO

from meshshift.spec.documents import DocumentFinding, check_sources

OutputFormat = Literal["text", "json"]
DESCRIPTION = "Check rollout specs, AnalysisTemplates and standalone files."


def run_lint(
    paths: Sequence[str],
    output: OutputFormat = "text",
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Lint `paths`, print the findings; 0 when there are no errors, 1 otherwise."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    sources, unreadable = _read_sources(paths)
    findings = unreadable + check_sources(sources)
    if output == "json":
        json.dump([finding.as_json() for finding in findings], out, indent=2)
        out.write("\n")
    else:
        for finding in findings:
            out.write(f"{finding}\n")
    errors = sum(finding.severity == "error" for finding in findings)
    warnings = len(findings) - errors
    err.write(
        f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')} in {_plural(len(paths), 'file')}\n"
    )
    return 1 if errors else 0


def _read_sources(paths: Sequence[str]) -> tuple[list[tuple[str, str]], list[DocumentFinding]]:
    sources: list[tuple[str, str]] = []
    problems: list[DocumentFinding] = []
    for path in paths:
        try:
            if path == "-" and sys.stdin is None:
                raise OSError("standard input is closed")
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            problems.append(DocumentFinding(path, None, "", "cannot read: not UTF-8 text"))
        except OSError as error:
            problems.append(DocumentFinding(path, None, "", f"cannot read: {error.strerror or error}"))
        else:
            sources.append((path, text))
    return sources, problems


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The `lint` arguments; the CLI passes its subparser to share them."""
    parser = parser or argparse.ArgumentParser(prog="meshshift lint", description=DESCRIPTION)
    parser.add_argument("files", nargs="+", metavar="FILE", help="YAML files to check (- for stdin)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text", help="output format")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    output: OutputFormat = "json" if args.output == "json" else "text"
    return run_lint(args.files, output)


if __name__ == "__main__":
    sys.exit(main())
