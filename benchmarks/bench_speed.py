"""Speed levers (issue 13 section 3): seconds per training epoch and per validation, per recipe.

For each recipe of the full-fidelity table (the release default, sampled softmax 256 with a 4x
feed-forward, the full cross-entropy recipe that reaches Beauty's published number) and each lever,
it trains `--epochs` epochs through the trainer's own epoch function and validates once, on the
whole dataset, and prints the median seconds per epoch (wall and process CPU), the validation
seconds, the mean training loss (a lever that changes the arithmetic must leave it where it was)
and what a whole trial of that recipe costs with that lever:

    trial s = epochs x epoch s + validations x eval s     (epochs and validations of the recipe's
                                                          full-fidelity run, docs/full_fidelity.md)

Levers: `precision=bf16` (bfloat16 matmuls; evaluation stays float32), 2 threads instead of 1,
`torch.compile` of the encoder, the full softmax's chunk size, and validation every k epochs
(computed from the measured seconds: it changes how often `eval s` is paid, nothing else).

    VIRTUALMLE_DATA_DIR=../shared/data python benchmarks/bench_speed.py [--data beauty] [--epochs 2]
        [--recipes release,ss256_ffn4,full_ce] [--levers fp32,bf16,threads2,compile]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from virtualmle.data import load_dataset
from virtualmle.training import TrainConfig
from virtualmle.training.evaluation import build_eval_batches, evaluate, resolve_eval_mask
from virtualmle.training.trainer import setup_run

sys.path.insert(0, str(Path(__file__).parent))
from full_fidelity import RECIPES  # noqa: E402  (the recipes of the full-fidelity table)

# Epochs and validations of one whole trial at full fidelity (Beauty, docs/full_fidelity.md):
# the release default runs its 20 epochs validating each; full_ce early-stopped at epoch 175 of
# 200 validating every 5; ss256_ffn4 stopped at epoch 46, validating every epoch.
TRIAL_SHAPE = {"release": (20, 20), "ss256_ffn4": (46, 46), "full_ce": (175, 35)}
LEVERS = {
    "fp32": ({}, 1, False),
    "bf16": ({"precision": "bf16"}, 1, False),
    "threads2": ({}, 2, False),
    "bf16+threads2": ({"precision": "bf16"}, 2, False),
    "compile": ({}, 1, True),
    "chunk256": ({"ce_chunk": 256}, 1, False),
    "chunk2048": ({"ce_chunk": 2048}, 1, False),
}


def measure(data: Any, recipe: str, lever: str, epochs: int) -> dict[str, Any]:
    overrides, threads, compiled = LEVERS[lever]
    torch.set_num_threads(threads)
    config = TrainConfig.for_model("sasrec", **{**RECIPES[recipe], **overrides})
    run = setup_run(data, config)
    valid = build_eval_batches(data, "valid", config.max_len, "cpu", resolve_eval_mask(config.eval_mask, data))
    model = run.model
    compile_s = 0.0
    if compiled:
        t = time.perf_counter()
        model.encode = torch.compile(model.encode, dynamic=True)
        compile_s = time.perf_counter() - t  # lazy: the real cost lands in the first epoch
    walls, cpus, losses = [], [], []
    for epoch in range(1, epochs + 1):
        t, c = time.perf_counter(), time.process_time()
        losses.append(run.train_epoch(config, epoch))
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    t = time.perf_counter()
    metrics = evaluate(model, valid)
    eval_s = time.perf_counter() - t
    # The first epoch pays compilation (and warm-up): with more than one, the rest are the speed.
    steady = walls[1:] or walls
    epoch_s = statistics.median(steady)
    n_epochs, n_evals = TRIAL_SHAPE.get(recipe, (config.max_epochs, config.max_epochs))
    return {
        "recipe": recipe, "lever": lever, "threads": threads, "epoch_s": epoch_s,
        "epoch_cpu": statistics.median(cpus[1:] or cpus), "first_epoch_s": walls[0] + compile_s,
        "eval_s": eval_s, "loss": losses[-1], "valid_ndcg@10": metrics["ndcg@10"],
        "trial_s": n_epochs * epoch_s + n_evals * eval_s, "trial_shape": (n_epochs, n_evals),
        "load": os.getloadavg()[0],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--epochs", type=int, default=2, help="epochs per case (the first is warm-up when > 1)")
    ap.add_argument("--recipes", default="release,ss256_ffn4,full_ce")
    ap.add_argument("--levers", default="fp32,bf16,threads2,bf16+threads2,compile",
                    help=f"comma list of {', '.join(LEVERS)}")
    args = ap.parse_args()
    unknown = [x for x in args.levers.split(",") if x not in LEVERS] + \
              [r for r in args.recipes.split(",") if r not in RECIPES]
    if unknown:
        sys.exit(f"error: unknown lever or recipe: {', '.join(unknown)}")
    data = load_dataset(args.data)
    print(f"{args.data}: {data.num_users} users, {data.num_items} items; torch {torch.__version__}; "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'recipe':11s} {'lever':14s} {'epoch s':>8s} {'epoch cpu':>9s} {'1st epoch':>9s} {'eval s':>7s} "
          f"{'loss':>8s} {'trial s (epochs, evals)':>24s} {'load':>5s}")
    for recipe in args.recipes.split(","):
        for lever in args.levers.split(","):
            r = measure(data, recipe, lever, args.epochs)
            shape = f"({r['trial_shape'][0]}, {r['trial_shape'][1]})"
            print(f"{recipe:11s} {lever:14s} {r['epoch_s']:8.2f} {r['epoch_cpu']:9.2f} {r['first_epoch_s']:9.2f} "
                  f"{r['eval_s']:7.2f} {r['loss']:8.4f} {r['trial_s']:15.0f} {shape:>8s} {r['load']:5.2f}", flush=True)


if __name__ == "__main__":
    main()
