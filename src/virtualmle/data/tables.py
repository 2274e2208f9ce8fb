"""CSV / TSV interaction tables: with or without a header row, unix or ISO-8601 timestamps.

Column roles are ``user``, ``item`` and ``timestamp``. A header row names the columns; a file
whose first row is all numbers has no header, and its columns are named by 1-based position
(``"1"``, ``"2"``, ...), as ``cut -f`` does. A role can be given by header name or by position.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from virtualmle.data.parsing import MIN_USER_ITEMS, Parsed, fail, finish_table, read_text, show
from virtualmle.errors import DataError

# Column names tried, in order and case-insensitively, when a table does not say which is which.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "user", "userid", "uid", "reviewerid", "customer_id", "visitorid"),
    "item": ("item_id", "item", "itemid", "iid", "movie_id", "movieid", "asin", "product_id"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date"),
}
# Headerless tables: user and item are columns 1 and 2; the timestamp is column 3 of a
# three-column file (`user item timestamp`) and column 4 of a wider one (MovieLens-100k `u.data`:
# `user item rating timestamp`). Two columns: no timestamp, file order is time order.
HEADERLESS_TIME_COLUMN = {3: "3"}
HEADERLESS_TIME_COLUMN_WIDE = "4"
_NAMES = {"\t": "tab", ",": "comma", " ": "whitespace"}


def parse_time(token: str) -> float:
    """Unix seconds from a number or an ISO-8601 date / date-time (naive ones are UTC).

    Raises:
        ValueError: neither a number nor an ISO-8601 date.
    """
    try:
        return float(token)
    except ValueError:
        pass
    stamp = datetime.fromisoformat(token.strip())
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return stamp.timestamp()


def _is_number_or_date(token: str) -> bool:
    try:
        parse_time(token)
    except ValueError:
        return False
    return True


def _check_delimiter(path: Path, first_line: str, delimiter: str) -> str:
    """The delimiter to use, or a `DataError` when the file clearly uses another one.

    A table has at least two columns, so a first line without the format's delimiter is the
    wrong format. A TSV without tabs but with whitespace-separated fields is read on whitespace
    (the `user item timestamp` files many releases ship).
    """
    if delimiter in first_line:
        return delimiter
    if delimiter == "," and "\t" in first_line:
        raise fail(path, 1, "no comma on the first line but tabs: the file looks tab-separated; "
                            "use --format tsv (format='tsv')")
    if delimiter == "\t" and "," in first_line:
        raise fail(path, 1, "no tab on the first line but commas: the file looks comma-separated; "
                            "use --format csv (format='csv')")
    if delimiter == "\t" and len(first_line.split()) >= 2:
        return " "
    raise fail(path, 1, f"no {_NAMES[delimiter]} on the first line: a table needs at least a user "
                        f"and an item column separated by {_NAMES[delimiter]}s")


def _rows(text: str, delimiter: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) per non-blank row; CSV quoting unless split on whitespace."""
    if delimiter == " ":
        for lineno, line in enumerate(text.split("\n"), 1):
            if line.strip():
                yield lineno, line.split()
        return
    reader = csv.reader(text.split("\n"), delimiter=delimiter)
    for row in reader:
        if row and not (len(row) == 1 and not row[0].strip()):
            yield reader.line_num, row


def _resolve_column(path: Path, header: list[str], role: str, wanted: str | None, headerless: bool) -> int | None:
    """Index of the column playing `role`, by name, by 1-based position, or by the usual names."""
    names = [h.strip().split(":", 1)[0].lower() for h in header]
    if wanted is not None:
        key = wanted.strip().split(":", 1)[0].lower()
        if key in names:
            return names.index(key)
        if key.isdigit() and 1 <= int(key) <= len(header):
            return int(key) - 1
        has = f"{len(header)} columns (no header row)" if headerless else f"header has {', '.join(header)}"
        raise fail(path, 1, f"missing {role} column {wanted!r}; {has}")
    if headerless:
        default = {"user": "1", "item": "2"}.get(role)
        if role == "timestamp":
            default = HEADERLESS_TIME_COLUMN.get(len(header), HEADERLESS_TIME_COLUMN_WIDE if len(header) > 3 else None)
        return None if default is None else int(default) - 1
    for candidate in COLUMN_CANDIDATES[role]:
        if candidate in names:
            return names.index(candidate)
    if role == "timestamp":
        return None  # optional: file order is then time order
    raise fail(
        path, 1,
        f"missing {role} column: none of {', '.join(COLUMN_CANDIDATES[role])} in header "
        f"({', '.join(header)}); name it with columns={{'{role}': ...}} / --{role}-col "
        "(a file without a header row must start with a row of numbers)",
    )


