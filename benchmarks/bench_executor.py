"""Per-trial overhead of the subprocess executor: process start, data load (from the parse
cache), model build, with no training (a dry-run trial). Target: under 3 s per trial.

    python benchmarks/bench_executor.py [--data beauty] [--trials 5] [--slice-users N]

Prints the wall time per trial and where it went (interpreter + imports, data load, model build).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from virtualmle.search.executor import LocalExecutor, TrialSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--slice-users", type=int, default=None, help="default: the full dataset")
    ap.add_argument("--model", default="sasrec")
    args = ap.parse_args()
    os.environ.setdefault("VIRTUALMLE_DATA_DIR", "/work/shared/data")
    ex = LocalExecutor(workers=1, device="cpu")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(args.trials + 1):  # trial 0 warms the parse cache and the OS file cache
            spec = TrialSpec(number=n, data=args.data, config={"model": args.model}, trial_dir=f"{tmp}/t{n}",
                             slice_users=args.slice_users, device="cpu", dry_run=True)
            t0 = time.monotonic()
            out = ex.run(spec)
            wall = time.monotonic() - t0
            if out.outcome.value != "complete":
                raise SystemExit(f"trial {n}: {out.outcome.value}: {out.error}")
            if n:
                rows.append((wall, out.timings["import"], out.timings["load"], out.timings["build"]))
    ex.shutdown()
    print(f"executor overhead, {args.data} ({'all users' if args.slice_users is None else f'{args.slice_users} users'}), "
          f"{args.model} default config, {args.trials} dry-run trials, load average {os.getloadavg()[0]:.1f}")
    for name, i in (("total wall per trial", 0), ("  interpreter + imports", 1), ("  data load (cache)", 2),
                    ("  model build", 3)):
        vals = [r[i] for r in rows]
        print(f"{name:<26} median {statistics.median(vals):6.2f} s   max {max(vals):6.2f} s")
    verdict = "OK" if statistics.median(r[0] for r in rows) < 3.0 else "ABOVE TARGET"
    print(f"target < 3 s per trial: {verdict}")


if __name__ == "__main__":
    main()
