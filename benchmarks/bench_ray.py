"""Throughput of the Ray executor: N workers on N cores vs one worker, on small real trials.

    python benchmarks/bench_ray.py [--workers N] [--trials M] [--slice-users U] [--max-epochs E]
                                   [--ray-address ADDR]

Starts a local Ray instance with N CPUs (its temp dir under the system temp dir, removed at the
end) unless --ray-address is given, then runs M identical small SASRec trials (1 CPU / 1 torch
thread each, different seeds) twice: one at a time, and N at a time. Target: N workers give at
least 0.8 x N times the trials per hour of one worker. Prints both rates, the ratio, the same
measurement with the local executor (a low ratio for both means the cores were busy with other
work, not Ray overhead) and the load average.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time

from virtualmle.search.executor import LocalExecutor, TrialSpec
from virtualmle.search.ray_executor import RayExecutor


def _specs(tmp: str, tag: str, n: int, args: argparse.Namespace) -> list[TrialSpec]:
    config = {"model": "sasrec", "hidden": 32, "max_len": 50, "negatives": 16, "batch_size": 256,
              "max_epochs": args.max_epochs, "patience": 0}
    return [TrialSpec(number=i, data=args.data, config={**config, "seed": i}, trial_dir=f"{tmp}/{tag}{i}",
                      slice_users=args.slice_users, device="cpu") for i in range(n)]


def _rate(executor: RayExecutor | LocalExecutor, specs: list[TrialSpec], at_once: int) -> tuple[float, float]:
    """Trials per hour running ``at_once`` trials at a time; also the mean trial seconds."""
    t0 = time.monotonic()
    outs = []
    for i in range(0, len(specs), at_once):
        futures = [executor.submit(s) for s in specs[i:i + at_once]]
        outs += [f.result() for f in futures]
    wall = time.monotonic() - t0
    bad = [o for o in outs if o.outcome.value != "complete"]
    if bad:
        raise SystemExit(f"trial {bad[0].number}: {bad[0].outcome.value}: {bad[0].error}")
    return len(outs) / wall * 3600, sum(o.seconds for o in outs) / len(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cores = len(os.sched_getaffinity(0))
    ap.add_argument("--workers", type=int, default=cores, help=f"N (default: the cores here, {cores})")
    ap.add_argument("--trials", type=int, default=None, help="M trials per measurement (default 3 x N)")
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--slice-users", type=int, default=2000)
    ap.add_argument("--max-epochs", type=int, default=2)
    ap.add_argument("--ray-address", default=None)
    ap.add_argument("--no-local", action="store_true",
                    help="skip the same measurement with the local executor (it tells Ray's overhead "
                         "apart from a busy machine)")
    args = ap.parse_args()
    n = args.workers
    m = args.trials or 3 * n
    os.environ.setdefault("VIRTUALMLE_DATA_DIR", "/work/shared/data")
    if args.ray_address is None:
        import ray

        # A local instance with exactly N CPUs, so N one-CPU trials fill it.
        ray_tmp = tempfile.mkdtemp(prefix="virtualmle-ray-bench-")
        ray.init(num_cpus=n, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _temp_dir=ray_tmp)
    executor = RayExecutor(n, address=args.ray_address, device="cpu", cpus_per_trial=1)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        executor.run(_specs(tmp, "warm", 1, args)[0])  # parse cache, OS file cache, Ray worker pool
        one, one_s = _rate(executor, _specs(tmp, "one", m, args), 1)
        many, many_s = _rate(executor, _specs(tmp, "many", m, args), n)
        local_one = local_many = None
        if not args.no_local:
            local = LocalExecutor(n, device="cpu", threads=1)
            local_one, _ = _rate(local, _specs(tmp, "lone", m, args), 1)
            local_many, _ = _rate(local, _specs(tmp, "lmany", m, args), n)
            local.shutdown()
    load1 = os.getloadavg()
    executor.close()
    if args.ray_address is None:
        import ray

        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    ratio = many / (n * one)
    print(f"Ray executor throughput, {args.data} {args.slice_users} users, SASRec hidden 32, "
          f"{args.max_epochs} epochs, {m} trials per measurement, 1 CPU per trial, {n} worker(s) on {n} CPU(s)")
    print(f"1 worker : {one:8.1f} trials/hour   (mean trial {one_s:5.1f} s)")
    print(f"{n} workers: {many:8.1f} trials/hour   (mean trial {many_s:5.1f} s)")
    print(f"ratio {many:.1f} / ({n} x {one:.1f}) = {ratio:.2f}   target >= 0.80: {'OK' if ratio >= 0.8 else 'BELOW TARGET'}")
    if local_one:
        print(f"local executor, same trials: 1 worker {local_one:.1f}, {n} workers {local_many:.1f} trials/hour, "
              f"ratio {local_many / (n * local_one):.2f}")
    print(f"load average (1 min) {load0[0]:.1f} at start, {load1[0]:.1f} at end, on {cores} cores")


if __name__ == "__main__":
    main()
