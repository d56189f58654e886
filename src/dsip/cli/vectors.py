"""``dsip vectors run DIR``: run the conformance vectors and print a per-category table."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from dsip.conformance import run_directory


def register(sub: Any) -> None:
    p = sub.add_parser(
        "vectors", help="conformance vectors", description="Run DSIP conformance vectors."
    )
    vsub = p.add_subparsers(dest="vectors_command", metavar="SUBCOMMAND")
    vsub.required = True
    run = vsub.add_parser(
        "run",
        help="run every vector under DIR",
        description=(
            "Run every vector file under DIR (a directory holding fixtures.json). Prints a "
            "per-category table and ends with 'N passed, N failed, N skipped'. Kinds not "
            "implemented yet are skipped, never passed. Exit status 1 if anything failed."
        ),
    )
    run.add_argument("directory", type=Path, metavar="DIR")
    run.add_argument(
        "--only", default="", metavar="CAT,...", help="comma-separated categories to run"
    )
    run.add_argument("--json", action="store_true", help="machine-readable report on stdout")
    run.add_argument(
        "--failures", action="store_true", help="list each failing vector with its detail"
    )
    run.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    only = {c.strip() for c in args.only.split(",") if c.strip()} or None
    try:
        report = run_directory(args.directory, only)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_json(), indent=2))
        return 0 if report.ok else 1
    console = Console()
    table = Table(title=f"DSIP conformance vectors: {args.directory}")
    table.add_column("category")
    for col in ("passed", "failed", "skipped"):
        table.add_column(col, justify="right")
    table.add_column("note")
    for cat, row in report.by_category().items():
        notes = {o.detail for o in report.outcomes if o.category == cat and o.status == "skipped"}
        table.add_row(
            cat,
            str(row["passed"]),
            str(row["failed"]),
            str(row["skipped"]),
            "; ".join(sorted(notes)),
        )
    console.print(table)
    failed = [o for o in report.outcomes if o.status == "failed"]
    for o in failed if (args.failures or len(failed) <= 20) else failed[:20]:
        console.print(f"[red]FAIL[/red] {o.vector}: {o.detail}", markup=True, highlight=False)
    print(report.summary_line())
    return 0 if report.ok else 1
