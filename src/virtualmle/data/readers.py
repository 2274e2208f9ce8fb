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
    Interaction tables with a header row holding user, item and (optionally) timestamp columns.
    RecBole ``.inter`` files are ``tsv`` whose headers carry a type suffix (``user_id:token``),
    which is stripped before matching.
``movielens``
    MovieLens ``ratings.dat``: ``user::item::rating::timestamp``.

Every problem with the file is a `DataError` whose message is one line:
``<file>:<line>: <problem>``.
"""

from __future__ import annotations

import csv
import gzip
import json
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path

import numpy as np

from virtualmle.errors import DataError

# A user needs a training prefix, a validation target and a test target (leave-one-out).
MIN_USER_ITEMS = 3
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

# Column names tried, in order and case-insensitively, when a table does not say which is which.
COLUMN_CANDIDATES: dict[str, tuple[str, ...]] = {
    "user": ("user_id", "user", "userid", "uid", "reviewerid", "customer_id", "visitorid"),
    "item": ("item_id", "item", "itemid", "iid", "movie_id", "movieid", "asin", "product_id"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date"),
}


@dataclass
class Parsed:
    """One parsed file: per-user item sequences as flat arrays (what the cache stores).

    Attributes:
        items: int64 (num_interactions,), item ids 1..num_items, user after user.
        offsets: int64 (num_users + 1,), user u's items are ``items[offsets[u]:offsets[u+1]]``.
        num_items: the largest item id (ids are contiguous, so also the item count).
        timestamps: int64 (num_interactions,) unix seconds aligned with ``items``, or None.
        meta: facts about the parse (format, re-indexing, dropped users), JSON-ready.
    """

    items: np.ndarray
    offsets: np.ndarray
    num_items: int
    timestamps: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1


# ----------------------------------------------------------------------------- helpers


def _fail(path: Path, line: int | None, problem: str) -> DataError:
    """The one-line error every reader raises: `file:line: problem`."""
    problem = " ".join(problem.split())  # never more than one line, whatever the input held
    where = f"{path}:{line}" if line is not None else f"{path}"
    return DataError(f"{where}: {problem}")


def _show(token: str, limit: int = 40) -> str:
    """A token for an error message: quoted, shortened, control characters escaped."""
    token = token if len(token) <= limit else token[:limit] + "..."
    return repr(token)


def _read_text(path: Path) -> str:
    """The whole file as text: gzip-aware, strict UTF-8, a leading BOM dropped.

    Reading the file at once and decoding it in one call is much faster than per line; only on
    failure do we count newlines to name the line with the bad bytes.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise _fail(path, None, f"not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise _fail(path, None, f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise _fail(
            path, line, f"undecodable bytes (not UTF-8) at byte {exc.start}: {raw[exc.start:exc.start + 4]!r}"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise _fail(path, None, "empty file (no interactions)")
    return text


def _lines(text: str):
    """(line number, line) for each non-blank line; `\\n` only, so numbers match editors."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield lineno, line


def _parse_ints(path: Path, lineno: int, tokens: Sequence[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_int(t))
        raise _fail(path, lineno, f"non-integer {what} id {_show(bad)}") from None


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def _keep_or_reindex(items: np.ndarray) -> tuple[np.ndarray, int, bool]:
    """Keep integer ids that are already 1..N; otherwise map them to 1..N in numeric order.

    Numeric order (not first appearance) so a file whose ids are contiguous is left exactly as
    it is and a file with gaps keeps the relative order of its ids.
    """
    if items.size and items.min() >= 1:
        top = int(items.max())
        if np.unique(items).size == top:
            return items, top, False
    uniq, inverse = np.unique(items, return_inverse=True)
    return (inverse.astype(np.int64) + 1), int(uniq.size), True


def _reindex_first_seen(items: np.ndarray) -> tuple[np.ndarray, int]:
    """Map item codes to 1..N in order of first appearance in `items` (already user-ordered)."""
    uniq, first, inverse = np.unique(items, return_index=True, return_inverse=True)
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(1, uniq.size + 1)
    return rank[inverse], int(uniq.size)


def _group_rows(
    path: Path,
    users: list,
    items: np.ndarray,
    lines: np.ndarray,
    times: np.ndarray | None,
    *,
    min_items: int,
    drop_short: bool,
    fmt: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict]:
    """Rows in file order -> (items, offsets, timestamps) grouped per user, in time order.

    Users come in order of first appearance in the file. Within a user, rows are sorted by
    timestamp with a stable sort, so ties keep file order; without timestamps file order is
    time order. Users with fewer than `min_items` rows are dropped (`drop_short`) or are an
    error naming the line of their first row.
    """
    codes: dict = {}
    user_codes = np.fromiter((codes.setdefault(u, len(codes)) for u in users), dtype=np.int64, count=len(users))
    if times is not None:
        order = np.lexsort((times, user_codes))  # by user, then time; lexsort is stable
    else:
        order = np.argsort(user_codes, kind="stable")
    counts = np.bincount(user_codes, minlength=len(codes))
    short = counts < min_items
    meta: dict = {}
    if short.any():
        if not drop_short:
            u = int(np.argmax(short))
            first_line = int(lines[np.argmax(user_codes == u)])
            raw = next(k for k, v in codes.items() if v == u)
            raise _fail(
                path,
                first_line,
                f"user {_show(str(raw))} has {int(counts[u])} interaction(s), need at least "
                f"{min_items} (leave-one-out holds out a validation and a test item)",
            )
        keep_user = ~short
        order = order[keep_user[user_codes[order]]]
        meta["dropped_users"] = int(short.sum())
        meta["dropped_interactions"] = int(counts[short].sum())
        counts = counts[keep_user]
        if counts.size == 0:
            raise _fail(path, None, f"no user has at least {min_items} interactions ({fmt} format)")
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    grouped_times = times[order] if times is not None else None
    return items[order], offsets, grouped_times, meta


def _finish_table(path, users, item_tokens, lines, times, *, min_items, drop_short, fmt) -> Parsed:
    """Shared tail of the table-like readers: group, sort, re-index items by first appearance."""
    item_codes: dict = {}
    items = np.fromiter(
        (item_codes.setdefault(i, len(item_codes)) for i in item_tokens), dtype=np.int64, count=len(item_tokens)
    )
    grouped, offsets, grouped_times, meta = _group_rows(
        path, users, items, np.asarray(lines, dtype=np.int64), times,
        min_items=min_items, drop_short=drop_short, fmt=fmt,
    )
    new_items, num_items = _reindex_first_seen(grouped)
    if grouped_times is not None:
        grouped_times = np.floor(grouped_times).astype(np.int64)
    meta.update(format=fmt, reindexed=True)
    return Parsed(new_items, offsets, num_items, grouped_times, meta)


# ----------------------------------------------------------------------------- readers


def read_sequence(path: Path) -> Parsed:
    """Read a sequence file: one user per line, ``user item item ...`` in time order.

    Integer ids only; each user on one line only; at least 3 items per user. Item ids that are
    already 1..N are kept, otherwise they are mapped to 1..N in numeric order.
    """
    text = _read_text(path)
    seen: dict[int, int] = {}
    seqs: list[list[int]] = []
    for lineno, line in _lines(text):
        ids = _parse_ints(path, lineno, line.split(), "user or item")
        user, items = ids[0], ids[1:]
        if user in seen:
            raise _fail(path, lineno, f"user {user} appears again (first on line {seen[user]})")
        seen[user] = lineno
        if len(items) < MIN_USER_ITEMS:
            raise _fail(
                path, lineno,
                f"user {user} has {len(items)} item(s), need at least {MIN_USER_ITEMS} "
                "(leave-one-out holds out a validation and a test item)",
            )
        seqs.append(items)
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    offsets = np.zeros(len(seqs) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    try:
        flat = np.fromiter(chain.from_iterable(seqs), dtype=np.int64, count=int(offsets[-1]))
    except OverflowError:
        raise _fail(path, None, "an item id does not fit in 64 bits") from None
    items, num_items, reindexed = _keep_or_reindex(flat)
    return Parsed(items, offsets, num_items, None, {"format": "sequence", "reindexed": reindexed})


def read_sasrec(path: Path) -> Parsed:
    """Read an original-SASRec file: one ``user item`` pair per line, in time order.

    Users come in order of first appearance; ids already 1..N are kept as for sequence files.
    """
    text = _read_text(path)
    users: list[int] = []
    items: list[int] = []
    lines: list[int] = []
    for lineno, line in _lines(text):
        parts = line.split()
        if len(parts) != 2:
            raise _fail(path, lineno, f"expected 2 fields 'user item', got {len(parts)}")
        u, i = _parse_ints(path, lineno, parts, "user or item")
        users.append(u)
        items.append(i)
        lines.append(lineno)
    grouped, offsets, _, meta = _group_rows(
        path, users, np.asarray(items, dtype=np.int64), np.asarray(lines, dtype=np.int64), None,
        min_items=MIN_USER_ITEMS, drop_short=False, fmt="sasrec",
    )
    new_items, num_items, reindexed = _keep_or_reindex(grouped)
    meta.update(format="sasrec", reindexed=reindexed)
    return Parsed(new_items, offsets, num_items, None, meta)


def read_amazon(path: Path, *, min_user_items: int = AMAZON_MIN_USER_ITEMS) -> Parsed:
    """Read an Amazon 2014 review dump (``reviews_<Category>_5.json[.gz]``), the paper's way.

    Each user's reviews are sorted by ``unixReviewTime`` with ties in file order, users with
    fewer than `min_user_items` reviews are dropped, users are numbered in order of first
    appearance in the file and items in order of first appearance walking the users in that
    order. Repeated (user, item) reviews are kept. Timestamps are kept.
    """
    text = _read_text(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    lines: list[int] = []
    for lineno, line in _lines(text):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _fail(path, lineno, f"not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(obj, dict):
            raise _fail(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        for key in ("reviewerID", "asin", "unixReviewTime"):
            if key not in obj:
                raise _fail(path, lineno, f"missing field {key!r}")
        t = obj["unixReviewTime"]
        if isinstance(t, bool) or not isinstance(t, int):
            raise _fail(path, lineno, f"unixReviewTime {_show(str(t))} is not an integer")
        users.append(str(obj["reviewerID"]))
        items.append(str(obj["asin"]))
        times.append(t)
        lines.append(lineno)
    return _finish_table(
        path, users, items, lines, np.asarray(times, dtype=np.int64),
        min_items=min_user_items, drop_short=True, fmt="amazon",
    )


def _resolve_column(path: Path, header: list[str], role: str, wanted: str | None) -> int | None:
    """Index of the column playing `role`, by explicit name or by the usual names."""
    names = [h.strip().split(":", 1)[0].lower() for h in header]
    if wanted is not None:
        key = wanted.strip().split(":", 1)[0].lower()
        if key not in names:
            raise _fail(path, 1, f"missing {role} column {wanted!r}; header has {', '.join(header)}")
        return names.index(key)
    for candidate in COLUMN_CANDIDATES[role]:
        if candidate in names:
            return names.index(candidate)
    if role == "timestamp":
        return None  # optional: file order is then time order
    raise _fail(
        path, 1,
        f"missing {role} column: none of {', '.join(COLUMN_CANDIDATES[role])} in header "
        f"({', '.join(header)}); name it with columns={{'{role}': ...}} / --{role}-col",
    )


def read_table(
    path: Path,
    *,
    delimiter: str | None = None,
    columns: Mapping[str, str] | None = None,
) -> Parsed:
    """Read a CSV/TSV interaction table with a header row (RecBole ``.inter`` files included).

    Args:
        path: the file.
        delimiter: ``","`` or ``"\\t"``; None guesses from the header line.
        columns: optional ``{"user": ..., "item": ..., "timestamp": ...}`` column names; a
            RecBole type suffix (``:token``, ``:float``) is ignored on both sides. Without a
            name the usual ones are tried (`COLUMN_CANDIDATES`). A timestamp column is optional
            when not named: rows are then taken to be in time order.

    Rows are grouped per user (first appearance order), sorted by timestamp with ties in file
    order, and items are re-indexed 1..N by first appearance. Every user needs 3 interactions.
    """
    text = _read_text(path)
    first_line = text.split("\n", 1)[0]
    if delimiter is None:
        delimiter = "\t" if "\t" in first_line else ","
    columns = dict(columns or {})
    unknown = set(columns) - set(COLUMN_CANDIDATES)
    if unknown:
        raise DataError(f"unknown column role(s) {sorted(unknown)}; use user, item, timestamp")
    reader = csv.reader(text.split("\n"), delimiter=delimiter)
    try:
        header = next(reader)
        ucol = _resolve_column(path, header, "user", columns.get("user"))
        icol = _resolve_column(path, header, "item", columns.get("item"))
        tcol = _resolve_column(path, header, "timestamp", columns.get("timestamp"))
        width = len(header)
        users: list[str] = []
        items: list[str] = []
        times: list[float] = []
        lines: list[int] = []
        for row in reader:
            lineno = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue
            if len(row) != width:
                raise _fail(path, lineno, f"expected {width} fields, got {len(row)}")
            u, i = row[ucol].strip(), row[icol].strip()
            if not u or not i:
                raise _fail(path, lineno, f"empty {'user' if not u else 'item'} field")
            if tcol is not None:
                try:
                    t = float(row[tcol])
                except ValueError:
                    raise _fail(path, lineno, f"timestamp {_show(row[tcol])} is not a number") from None
                if not np.isfinite(t):
                    raise _fail(path, lineno, f"timestamp {_show(row[tcol])} is not finite")
                times.append(t)
            users.append(u)
            items.append(i)
            lines.append(lineno)
    except csv.Error as exc:
        raise _fail(path, reader.line_num, f"malformed {('TSV' if delimiter == chr(9) else 'CSV')} ({exc})") from None
    if not users:
        raise _fail(path, None, "no interactions after the header")
    fmt = "tsv" if delimiter == "\t" else "csv"
    return _finish_table(
        path, users, items, lines, np.asarray(times, dtype=np.float64) if tcol is not None else None,
        min_items=MIN_USER_ITEMS, drop_short=False, fmt=fmt,
    )


def read_movielens(path: Path) -> Parsed:
    """Read MovieLens ``ratings.dat`` (``user::item::rating::timestamp``; ML-1M, ML-10M).

    Every rating is an interaction (no rating threshold, as in SASRec/BERT4Rec on ML-1M);
    rows are sorted per user by timestamp, ties in file order; ids re-indexed by first appearance.
    """
    text = _read_text(path)
    users: list[str] = []
    items: list[str] = []
    times: list[int] = []
    lines: list[int] = []
    for lineno, line in _lines(text):
        parts = line.strip().split("::")
        if len(parts) != 4:
            raise _fail(path, lineno, f"expected 4 fields 'user::item::rating::timestamp', got {len(parts)}")
        u, i, _, t = parts
        _parse_ints(path, lineno, (u, i), "user or item")
        try:
            times.append(int(t))
        except ValueError:
            raise _fail(path, lineno, f"timestamp {_show(t)} is not an integer") from None
        users.append(u)
        items.append(i)
        lines.append(lineno)
    return _finish_table(
        path, users, items, lines, np.asarray(times, dtype=np.int64),
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

    `.txt` -> sequence or sasrec; `.json`/`.jsonl` -> amazon; `.csv` -> csv; `.tsv`/`.inter`
    -> tsv; `.dat` -> movielens. A trailing `.gz` is looked through.
    """
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    suffix = Path(name).suffix
    if suffix == ".txt":
        return _sniff_txt(path)
    by_suffix = {".json": "amazon", ".jsonl": "amazon", ".csv": "csv", ".tsv": "tsv", ".inter": "tsv", ".dat": "movielens"}
    if suffix in by_suffix:
        return by_suffix[suffix]
    raise DataError(
        f"{path}: cannot tell the data format from the file name; pass the format explicitly "
        f"(format= / --format), one of {', '.join(FORMATS)}"
    )


def read_file(path: Path, fmt: str, *, columns: Mapping[str, str] | None = None) -> Parsed:
    """Parse `path` in format `fmt` (a name from `FORMATS`)."""
    fmt = normalize_format(fmt)
    if columns and fmt not in ("csv", "tsv"):
        raise DataError(f"column names apply to csv/tsv tables only, not to the {fmt} format ({path})")
    if fmt in ("csv", "tsv"):
        return READERS[fmt](path, columns=columns)
    return READERS[fmt](path)
