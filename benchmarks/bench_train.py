"""Speed benchmark: seconds per training epoch and per full-ranking evaluation on Beauty.

Setting of issue 2 section 7: hidden 64, 2 blocks, batch 256, max_len 50, CPU. Prints one row per
backbone / loss: median train seconds per epoch (validation excluded), median seconds to rank all
users of the validation split against all items (wall and process CPU seconds), and the process's
peak memory. On a shared machine set OMP_WAIT_POLICY=PASSIVE: OpenMP's spinning threads otherwise
make a 2-thread torch several times slower when the cores are oversubscribed.

    VIRTUALMLE_DATA_DIR=../shared/data python benchmarks/bench_train.py [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time

import torch

from virtualmle.data import load_dataset
from virtualmle.training import TrainConfig
from virtualmle.training.evaluation import build_eval_batches, evaluate
from virtualmle.training.trainer import setup_run

CASES = [
    ("sasrec", {"loss": "bce"}),
    ("sasrec", {"loss": "sampled_softmax"}),
    ("hstu", {"loss": "sampled_softmax"}),
]


def bench(data, model_name: str, overrides: dict, epochs: int, device: str) -> dict:
    cfg = TrainConfig.for_model(model_name, hidden=64, blocks=2, batch_size=256, max_len=50,
                                heads=2 if model_name == "sasrec" else 1, **overrides)
    t0 = time.perf_counter()
    run = setup_run(data, cfg, device)  # the trainer's own setup (seed 0 is TrainConfig's default)
    valid = build_eval_batches(data, "valid", cfg.max_len, device)
    prep = time.perf_counter() - t0
    model = run.model
    train_s, eval_s, train_cpu, eval_cpu = [], [], [], []
    for epoch in range(1, epochs + 1):
        t, c = time.perf_counter(), time.process_time()
        run.train_epoch(cfg, epoch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        train_s.append(time.perf_counter() - t)
        train_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        m = evaluate(model, valid)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        eval_s.append(time.perf_counter() - t)
        eval_cpu.append(time.process_time() - c)
    return {
        "case": f"{model_name} {cfg.loss}" + (f" ({cfg.negatives} neg)" if cfg.loss != "softmax" else ""),
        "prep_s": prep,
        "epoch_s": statistics.median(train_s),
        "eval_s": statistics.median(eval_s),
        "epoch_cpu": statistics.median(train_cpu),
        "eval_cpu": statistics.median(eval_cpu),
        "valid_ndcg@10": m["ndcg@10"],
        "params": model.num_params(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per case (median is reported)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    data = load_dataset(args.data)
    load_s = time.perf_counter() - t
    print(f"{args.data}: {data.num_users} users, {data.num_items} items; load {load_s:.2f}s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average {os.getloadavg()[0]:.2f}")
    # CPU seconds are reported too: on a shared machine wall time mostly measures the neighbours.
    print(f"{'case':34s} {'prep s':>7s} {'epoch s':>8s} {'eval s':>7s} {'epoch cpu':>10s} "
          f"{'eval cpu':>9s} {'params':>9s} {'valid ndcg@10':>14s}")
    for name, over in CASES:
        r = bench(data, name, over, args.epochs, args.device)
        print(f"{r['case']:34s} {r['prep_s']:7.2f} {r['epoch_s']:8.2f} {r['eval_s']:7.2f} "
              f"{r['epoch_cpu']:10.2f} {r['eval_cpu']:9.2f} "
              f"{r['params']:9d} {r['valid_ndcg@10']:14.4f}", flush=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory (process RSS): {peak:.0f} MB; load average now {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
