"""`virtualmle profile`: read a dataset (any supported format) and print its profile."""

from __future__ import annotations

import argparse
import json
import sys

from virtualmle.cli.data_options import add_data_arguments, data_options
from virtualmle.data import describe_profile, load_dataset, profile_dataset


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `profile` command."""
    p = subparsers.add_parser(
        "profile",
        help="show a dataset's profile (sizes, lengths, popularity, leave-one-out facts)",
        description=(
            "Read a dataset and print its profile: users, items, interactions, density,\n"
            "sequence length mean/p50/p90/p95/max, the share of users within --max-len, item\n"
            "popularity concentration (Gini, top-1%/10% share), and the test targets never seen\n"
            "before test under leave-one-out. `virtualmle train` stores the same profile and the\n"
            "agent is shown it."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle profile --data beauty\n"
            "  virtualmle profile --data reviews_Baby_5.json.gz --json\n"
            "  virtualmle profile --data ml-1m/ratings.dat\n"
            "  virtualmle profile --data ml-100k.inter --format tsv --time-col timestamp\n"
            "  virtualmle profile --data ml-100k/u.data          # headerless TSV: user item rating timestamp\n"
            "names are looked up in $VIRTUALMLE_DATA_DIR (default ~/.cache/virtualmle/data); "
            "parses are cached in $VIRTUALMLE_CACHE_DIR (default ~/.cache/virtualmle/cache)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--data", required=True, metavar="NAME_OR_PATH",
        help="dataset name (beauty, baby, pet_supplies, sports, toys) or a file path",
    )
    p.add_argument("--max-len", type=int, default=50, metavar="N", help="model max length the coverage share is computed for (default 50)")
    p.add_argument("--slice-users", type=int, default=None, metavar="N", help="profile only the first N users")
    p.add_argument("--no-cache", action="store_true", help="parse the file without reading or writing the parse cache")
    p.add_argument("--json", action="store_true", help="print the profile as JSON instead of a table")
    add_data_arguments(p)
    p.set_defaults(func=run)


def _rows(profile: dict) -> list[tuple[str, str]]:
    sl, pop = profile["seq_len"], profile["popularity"]
    rows = [
        ("users", f"{profile['users']:,}"),
        ("items", f"{profile['items']:,}"),
        ("interactions", f"{profile['interactions']:,}"),
        ("density", f"{profile['density']:.3e}"),
        ("length mean / p50 / p90 / p95 / max", f"{sl['mean']:.2f} / {sl['p50']:g} / {sl['p90']:g} / {sl['p95']:g} / {sl['max']}"),
        (f"users with length <= {profile['max_len']}", f"{profile['share_within_max_len']:.2%}"),
        ("item popularity Gini", f"{pop['gini']:.3f}"),
        ("interactions on top 1% / 10% items", f"{pop['top1pct_share']:.1%} / {pop['top10pct_share']:.1%}"),
        ("items with < 5 interactions", f"{pop['items_under_5']:,}"),
        ("test targets unseen before test", f"{profile['test_only_items']} ({profile['test_only_items_distinct']} distinct items)"),
        ("repeated interactions", f"{profile['repeat_interactions']:,}"),
        ("timestamps", "yes" if profile["has_timestamps"] else "no"),
    ]
    if "time_span_days" in profile:
        rows.append(("time span (days)", f"{profile['time_span_days']:.0f}"))
    return rows


def run(args: argparse.Namespace) -> int:
    """Load, profile, print. Errors are `DataError`s, which the CLI prints on one line."""
    from virtualmle.errors import ConfigError

    if args.max_len < 1:
        raise ConfigError(f"--max-len must be at least 1, got {args.max_len}")
    data = load_dataset(args.data, slice_users=args.slice_users, cache=not args.no_cache, **data_options(args))
    profile = profile_dataset(data, max_len=args.max_len)
    if args.json:
        doc = dict(profile, source=str(data.source), format=data.meta.get("format"))
        print(json.dumps(doc, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{data.name}  ({data.source}, {data.meta.get('format')})", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value", justify="right")
    for key, value in _rows(profile):
        table.add_row(key, value)
    console = Console(file=sys.stdout)
    console.print(table)
    console.print(describe_profile(profile), highlight=False)
    return 0
