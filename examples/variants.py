"""The protected variants of an example app: each is the plain app plus one small patch.

    python examples/variants.py count                   # lines each variant adds, per file
    python examples/variants.py apply ckks /tmp/ckks    # the plain app + the CKKS patch, ready
    flwr run /tmp/ckks --stream                         #   for `flwr run`
    python examples/variants.py --app sklearn_logreg count   # the scikit-learn example's

A variant is ``<app>/variants/<name>.patch``, a unified diff against the plain app,
so the lines a protection adds are exactly the patch's ``+`` lines (``git apply``
checks that it still applies to the plain app).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_APP = HERE / "quickstart"
_SKIP = shutil.ignore_patterns("variants", "outputs", "__pycache__", "*.pyc", "final_model.*")


def patches(app_dir: Path = DEFAULT_APP) -> dict[str, Path]:
    """Variant name -> its patch file, in name order."""
    return {p.stem: p for p in sorted((app_dir.resolve() / "variants").glob("*.patch"))}


def count(patch: Path) -> dict[str, tuple[int, int]]:
    """Lines added and removed per file of a unified diff."""
    per_file: dict[str, tuple[int, int]] = {}
    name = ""
    for line in patch.read_text().splitlines():
        if line.startswith("+++ "):
            name = line[4:].removeprefix("b/")
            per_file[name] = (0, 0)
        elif line.startswith("--- "):
            continue
        elif line.startswith("+"):
            added, removed = per_file[name]
            per_file[name] = (added + 1, removed)
        elif line.startswith("-"):
            added, removed = per_file[name]
            per_file[name] = (added, removed + 1)
    return per_file


def apply(variant: str, dest: Path, app_dir: Path = DEFAULT_APP) -> Path:
    """Copy the plain app to ``dest`` and apply the variant's patch; returns ``dest``."""
    known = patches(app_dir)
    if variant not in known:
        raise SystemExit(f"unknown variant {variant!r}; known: {', '.join(known)}")
    if dest.exists():
        raise SystemExit(f"{dest} exists; give a new directory")
    shutil.copytree(app_dir, dest, ignore=_SKIP)
    subprocess.run(["git", "apply", str(known[variant])], cwd=dest, check=True)
    return dest


def table(app_dir: Path = DEFAULT_APP) -> str:
    """A Markdown table of the lines each variant adds (and replaces), per file."""
    rows = ["| variant | lines added | of which | lines removed |", "|---|---|---|---|"]
    for name, patch in patches(app_dir).items():
        per_file = count(patch)
        added = sum(a for a, _ in per_file.values())
        removed = sum(r for _, r in per_file.values())
        where = ", ".join(f"{f} {a}" for f, (a, _) in per_file.items() if a)
        rows.append(f"| {name} | **{added}** | {where} | {removed} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--app", default=DEFAULT_APP.name,
                        help="the example under examples/ (default: %(default)s)")  # fmt: skip
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("count", help="print the lines each variant adds")
    p_apply = sub.add_parser("apply", help="write the plain app plus one variant's patch")
    p_apply.add_argument("variant")
    p_apply.add_argument("dest", type=Path)
    args = parser.parse_args()
    app_dir = HERE / args.app
    if not (app_dir / "variants").is_dir():
        known = sorted(p.parent.name for p in HERE.glob("*/variants"))
        raise SystemExit(f"no example {args.app!r} under {HERE}; known: {', '.join(known)}")
    if args.command == "count":
        print(table(app_dir))
    else:
        print(f"wrote {apply(args.variant, args.dest, app_dir)}")


if __name__ == "__main__":
    main()
