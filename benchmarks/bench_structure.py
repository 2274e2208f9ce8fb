"""Cost and a first look at quality of the structure switches and the train-split priors.

Trains SASRec (and HSTU's default) once per switch on a slice of a dataset, everything else at the
release defaults with hidden 64, and prints parameters, seconds per epoch (training and validation), validation and
test NDCG@10. At a small fidelity the quality columns are a smoke test of the mechanics, not a
verdict on the switch (FINDINGS.md: the low-fidelity landscape differs from full fidelity).

`--priors-only` instead ranks with the priors alone on the whole dataset: the "model" is random
noise (std 1e-3, far below any prior mass) that only breaks ties at random, since the evaluation
counts ties in the target's favour and an all-equal model would put a target without prior mass
right after the few items with some. No training, so it runs at full fidelity in seconds and
shows what each prior knows by itself.

    VIRTUALMLE_DATA_DIR=../shared/data python benchmarks/bench_structure.py \
        [--data beauty] [--slice-users 2000] [--epochs 3] [--threads 1] [--priors-only]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from virtualmle.data import SequenceData, load_dataset
from virtualmle.training import TrainConfig, metrics_from_ranks, rank_targets, train
from virtualmle.training.evaluation import build_eval_batches
from virtualmle.training.priors import ScorePriors, load_prior_tables

CASES: list[tuple[str, dict]] = [
    ("sasrec", {}),
    ("sasrec", {"ffn_mult": 4}),
    ("sasrec", {"ffn": "swiglu"}),
    ("sasrec", {"ffn": "swiglu", "ffn_mult": 4}),
    ("sasrec", {"pos_enc": "none"}),
    ("sasrec", {"pos_enc": "relative"}),
    ("sasrec", {"pos_enc": "rotary"}),
    ("sasrec", {"pos_enc": "learned+relative"}),
    ("sasrec", {"pooling": "recency_mean", "pool_k": 3}),
    ("sasrec", {"tied": True}),
    ("sasrec", {"prior_transition": 0.5}),
    ("sasrec", {"prior_cooc": 0.5}),
    ("sasrec", {"prior_pop": 0.1}),
    ("hstu", {}),
    ("hstu", {"pos_enc": "rotary"}),
    ("hstu", {"l2_norm": False}),
]


PRIOR_CASES: list[dict] = [
    {},
    {"pop": 1.0},
    {"transition": 1.0},
    {"cooc": 1.0, "recent_k": 1},
    {"cooc": 1.0, "recent_k": 5, "norm": "count"},
    {"cooc": 1.0, "recent_k": 5, "norm": "sqrt"},
    {"transition": 1.0, "cooc": 1.0, "recent_k": 5},
    {"transition": 1.0, "cooc": 1.0, "pop": 0.1, "recent_k": 5},
]


def priors_only(data: SequenceData, window: int) -> None:
    """Metrics of the priors alone: random-noise model scores only break ties at random."""
    tables = load_prior_tables(data, window)
    splits = {s: build_eval_batches(data, s, 50) for s in ("valid", "test")}
    print(f"{data!r}, prior_window {window}, load average {os.getloadavg()[0]:.1f}")
    print("| priors | valid hr@10 | valid ndcg@10 | test hr@10 | test ndcg@10 | eval s |")
    print("|---|---|---|---|---|---|")
    for case in PRIOR_CASES:
        hook = ScorePriors(tables, **case)
        row, start = [], time.perf_counter()
        gen = torch.Generator().manual_seed(0)
        for batches in splits.values():
            ranks = []
            for b in batches:
                noise = torch.randn(len(b.targets), data.num_items + 1, generator=gen) * 1e-3
                scores = hook(noise, b.items)
                ranks.append(rank_targets(scores, b.targets, b.history_rows, b.history_items))
            m = metrics_from_ranks(torch.cat(ranks))
            row += [m["hr@10"], m["ndcg@10"]]
        label = ", ".join(f"{k}={v}" for k, v in case.items())
        print(f"| {label} | " + " | ".join(f"{x:.4f}" for x in row) + f" | {time.perf_counter() - start:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--slice-users", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--priors-only", action="store_true", help="rank with the priors alone, full data")
    ap.add_argument("--window", type=int, default=3, help="prior_window for --priors-only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.priors_only:
        priors_only(load_dataset(args.data), args.window)
        return
    data = load_dataset(args.data, slice_users=args.slice_users or None)
    print(f"{data!r}, {args.epochs} epochs, {args.threads} thread(s), load average {os.getloadavg()[0]:.1f}")
    print("| model | switch | params | s/epoch (train + valid) | valid ndcg@10 | test ndcg@10 |")
    print("|---|---|---|---|---|---|")
    for model, switch in CASES:
        config = TrainConfig.for_model(model, hidden=64, max_epochs=args.epochs, patience=0, **switch)
        result = train(data, config)
        # Epoch seconds include validation, which is where the priors cost anything.
        per_epoch = sum(e.seconds for e in result.epochs) / len(result.epochs)
        label = ", ".join(f"{k}={v}" for k, v in switch.items()) or "release default"
        print(f"| {model} | {label} | {result.num_params:,} | {per_epoch:.2f} | "
              f"{result.valid['ndcg@10']:.4f} | {result.test['ndcg@10']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
