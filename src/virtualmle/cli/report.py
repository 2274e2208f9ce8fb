"""`virtualmle report`: an HTML page with plots and the trial table of Optuna studies."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` command."""
    p = subparsers.add_parser(
        "report",
        help="write an HTML report (plots + trial table) for studies in an Optuna storage",
        description=(
            "Write DIR/index.html with PNG plots: best validation metric against trials and\n"
            "against compute seconds, per-parameter effects, and the trial table with outcomes,\n"
            "errors and the method's notes (the agent's hypothesis and verdict). With several\n"
            "studies, overlay plots compare them. Test metrics are shown for the best-on-validation\n"
            "trial only."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle report --out report/                       # every study in ./virtualmle.db\n"
            "  virtualmle report --storage sqlite:///runs/studies.db --study beauty-sasrec-tpe-s0 \\\n"
            "      --study beauty-sasrec-agent-s0 --out report/"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--storage", default=None, metavar="URL", help="Optuna storage URL (default sqlite:///virtualmle.db)")
    p.add_argument("--study", dest="studies", action="append", default=[], metavar="NAME", help="study to include (repeatable; default: all studies)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (index.html and PNGs)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write the report and print where it is."""
    import optuna

    from virtualmle.search.report import write_report
    from virtualmle.search.storage import DEFAULT_STORAGE, open_storage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = args.storage or DEFAULT_STORAGE
    storage = open_storage(url, create=False)  # reading: a missing file is an error, not a new one
    index = write_report(storage, Path(args.out), args.studies or None, storage_url=url)
    print(f"report: {index}")
    return 0
