"""Copy Argo Rollouts' own documents into tests/conformance/argo/ (run by hand, not by pytest).

    python tests/conformance/extract_argo.py /path/to/argo-rollouts.git

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
import subprocess
import sys
import textwrap
from pathlib import Path

KINDS = re.compile(r"^\s*kind:\s*(Rollout|AnalysisTemplate|ClusterAnalysisTemplate)\s*$", re.M)
BLOCK = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
HERE = Path(__file__).parent / "argo"


def git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True)
    return done.stdout


def pasteable(block: str) -> str:
    lines = [line for line in textwrap.dedent(block).splitlines() if line.strip() != "..."]
    return "\n".join(lines).rstrip() + "\n"


def main(repo: str) -> None:
    commit = git(repo, "rev-parse", "HEAD").strip()
    names = git(repo, "ls-tree", "-r", "--name-only", "HEAD").splitlines()
    sources: list[str] = []
    for name in names:
        if re.match(r"^(examples|test/e2e)/.*\.ya?ml$", name):
            text = git(repo, "show", f"HEAD:{name}")
            if KINDS.search(text):
                target = HERE / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(text)
                sources.append(f"| `argo/{name}` | `{name}` |")
        elif re.match(r"^docs/.*\.md$", name):
            text = git(repo, "show", f"HEAD:{name}")
            for number, match in enumerate(BLOCK.finditer(text)):
                if not KINDS.search(match.group(2)):
                    continue
                target_name = f"{name[:-3]}.block{number:02d}.yaml"
                target = HERE / target_name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(pasteable(match.group(2)))
                sources.append(f"| `argo/{target_name}` | `{name}`, yaml block {number} |")
    readme = HERE.parent / "README.md"
    before, _, rest = readme.read_text().partition("<!-- sources -->")
    _, _, after = rest.partition("<!-- /sources -->")
    table = "\n".join([f"Commit `{commit}`.", "", "| copied file | source |", "|---|---|", *sources])
    readme.write_text(f"{before}<!-- sources -->\n{table}\n<!-- /sources -->{after}")
    print(f"{len(sources)} files from {commit}")


if __name__ == "__main__":
    main(sys.argv[1])
