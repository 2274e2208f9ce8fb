"""`virtualmle recommend`: top-K items per user from a saved model, in the file's own ids."""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
from pathlib import Path

from virtualmle.cli.data_options import add_data_arguments, data_options
from virtualmle.cli.outputs import check_output_file, umask_mode
from virtualmle.errors import ConfigError, DataError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `recommend` command."""
    p = subparsers.add_parser(
        "recommend",
        help="top-K recommendations per user from a saved model (train --save, or a study's best_model)",
        description=(
            "Read an interaction file, take each user's whole history in time order, and write the\n"
            "model's top-K next items per user, in the file's own user and item ids. Items already in\n"
            "the user's history are excluded (the evaluation protocol). History items the model never\n"
            "saw are skipped; users with no known item get no rows (counted on stderr)."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle recommend --model runs/beauty-sasrec-agent-s0/best_model --data beauty --k 10 --output recs.csv\n"
            "  virtualmle recommend --model model/ --data u.data --users some_users.txt --output recs.csv\n"
            "output columns: user, rank (1 = best), item, score. .parquet needs pyarrow installed."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, metavar="DIR", help="saved model directory")
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH", help="interactions: each user's history")
    p.add_argument("--users", type=Path, default=None, metavar="FILE",
                   help="only these users: one user id per line, as in the data file")
    p.add_argument("--k", type=int, default=10, metavar="K", help="items per user (default 10)")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="recs.csv or recs.parquet (default: CSV on stdout)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default auto)")
    add_data_arguments(p)
    p.set_defaults(func=run)


def _read_users(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read the user list ({exc})") from None
    users = [line.strip() for line in text.splitlines() if line.strip()]
    if not users:
        raise DataError(f"{path}: no user ids (one per line expected)")
    return users


def _check_output(path: Path) -> Path:
    path = check_output_file(path)
    if path.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--output {path}: use a .csv or .parquet file name")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ConfigError(f"--output {path}: writing parquet needs pyarrow (pip install pyarrow); "
                              "or use a .csv name") from None
    return path


def _write(path: Path | None, rows: list[tuple[str, int, str, float]]) -> None:
    """CSV (or parquet) atomically; stdout without a path."""
    if path is None:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(("user", "rank", "item", "score"))
        w.writerows(rows)
        return
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            cols = list(zip(*rows)) if rows else [[], [], [], []]
            table = pa.table({"user": list(cols[0]), "rank": list(cols[1]), "item": list(cols[2]),
                              "score": list(cols[3])})
            pq.write_table(table, tmp)
        else:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                w = csv.writer(fh)
                w.writerow(("user", "rank", "item", "score"))
                w.writerows(rows)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    """Load the model and the data, score, write."""
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}")
    output = _check_output(args.output) if args.output is not None else None
    wanted = _read_users(args.users) if args.users is not None else None
    options = data_options(args)

    import numpy as np

    from virtualmle.inference import load_model, read_data_for

    model = load_model(args.model, device=args.device)
    data, _ = read_data_for(model, args.data, options)
    users = [str(u) for u in data.user_ids]
    index = {u: i for i, u in enumerate(users)}
    if wanted is not None:
        missing = [u for u in wanted if u not in index]
        if missing:
            raise DataError(f"{args.users}: {len(missing)} user(s) are not in {args.data}, e.g. {missing[0]!r}")
        chosen = [index[u] for u in wanted]
    else:
        chosen = list(range(len(users)))
    lookup = [0] + [model.item_index(x) for x in data.item_ids]
    histories, times, skipped = [], [], 0
    lookup_arr = np.asarray(lookup, dtype=np.int64)
    for u in chosen:
        ids = lookup_arr[data.sequences[u]]
        keep = ids != 0
        skipped += int((~keep).sum())
        histories.append(ids[keep])
        times.append(data.timestamps[u][keep] if data.timestamps is not None else None)
    items, scores = model.top_k(histories, args.k, times if data.timestamps is not None else None)
    rows, empty = [], 0
    for row, u in enumerate(chosen):
        if len(histories[row]) == 0:
            empty += 1
            continue
        for rank, (item, score) in enumerate(zip(items[row], scores[row]), 1):
            if item > 0:
                rows.append((users[u], rank, model.item_ids[item - 1], round(float(score), 6)))
    _write(output, rows)
    if skipped or empty:
        print(f"virtualmle: note: {skipped} history interaction(s) on items the model never saw were skipped; "
              f"{empty} user(s) had no known item and got no recommendations", file=sys.stderr)
    if output is not None:
        print(f"recommendations: {len(chosen) - empty} users x {args.k} -> {output}", file=sys.stderr)
    return 0
