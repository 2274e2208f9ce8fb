"""What every reader shares: the `Parsed` result, one-line errors, text loading, grouping rows
per user and re-indexing items. The readers themselves are in `readers` (line formats) and
`tables` (CSV / TSV).
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from virtualmle.errors import DataError

# A user needs a training prefix, a validation target and a test target (leave-one-out).
MIN_USER_ITEMS = 3


@dataclass
class Parsed:
    """One parsed file: per-user item sequences as flat arrays (what the cache stores).

    Attributes:
        items: int64 (num_interactions,), item ids 1..num_items, user after user.
        offsets: int64 (num_users + 1,), user u's items are ``items[offsets[u]:offsets[u+1]]``.
        num_items: the largest item id (ids are contiguous, so also the item count).
        timestamps: int64 (num_interactions,) unix seconds aligned with ``items``, or None.
        meta: facts about the parse (format, re-indexing, dropped users), JSON-ready.
        user_ids: str (num_users,), the file's id of each user, or None.
        item_ids: str (num_items,), the file's id of item ``k`` at index ``k - 1``, or None.
    """

    items: np.ndarray
    offsets: np.ndarray
    num_items: int
    timestamps: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    user_ids: np.ndarray | None = None
    item_ids: np.ndarray | None = None

    @property
    def num_users(self) -> int:
        return len(self.offsets) - 1


def fail(path: Path, line: int | None, problem: str) -> DataError:
    """The one-line error every reader raises: `file:line: problem`."""
    problem = " ".join(problem.split())  # never more than one line, whatever the input held
    where = f"{path}:{line}" if line is not None else f"{path}"
    return DataError(f"{where}: {problem}")


def show(token: str, limit: int = 40) -> str:
    """A token for an error message: quoted, shortened, control characters escaped."""
    token = token if len(token) <= limit else token[:limit] + "..."
    return repr(token)


def read_text(path: Path) -> str:
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
        raise fail(path, None, f"not a readable gzip file ({exc})") from None
    except OSError as exc:
        raise fail(path, None, f"cannot read file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise fail(
            path, line, f"undecodable bytes (not UTF-8) at byte {exc.start}: {raw[exc.start:exc.start + 4]!r}"
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text.strip():
        raise fail(path, None, "empty file (no interactions)")
    return text


def lines(text: str):
    """(line number, line) for each non-blank line; `\\n` only, so numbers match editors."""
    for lineno, line in enumerate(text.split("\n"), 1):
        if line.strip():
            yield lineno, line


def parse_ints(path: Path, lineno: int, tokens: Sequence[str], what: str) -> list[int]:
    try:
        return [int(t) for t in tokens]
    except ValueError:
        bad = next(t for t in tokens if not _is_int(t))
        raise fail(path, lineno, f"non-integer {what} id {show(bad)}") from None


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def keep_or_reindex(items: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Keep integer ids that are already 1..N; otherwise map them to 1..N in numeric order.

    Numeric order (not first appearance) so a file whose ids are contiguous is left exactly as
    it is and a file with gaps keeps the relative order of its ids.

    Returns:
        (items, num_items, item_ids): item_ids[k - 1] is the file's id of new item k.
    """
    if items.size and items.min() >= 1:
        top = int(items.max())
        if np.unique(items).size == top:
            return items, top, np.arange(1, top + 1).astype(str)
    uniq, inverse = np.unique(items, return_inverse=True)
    return (inverse.astype(np.int64) + 1), int(uniq.size), uniq.astype(str)


def reindex_first_seen(items: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Map item codes to 1..N in order of first appearance in `items` (already user-ordered).

    Returns:
        (items, num_items, codes): codes[k - 1] is the input code that became item k.
    """
    uniq, first, inverse = np.unique(items, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(1, uniq.size + 1)
    return rank[inverse], int(uniq.size), uniq[order]


def group_rows(
    path: Path,
    users: list,
    items: np.ndarray,
    line_numbers: np.ndarray,
    times: np.ndarray | None,
    *,
    min_items: int,
    drop_short: bool,
    fmt: str,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, dict, np.ndarray]:
    """Rows in file order -> (items, offsets, timestamps, meta, user_ids) grouped per user.

    Users come in order of first appearance in the file. Within a user, rows are sorted by
    timestamp with a stable sort, so ties keep file order; without timestamps file order is
    time order. Users with fewer than `min_items` rows are dropped (`drop_short`) or are an
    error naming the line of their first row. `user_ids` are the kept users' file ids (str).
    """
    codes: dict = {}
    user_codes = np.fromiter((codes.setdefault(u, len(codes)) for u in users), dtype=np.int64, count=len(users))
    if times is not None:
        order = np.lexsort((times, user_codes))  # by user, then time; lexsort is stable
    else:
        order = np.argsort(user_codes, kind="stable")
    counts = np.bincount(user_codes, minlength=len(codes))
    user_ids = np.array([str(u) for u in codes], dtype=str)
    short = counts < min_items
    meta: dict = {}
    if short.any():
        if not drop_short:
            u = int(np.argmax(short))
            first_line = int(line_numbers[np.argmax(user_codes == u)])
            raise fail(
                path,
                first_line,
                f"user {show(str(user_ids[u]))} has {int(counts[u])} interaction(s), need at least "
                f"{min_items} (leave-one-out holds out a validation and a test item)",
            )
        keep_user = ~short
        order = order[keep_user[user_codes[order]]]
        meta["dropped_users"] = int(short.sum())
        meta["dropped_interactions"] = int(counts[short].sum())
        counts = counts[keep_user]
        user_ids = user_ids[keep_user]
        if counts.size == 0:
            raise fail(path, None, f"no user has at least {min_items} interactions ({fmt} format)")
    offsets = np.zeros(counts.size + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    grouped_times = times[order] if times is not None else None
    return items[order], offsets, grouped_times, meta, user_ids


def finish_table(path, users, item_tokens, line_numbers, times, *, min_items, drop_short, fmt) -> Parsed:
    """Shared tail of the table-like readers: group, sort, re-index items by first appearance."""
    item_codes: dict = {}
    items = np.fromiter(
        (item_codes.setdefault(i, len(item_codes)) for i in item_tokens), dtype=np.int64, count=len(item_tokens)
    )
    grouped, offsets, grouped_times, meta, user_ids = group_rows(
        path, users, items, np.asarray(line_numbers, dtype=np.int64), times,
        min_items=min_items, drop_short=drop_short, fmt=fmt,
    )
    new_items, num_items, codes = reindex_first_seen(grouped)
    tokens = np.array([str(t) for t in item_codes], dtype=str)
    if grouped_times is not None:
        grouped_times = np.floor(grouped_times).astype(np.int64)
    meta.update(format=fmt, reindexed=True)
    return Parsed(new_items, offsets, num_items, grouped_times, meta, user_ids, tokens[codes])
