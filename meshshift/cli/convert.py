"""`meshshift convert FILE... [-o yaml|json] [--router NAME]`: Argo Rollouts and Flagger Canaries as
meshshift's annotated Deployments (meshshift.spec.convert).

The converted documents go to standard output (every document of the files, in order: the
Rollouts and Canaries replaced, the rest kept), ready for `kubectl apply -f -`; the notes go to
standard error, one a line: `FILE:DOCUMENT:PATH: KIND: REASON`, KIND being `not-converted` (the
field's behaviour is lost), `changed` (carried over, behaving differently, said how) or `assumed`
(a value meshshift had to choose). The output is then checked as `meshshift lint` checks it.

Exit status: 0 when everything converted (notes of kind changed or assumed only) and the output
lints clean; 1 when a field could not be converted, the output has lint errors (an AnalysisTemplate
it names is in none of the files, say) or a file is invalid YAML past some document (the documents
before it are converted); 2 when a file cannot be read or holds nothing to convert.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from meshshift.spec.convert import convert_sources


def run_convert(
    paths: Sequence[str],
    *,
    output: str = "yaml",
    router: str = "istio",
    mesh_provider: str = "istio",
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    sources = []
    for path in paths:
        try:
            sources.append(
                (path, sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8"))
            )
        except (OSError, UnicodeDecodeError) as error:
            err.write(f"meshshift convert: cannot read {path}: {getattr(error, 'strerror', None) or error}\n")
            return 2
    conversion = convert_sources(sources, router=router, mesh_provider=mesh_provider)
    for problem in conversion.problems:
        err.write(f"{problem} (the documents after it are not read)\n")
    if not conversion.converted:
        err.write("meshshift convert: no Argo Rollout or Flagger Canary in the files\n")
        return 2
    if output == "json":
        items = [document.data for document in conversion.documents]
        json.dump({"apiVersion": "v1", "kind": "List", "items": items}, out, indent=2)
        out.write("\n")
    else:
        out.write(conversion.yaml)
    for note in conversion.notes:
        err.write(f"{note}\n")
    for finding in conversion.lint:
        kept = " (a document kept as it was)" if finding in conversion.kept_lint_errors else ""
        err.write(f"lint of the output{kept}: {finding}\n")
    lost = sum(note.kind == "not-converted" for note in conversion.notes)
    err.write(
        f"{conversion.converted} converted; {lost} not converted, "
        f"{sum(note.kind == 'changed' for note in conversion.notes)} changed, "
        f"{sum(note.kind == 'assumed' for note in conversion.notes)} assumed; "
        f"the converted documents have {len(conversion.lint_errors)} lint errors"
        + (
            f", those kept as they were {len(conversion.kept_lint_errors)}"
            if conversion.kept_lint_errors
            else ""
        )
        + "\n"
    )
    return 1 if lost or conversion.lint_errors or conversion.problems else 0
