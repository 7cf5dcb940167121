"""Compare two ``--durations-json`` files: the slowest tests and files, side by side.

    python -m pytest -q --durations-json=durations/new.json
    python -m tests.durations durations/old.json durations/new.json [--top 10]

With one file it lists that run's slowest tests and files.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def load(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text())
    if "tests" not in data:
        raise SystemExit(f"{path} is not a --durations-json file (no 'tests' key)")
    return data


def _row(name: str, *seconds: float | None) -> str:
    cells = "".join(f"{s:9.1f}" if s is not None else f"{'-':>9}" for s in seconds)
    return f"{cells}  {name}"


def _seconds(run: dict[str, Any], key: str, name: str) -> float | None:
    value = run[key].get(name)
    return value["total"] if isinstance(value, dict) else value


def _slowest(run: dict[str, Any], key: str, top: int) -> list[str]:
    return sorted(run[key], key=lambda name: -(_seconds(run, key, name) or 0.0))[:top]


def report(runs: list[dict[str, Any]], top: int) -> list[str]:
    """Lines: run totals, then the slowest ``top`` tests and files of the first and last run."""
    lines = ["    " + "   ".join(f"run {i + 1}" for i in range(len(runs)))]
    lines.append(_row("wall seconds", *(r["wall-seconds"] for r in runs)))
    lines.append(_row("summed test seconds", *(r["test-seconds"] for r in runs)))
    lines.append(_row("tests", *(float(len(r["tests"])) for r in runs)))
    ranked_by = [("first", runs[0])] + ([("last", runs[-1])] if len(runs) > 1 else [])
    for key in ("tests", "files"):
        for which, ranking in ranked_by:
            lines.append(f"\nslowest {key} of the {which} run (seconds in each run)")
            for name in _slowest(ranking, key, top):
                lines.append(_row(name, *(_seconds(r, key, name) for r in runs)))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--durations-json files, oldest first")
    parser.add_argument("--top", type=int, default=10, help="how many tests and files to list")
    args = parser.parse_args(argv)
    print("\n".join(report([load(p) for p in args.runs], args.top)))


if __name__ == "__main__":
    main()
