"""Copy Flagger's own documents into tests/data/flagger/ (run by hand, not by pytest).

    python -m tests.data.flagger.extract_flagger /path/to/flagger.git   # from the repository root

From `docs/gitbook/**/*.md`, each ```yaml block holding a Canary, a MetricTemplate or an
AlertProvider is copied as its own file, `<doc path without .md>.blockNN.yaml` (NN: the block's
position among the page's yaml blocks, from 0), dedented and without the lines that are only `...`
(the docs' elisions). The files of `kustomize/podinfo/` (the tutorials' Deployment and HPA) and
`artifacts/examples/` are copied byte for byte. Nothing else is changed. The list of sources in
README.md (after its `<!-- sources -->` marker) is rewritten with each file's source and the commit.
No Go code of Flagger is copied or run.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.support.upstream_docs import git, write, yaml_blocks

KINDS = re.compile(r"^\s*kind:\s*(Canary|MetricTemplate|AlertProvider)\s*$", re.M)
HERE = Path(__file__).parent
COPIED = re.compile(r"^(kustomize/podinfo|artifacts/examples)/.*\.ya?ml$")


def main(repo: str) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    sources: list[str] = []
    for name in git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines():
        if COPIED.match(name):
            write(HERE / name, git(repo, "show", f"HEAD:{name}"))
            sources.append(f"| `{name}` | `{name}` |")
        elif re.match(r"^docs/gitbook/.*\.md$", name):
            text = git(repo, "show", f"HEAD:{name}")
            for number, target_name, block in yaml_blocks(name, text, KINDS):
                write(HERE / target_name, block)
                sources.append(f"| `{target_name}` | `{name}`, yaml block {number} |")
    readme = HERE / "README.md"
    before, _, _ = readme.read_text().partition("<!-- sources -->")
    table = "\n".join(["| copied file | source |", "|---|---|", *sources])
    readme.write_text(f"{before}<!-- sources -->\nCommit `{commit}`.\n\n{table}\n")


if __name__ == "__main__":
    main(sys.argv[1])
