"""Readers for the interaction formats sequential-recommendation work uses.

Every reader turns one file into a `Parsed` value: users in a fixed order, each user's items in
time order, as one flat item array plus offsets (the layout the parse cache stores). Item ids in
the result are always 1..num_items (0 stays free for padding).

Formats (the ``fmt`` names):

``sequence``
    One user per line: ``user item item ...`` in time order (the S3-Rec release files).
``sasrec``
    The original SASRec files: one ``user item`` pair per line, in time order.
``amazon``
    Amazon 2014 review dumps ``reviews_<Category>_5.json[.gz]``: one JSON object per line with
    ``reviewerID``, ``asin`` and ``unixReviewTime``; users with fewer than 5 reviews are dropped.
``csv`` / ``tsv``
    Interaction tables with user, item and (optionally) timestamp columns, with a header row
    or without one (MovieLens-100k ``u.data``); see `virtualmle.data.tables`. RecBole ``.inter``
    files are ``tsv`` whose headers carry a type suffix (``user_id:token``), stripped before
    matching.
``movielens``
    MovieLens ``ratings.dat``: ``user::item::rating::timestamp``.

Every problem with the file is a `DataError` whose message is one line:
``<file>:<line>: <problem>``.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Mapping
from itertools import chain
from pathlib import Path

import numpy as np

from virtualmle.data.parsing import (
    MIN_USER_ITEMS,
    Parsed,
    fail,
    finish_table,
    group_rows,
    keep_or_reindex,
    lines,
    parse_ints,
    read_text,
    show,
)
from virtualmle.data.tables import COLUMN_CANDIDATES, read_table
from virtualmle.errors import DataError

__all__ = ["COLUMN_CANDIDATES", "FORMATS", "Parsed", "detect_format", "normalize_format", "read_file"]
# The paper's preprocessing of the raw Amazon dumps drops users with fewer than 5 reviews.
AMAZON_MIN_USER_ITEMS = 5

FORMATS = ("sequence", "sasrec", "amazon", "csv", "tsv", "movielens")
# Accepted spellings of the format names (`--format inter` is a RecBole file, i.e. tsv).
FORMAT_ALIASES = {
    "seq": "sequence",
    "txt": "sequence",
    "pairs": "sasrec",
    "json": "amazon",
    "inter": "tsv",
    "recbole": "tsv",
    "ml": "movielens",
    "dat": "movielens",
}

# ----------------------------------------------------------------------------- readers


def read_sequence(path: Path) -> Parsed:
    """Read a sequence file: one user per line, ``user item item ...`` in time order.

    Integer ids only; each user on one line only; at least 3 items per user. Item ids that are
    already 1..N are kept, otherwise they are mapped to 1..N in numeric order.
    """
    text = read_text(path)
    seen: dict[int, int] = {}
    seqs: list[list[int]] = []
    user_ids: list[int] = []
    for lineno, line in lines(text):
        ids = parse_ints(path, lineno, line.split(), "user or item")
        user, items = ids[0], ids[1:]
        if user in seen:
            raise fail(path, lineno, f"user {user} appears again (first on line {seen[user]})")
        seen[user] = lineno
        if len(items) < MIN_USER_ITEMS:
            raise fail(
                path, lineno,
                f"user {user} has {len(items)} item(s), need at least {MIN_USER_ITEMS} "
                "(leave-one-out holds out a validation and a test item)" + _triples_hint(text),
            )
        seqs.append(items)
        user_ids.append(user)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    try:
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(offsets[-1]))
    except OverflowError:
        raise fail(path, None, "an item id does not fit in 64 bits") from None
    items, num_items, item_ids = keep_or_reindex(flat)
    meta = {"format": "sequence", "reindexed": items is not flat}
    return Parsed(items, offsets, num_items, None, meta, np.array(user_ids).astype(str), item_ids)


def _triples_hint(text: str) -> str:
    """A hint for a file of `user item timestamp` lines read as a sequence file."""
    head = [ln for _, ln in zip(range(200), lines(text))]
    if head and all(len(ln.split()) == 3 for _, ln in head):
        return (
            "; every line has 3 fields, like `user item timestamp` interactions rather than a "
            "sequence (`user item item ...`): read it as a table with --format tsv "
            "(no header: column 1 user, 2 item, 3 timestamp)"
        )
    return ""


def read_sasrec(path: Path) -> Parsed:
    """Read an original-SASRec file: one ``user item`` pair per line, in time order.

    Users come in order of first appearance; ids already 1..N are kept as for sequence files.
    """
    text = read_text(path)
    users: list[int] = []
    items: list[int] = []
    line_numbers: list[int] = []
    for lineno, line in lines(text):
        parts = line.split()
        if len(parts) != 2:
            raise fail(path, lineno, f"expected 2 fields 'user item', got {len(parts)}")
        u, i = parse_ints(path, lineno, parts, "user or item")
        users.append(u)
        items.append(i)
        line_numbers.append(lineno)
    grouped, offsets, _, meta, user_ids = group_rows(
        path, users, np.asarray(items, dtype=np.int64), np.asarray(line_numbers, dtype=np.int64), None,
        min_items=MIN_USER_ITEMS, drop_short=False, fmt="sasrec",
    )
    new_items, num_items, item_ids = keep_or_reindex(grouped)
    meta.update(format="sasrec", reindexed=new_items is not grouped)
    return Parsed(new_items, offsets, num_items, None, meta, user_ids, item_ids)


def read_amazon(path: Path, *, min_user_items: int = AMAZON_MIN_USER_ITEMS) -> Parsed:
    """Read an Amazon 2014 review dump (``reviews_<Category>_5.json[.gz]``), the paper's way.

    Each user's reviews are sorted by ``unixReviewTime`` with ties in file order, users with
    fewer than `min_user_items` reviews are dropped, users are numbered in order of first
    appearance in the file and items in order of first appearance walking the users in that
    order. Repeated (user, item) reviews are kept. Timestamps are kept.
    """
    text = read_text(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    line_numbers: list[int] = []
    for lineno, line in lines(text):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in obj:
                raise fail(path, lineno, f"missing field {key!r}")
        t = obj["unixReviewTime"]
        if isinstance(t, bool) or not isinstance(t, int):
            raise fail(path, lineno, f"unixReviewTime {show(str(t))} is not an integer")
        users.append(str(obj["reviewerID"]))
        items.append(str(obj["asin"]))
        times.append(t)
        line_numbers.append(lineno)
    return finish_table(
        path, users, items, line_numbers, np.asarray(times, dtype=np.int64),
        min_items=min_user_items, drop_short=True, fmt="amazon",
    )


def read_movielens(path: Path) -> Parsed:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``; ML-1M, ML-10M).

    Every rating is an interaction (no rating threshold, as in SASRec/BERT4Rec on ML-1M);
    rows are sorted per user by timestamp, ties in file order; ids re-indexed by first appearance.
    """
    text = read_text(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    line_numbers: list[int] = []
    for lineno, line in lines(text):
        parts = line.strip().split("::")
        if len(parts) != 4:
            raise fail(path, lineno, f"expected 4 fields 'user::item::rating::timestamp', got {len(parts)}")
        u, i, _, t = parts
        parse_ints(path, lineno, (u, i), "user or item")
        try:
            times.append(int(t))
        except ValueError:
            raise fail(path, lineno, f"timestamp {show(t)} is not an integer") from None
        users.append(u)
        items.append(i)
        line_numbers.append(lineno)
    return finish_table(
        path, users, items, line_numbers, np.asarray(times, dtype=np.int64),
        min_items=MIN_USER_ITEMS, drop_short=False, fmt="movielens",
    )


READERS: dict[str, Callable[..., Parsed]] = {
    "sequence": read_sequence,
    "sasrec": read_sasrec,
    "amazon": read_amazon,
    "csv": lambda path, columns=None: read_table(path, delimiter=",", columns=columns),
    "tsv": lambda path, columns=None: read_table(path, delimiter="\t", columns=columns),
    "movielens": read_movielens,
}


def normalize_format(fmt: str) -> str:
    """A canonical format name from a user's spelling; unknown names are a `DataError`."""
    key = fmt.strip().lower()
    key = FORMAT_ALIASES.get(key, key)
    if key not in FORMATS:
        raise DataError(f"unknown data format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return key


def _sniff_txt(path: Path) -> str:
    """A `.txt` file is a sequence file unless its first lines are all `user item` pairs."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            head = [ln for ln in (fh.readline() for _ in range(200)) if ln.strip()]
    except (OSError, EOFError, zlib.error):
        return "sequence"  # let the reader report the problem with the file
    if head and all(len(ln.split()) == 2 for ln in head):
        return "sasrec"
    return "sequence"


def detect_format(path: Path) -> str:
    """The format of `path` from its name (and, for `.txt`, its first lines).

    `.txt` -> sequence or sasrec; `.json`/`.jsonl` -> amazon; `.csv` -> csv; `.tsv`/`.inter`/
    `.data` -> tsv; `.dat` -> movielens. A trailing `.gz` is looked through.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix == ".txt":
        return _sniff_txt(path)
    by_suffix = {
        ".json": "amazon", ".jsonl": "amazon", ".csv": "csv", ".tsv": "tsv", ".inter": "tsv",
        ".data": "tsv",  # MovieLens-100k u.data: headerless `user item rating timestamp`
        ".dat": "movielens",
    }
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise DataError(
        f"{path}: cannot tell the data format from the file name; pass the format explicitly "
        f"(format= / --format), one of {', '.join(FORMATS)}"
    )


def read_file(path: Path, fmt: str, *, columns: Mapping[str, str | None] | None = None) -> Parsed:
    """Parse `path` in format `fmt` (a name from `FORMATS` or an alias).

    `columns` (csv/tsv only) names the user / item / timestamp columns; ``"timestamp": None``
    ignores the timestamp column.
    """
    fmt = normalize_format(fmt)
    if columns and fmt not in ("csv", "tsv"):
        raise DataError(f"column options (--user-col, --item-col, --time-col, --no-time) apply to csv/tsv tables only, not to the {fmt} format ({path})")
    if fmt in ("csv", "tsv"):
        return READERS[fmt](path, columns=columns)
    return READERS[fmt](path)