def read_table(
    path: Path,
    *,
    delimiter: str | None = None,
    columns: Mapping[str, str | None] | None = None,
) -> Parsed:
    """Read a CSV/TSV interaction table (RecBole ``.inter`` files and MovieLens ``u.data`` included).

    Args:
        path: the file.
        delimiter: ``","`` or ``"\\t"``; None guesses from the first line. A tab-separated
            table without tabs is split on whitespace.
        columns: optional ``{"user": ..., "item": ..., "timestamp": ...}``: a header name (a
            RecBole type suffix such as ``:token`` is ignored on both sides) or a 1-based
            column position. ``"timestamp": None`` ignores the timestamp column (file order is
            time order). Without a name the usual ones are tried (`COLUMN_CANDIDATES`).

    A first row of numbers (or ISO dates) means there is no header: columns are then 1, 2, ...
    with user 1, item 2 and timestamp 3 (three columns) or 4 (``user item rating timestamp``).
    Timestamps are unix seconds or ISO-8601 dates. Rows are grouped per user (first appearance
    order), sorted by timestamp with ties in file order, and items are re-indexed 1..N by first
    appearance. Every user needs 3 interactions.
    """
    text = read_text(path)
    first_line = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = "\t" if "\t" in first_line else ","
    delimiter = _check_delimiter(path, first_line, delimiter)
    columns = dict(columns or {})
    unknown = set(columns) - set(COLUMN_CANDIDATES)
    if unknown:
        raise DataError(f"unknown column role(s) {sorted(unknown)}; use user, item, timestamp")
    ignore_time = "timestamp" in columns and not columns["timestamp"]
    rows = _rows(text, delimiter)
    users: list[str] = []
    items: list[str] = []
    times: list[float] = []
    line_numbers: list[int] = []
    kind = {"\t": "TSV", ",": "CSV", " ": "whitespace-separated table"}[delimiter]
    try:
        _, header = next(rows)
        headerless = all(_is_number_or_date(h.strip()) for h in header)
        first_rows = [(1, header)] if headerless else []
        if headerless:
            header = [str(i) for i in range(1, len(header) + 1)]
        ucol = _resolve_column(path, header, "user", columns.get("user"), headerless)
        icol = _resolve_column(path, header, "item", columns.get("item"), headerless)
        tcol = None if ignore_time else _resolve_column(path, header, "timestamp", columns.get("timestamp"), headerless)
        width = len(header)
        for lineno, row in (*first_rows, *rows):
            if len(row) != width:
                raise fail(path, lineno, f"expected {width} fields, got {len(row)}")
            u, i = row[ucol].strip(), row[icol].strip()
            if not u or not i:
                raise fail(path, lineno, f"empty {'user' if not u else 'item'} field")
            if tcol is not None:
                try:
                    t = parse_time(row[tcol])
                except ValueError:
                    raise fail(path, lineno, f"timestamp {show(row[tcol])} is neither a number nor an "
                                             "ISO-8601 date (ignore the column with --no-time)") from None
                if not np.isfinite(t):
                    raise fail(path, lineno, f"timestamp {show(row[tcol])} is not finite")
                times.append(t)
            users.append(u)
            items.append(i)
            line_numbers.append(lineno)
    except csv.Error as exc:
        raise fail(path, None, f"malformed {kind} ({exc})") from None
    if not users:
        raise fail(path, None, "no interactions after the header")
    fmt = "tsv" if delimiter != "," else "csv"
    parsed = finish_table(
        path, users, items, line_numbers, np.asarray(times, dtype=np.float64) if tcol is not None else None,
        min_items=MIN_USER_ITEMS, drop_short=False, fmt=fmt,
    )
    parsed.meta.update(header=not headerless, delimiter=_NAMES[delimiter])
    return parsed
