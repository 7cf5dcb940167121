"""MkDocs hook: the run-config reference is built from the guides' own key tables.

Each guide documents its keys next to what they do (`| key | default | allowed | meaning |`);
`reference/run-config.md` holds the marker below, replaced at build time by every such
row of every page, with a link to the guide. One source, so the reference cannot drift
from the guides; `tests/test_docs.py` checks the same rows against pyproject.toml.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent
MARKER = "<!-- run-config-table -->"
HEADER = "| key | default | allowed | meaning |"
REFERENCE = "reference/run-config.md"


def key_rows(docs: Path = DOCS) -> list[tuple[str, list[str], str]]:
    """Every row of every key table in the docs: (page, keys in its first cell, the row)."""
    rows = []
    for page in sorted(docs.rglob("*.md")):
        rel = page.relative_to(docs).as_posix()
        if rel == REFERENCE:
            continue
        in_table = False
        for line in page.read_text().splitlines():
            if line.strip() == HEADER:
                in_table = True
                continue
            if in_table and line.startswith("|---"):
                continue
            if in_table and line.startswith("| `"):
                first = line.split("|")[1]
                rows.append((rel, re.findall(r"`([a-z][\w.-]*)`", first), line))
                continue
            in_table = False
    return rows


def _relink(row: str, page: str) -> str:
    """Links in a row copied from ``page``, made relative to the reference page."""
    folder = page.rsplit("/", 1)[0] + "/" if "/" in page else ""

    def fix(m: re.Match[str]) -> str:
        target = m.group(1)
        if target.startswith(("http:", "https:")):
            return m.group(0)
        if target.startswith("#"):
            return f"](../{page}{target})"
        return f"](../{folder}{target})"

    return re.sub(r"\]\(([^)]+)\)", fix, row)


def run_config_table(docs: Path = DOCS) -> str:
    out = ["| key | default | allowed | meaning | guide |", "|---|---|---|---|---|"]
    for page, _, row in sorted(key_rows(docs), key=lambda r: r[1][0]):
        title = page.removesuffix(".md").replace("/index", "")
        out.append(f"{_relink(row, page).rstrip()} [{title}](../{page}) |")
    return "\n".join(out)


CLI_MARKER = re.compile(r"<!-- cli-help: ([\w.]+) -->")


def cli_help(module: str) -> str:
    """``python -m module --help`` and each subcommand's, as fenced blocks."""

    def run(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", module, *args, "--help"],
            capture_output=True, text=True, cwd=DOCS.parent, timeout=120,
        )  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"python -m {module} {' '.join(args)} --help failed: {done.stderr}")
        return done.stdout.rstrip()

    top = run()
    blocks = [f"```text\n$ python -m {module} --help\n{top}\n```"]
    found = re.search(r" \{([\w,-]+)\} \.\.\.", top.split("\n\n")[0])  # argparse subcommands
    for sub in found.group(1).split(",") if found else []:
        blocks.append(f"```text\n$ python -m {module} {sub} --help\n{run(sub)}\n```")
    return "\n\n".join(blocks)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    if page.file.src_uri == REFERENCE:
        markdown = markdown.replace(MARKER, run_config_table())
    return CLI_MARKER.sub(lambda m: cli_help(m.group(1)), markdown)
