"""Copy Argo Rollouts' own documents into tests/conformance/argo/ (run by hand, not by pytest).

    python -m tests.conformance.extract_argo /path/to/argo-rollouts.git   # from the repository root

Every file of `examples/` and `test/e2e/` holding a Rollout, an AnalysisTemplate or a
ClusterAnalysisTemplate is copied byte for byte. From `docs/**/*.md` each ```yaml block
holding one of those kinds is copied as its own file, made pasteable the way a reader
would: the block is dedented (blocks inside list items are indented) and lines that are
only `...` (the docs' elisions) are dropped. Nothing else is changed. The list of
sources in README.md (between its `<!-- sources -->` markers) is rewritten: each copied
file with its source path (and block number) at the commit.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from tests.support.upstream_docs import git, write, yaml_blocks

KINDS = re.compile(r"^\s*kind:\s*(Rollout|AnalysisTemplate|ClusterAnalysisTemplate)\s*$", re.M)
HERE = Path(__file__).parent / "argo"


def main(repo: str) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    sources: list[str] = []
    for name in names:
        if re.match(r"^(examples|test/e2e)/.*\.ya?ml$", name):
            text = git(repo, "show", f"HEAD:{name}")
            if KINDS.search(text):
                write(HERE / name, text)
                sources.append(f"| `argo/{name}` | `{name}` |")
        elif re.match(r"^docs/.*\.md$", name):
            text = git(repo, "show", f"HEAD:{name}")
            for number, target_name, block in yaml_blocks(name, text, KINDS):
                write(HERE / target_name, block)
                sources.append(f"| `argo/{target_name}` | `{name}`, yaml block {number} |")
    readme = HERE.parent / "README.md"
    before, _, rest = readme.read_text().partition("<!-- sources -->")
    _, _, after = rest.partition("<!-- /sources -->")
    table = "\n".join([f"Commit `{commit}`.", "", "| copied file | source |", "|---|---|", *sources])
    readme.write_text(f"{before}<!-- sources -->\n{table}\n<!-- /sources -->{after}")
    print(f"{len(sources)} files from {commit}")


if __name__ == "__main__":
    main(sys.argv[1])
