"""Export a finished (or partly finished) grid study to a trial table CSV for `virtualmle bench --table`.

Build the committed SASRec Grid-729 table on Beauty (resumable: run the search again after a kill):

    VIRTUALMLE_DATA_DIR=/work/shared/data virtualmle search --method grid --data beauty --model sasrec \
        --trials 729 --workers 2 --slice-users 1000 --max-epochs 3 \
        --storage sqlite:////tmp/g_bench/grid.db --run-dir /tmp/g_bench/runs --quiet
    python benchmarks/build_table.py --storage sqlite:////tmp/g_bench/grid.db \
        --study beauty-sasrec-grid-s0 --out benchmarks/tables/beauty_sasrec_grid729.csv \
        --machine "2-core shared VM, load average 6-8 during the build"

The header records dataset, backbone, axes, the constant parameters, fidelity (slice_users,
max_epochs, workers), machine and date. A partly finished grid exports the points it has (the grid
runs in a seeded random order, so they are a uniform random subset); `bench` snaps a proposal for a
missing point to the nearest point it has and counts the snap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import sys
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> int:
    import optuna

    from virtualmle.bench.table_export import table_rows_from_study, write_table
    from virtualmle.search.space import load_space
    from virtualmle.search.storage import open_storage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--storage", required=True, help="Optuna storage URL of the grid study")
    ap.add_argument("--study", required=True, help="grid study name, e.g. beauty-sasrec-grid-s0")
    ap.add_argument("--out", required=True, type=Path, help="CSV file to write")
    ap.add_argument("--machine", default="", help="free text about the machine and its load while building")
    ap.add_argument("--workers", type=int, default=2, help="workers the grid ran with (recorded in the header)")
    args = ap.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=open_storage(args.storage))
    attrs = study.user_attrs
    model = attrs.get("model", "sasrec")
    space = load_space(model)
    axes = list(space.grid_names)
    metric = attrs.get("metric", "ndcg@10")
    rows, constants = table_rows_from_study(study, axes, metric)
    constants = {**space.fixed, **constants}
    total = len(space.grid_points())
    machine = f"{platform.node() or 'host'}: {os.cpu_count()} CPUs ({_cpu_model()}), {platform.system()} {platform.release()}"
    if args.machine:
        machine += f"; {args.machine}"
    seconds = sum(float(r["seconds"]) for r in rows)
    meta = {
        "dataset": attrs.get("dataset", "?"),
        "backbone": model,
        "axes": ",".join(axes),
        "constants": constants,
        "fidelity": {"slice_users": attrs.get("slice_users"), "max_epochs": attrs.get("max_epochs"),
                     "workers": args.workers, "device": "cpu"},
        "metric": metric,
        "points": f"{len(rows)} of {total} grid points",
        "compute_seconds": f"{seconds:.0f} (sum of trial wall seconds)",
        "study": f"{args.study} (grid order seed {attrs.get('seed', 0)})",
        "machine": machine,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    write_table(args.out, rows, meta)
    print(f"{args.out}: {len(rows)} of {total} grid points, {seconds:.0f} compute seconds", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
