"""Copying an upstream project's documents out of its bare git clone (the extract_* scripts)."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path

BLOCK = re.compile(r"^([ \t]*)```ya?ml[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


def git(repo: str, *args: str) -> str:
    done = subprocess.run(["git", "--git-dir", repo, *args], capture_output=True, text=True, check=True)
    return done.stdout


def pasteable(block: str) -> str:
    """A docs block as a reader pastes it: dedented, without the lines that are only `...`."""
    lines = [line for line in textwrap.dedent(block).splitlines() if line.strip() != "..."]
    return "\n".join(lines).rstrip() + "\n"


def yaml_blocks(page: str, text: str, kinds: re.Pattern[str]) -> Iterator[tuple[int, str, str]]:
    """Each ```yaml block of the Markdown `text` (of the file `page`) that `kinds` finds in: its
    position among the page's yaml blocks, its file name (`<page without .md>.blockNN.yaml`)
    and its pasteable text."""
    for number, match in enumerate(BLOCK.finditer(text)):
        if kinds.search(match.group(2)):
            yield number, f"{page[:-3]}.block{number:02d}.yaml", pasteable(match.group(2))


def write(target: Path, text: str) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
