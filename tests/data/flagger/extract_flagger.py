"""Copy Flagger's own documents into tests/data/flagger/ (run by hand, not by pytest).

    python tests/data/flagger/extract_flagger.py /path/to/flagger.git

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
import subprocess
import sys
import textwrap
from pathlib import Path

KINDS = re.compile(r"^\s*kind:\s*(Canary|MetricTemplate|AlertProvider)\s*$", re.M)
BLOCK = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
HERE = Path(__file__).parent
COPIED = re.compile(r"^(kustomize/podinfo|artifacts/examples)/.*\.ya?ml$")


def git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True)
    return done.stdout


def pasteable(block: str) -> str:
    lines = [line for line in textwrap.dedent(block).splitlines() if line.strip() != "..."]
    return "\n".join(lines).rstrip() + "\n"


def main(repo: str) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    sources: list[str] = []
    for name in git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines():
        if COPIED.match(name):
            target = HERE / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(git(repo, "show", f"HEAD:{name}"))
            sources.append(f"| `{name}` | `{name}` |")
        elif re.match(r"^docs/gitbook/.*\.md$", name):
            text = git(repo, "show", f"HEAD:{name}")
            for number, match in enumerate(BLOCK.finditer(text)):
                if not KINDS.search(match.group(2)):
                    continue
                target_name = f"{name[:-3]}.block{number:02d}.yaml"
                target = HERE / target_name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(pasteable(match.group(2)))
                sources.append(f"| `{target_name}` | `{name}`, yaml block {number} |")
    readme = HERE / "README.md"
    before, _, _ = readme.read_text().partition("<!-- sources -->")
    table = "\n".join(["| copied file | source |", "|---|---|", *sources])
    readme.write_text(f"{before}<!-- sources -->\nCommit `{commit}`.\n\n{table}\n")


if __name__ == "__main__":
    main(sys.argv[1])
