"""The data flags every command that reads a dataset shares: declared once, here.

`profile`, `train`, `search`, `tune`, `bench`, `recommend` and `evaluate` call
`add_data_arguments(parser)` and pass `data_options(args)` to `virtualmle.data.load_dataset`
(or, for trials, through `SearchOptions.data_options` to every worker).
"""

from __future__ import annotations

import argparse
from typing import Any

from virtualmle.data.readers import FORMAT_ALIASES, FORMATS


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--format``, ``--user-col``, ``--item-col``, ``--time-col`` and ``--no-time``."""
    group = parser.add_argument_group("data file options (see docs/data.md)")
    aliases = ", ".join(f"{a}={b}" for a, b in FORMAT_ALIASES.items())
    # No argparse `choices`: aliases are accepted and a wrong name is one line from the reader.
    group.add_argument("--format", dest="fmt", default=None, metavar="FORMAT",
                       help=f"file format, one of {', '.join(FORMATS)} (aliases {aliases}); default: from the file name")
    group.add_argument("--user-col", default=None, metavar="NAME|N",
                       help="user column of a csv/tsv table: header name or 1-based position")
    group.add_argument("--item-col", default=None, metavar="NAME|N",
                       help="item column of a csv/tsv table: header name or 1-based position")
    group.add_argument("--time-col", default=None, metavar="NAME|N",
                       help="timestamp column of a csv/tsv table (unix seconds or ISO-8601 dates)")
    group.add_argument("--no-time", action="store_true",
                       help="ignore the table's timestamp column: rows are in time order as they stand")


def data_options(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments for `load_dataset` from the parsed flags: ``fmt`` and ``columns``.

    Only what was given is included, so the result is also a stable, JSON-ready record of how
    the file was read (stored with trials and saved models).
    """
    from virtualmle.errors import ConfigError

    if args.no_time and args.time_col:
        raise ConfigError("--no-time and --time-col contradict each other: give one")
    columns: dict[str, str | None] = {
        role: value for role, value in (("user", args.user_col), ("item", args.item_col), ("timestamp", args.time_col))
        if value
    }
    if args.no_time:
        columns["timestamp"] = None
    options: dict[str, Any] = {}
    if args.fmt:
        options["fmt"] = args.fmt
    if columns:
        options["columns"] = columns
    return options
