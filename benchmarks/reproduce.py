"""Reproduction: SASRec with the S3-Rec settings and PopRec on Beauty, against published numbers.

REFERENCE.md section 3: SASRec (BCE, 1 negative per position, d64, 2 blocks, 2 heads, dropout
0.5, lr 1e-3, batch 256, max_len 50) reached test HR@10 0.0605 / NDCG@10 0.0318 on Beauty in the
S3-Rec repository; PopRec 0.0152 / 0.0068. The S3-Rec SASRec is a BERT-style (post-LN) encoder
with the item embedding reused for scoring and no weight decay, so this run uses
norm_first=false, tied=true, weight_decay=0; like S3-Rec it early-stops on validation NDCG@20 with
patience 10. Training is also capped by wall time (`--wall-minutes`); a capped run reports the
best-validation epoch reached so far.

    VIRTUALMLE_DATA_DIR=../shared/data python benchmarks/reproduce.py [--wall-minutes 45]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
from torch import nn

from virtualmle.data import SequenceData, load_dataset
from virtualmle.training import EpochLog, TrainConfig, train
from virtualmle.training.evaluation import build_eval_batches, evaluate

PUBLISHED = {
    "SASRec (S3-Rec repo)": {"hr@5": 0.0387, "ndcg@5": 0.0249, "hr@10": 0.0605, "ndcg@10": 0.0318,
                             "hr@20": 0.0902, "ndcg@20": 0.0394},
    "PopRec (S3-Rec repo)": {"hr@10": 0.0152, "ndcg@10": 0.0068},
}

S3REC = dict(
    model="sasrec", loss="bce", negatives=1, hidden=64, blocks=2, heads=2, dropout=0.5,
    attn_dropout=0.5, lr=1e-3, batch_size=256, max_len=50, norm_first=False, tied=True,
    weight_decay=0.0, grad_clip=0.0, metric="ndcg@20", patience=10, max_epochs=200,
)


class PopRec(nn.Module):
    """Scores every item by its interaction count, behind the models' scoring interface.

    So it goes through the same `evaluate` (history masking, ranks, metrics) as the backbones.
    Counts come from each sequence without its last `cut` items: 2 for validation, 1 for test
    (everything observed before the test step); `cut=0` also counts the test targets, which is
    a leak, but reproduces the published PopRec numbers exactly. A tiny seeded jitter breaks the
    many count ties at random instead of in the target's favour.
    """

    def __init__(self, data: SequenceData, cut: int, seed: int = 0) -> None:
        super().__init__()
        counts = np.zeros(data.num_items + 1, dtype=np.float64)
        for s in data.sequences:
            np.add.at(counts, s[: len(s) - cut], 1.0)
        jitter = np.random.default_rng(seed).random(len(counts)) * 1e-3
        self.register_buffer("pop", torch.tensor(counts + jitter, dtype=torch.float64))

    def encode(self, items: torch.Tensor, timestamps: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ones(*items.shape, 1, dtype=torch.float64, device=items.device)

    def output_embeddings(self) -> torch.Tensor:
        return self.pop[:, None]

    def score_all(self, states: torch.Tensor, table: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
        return torch.mm(states, table.T, out=out) if out is not None else states @ table.T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--wall-minutes", type=float, default=45.0, help="stop training after this long")
    ap.add_argument("--max-epochs", type=int, default=S3REC["max_epochs"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--output", default=None, help="write the SASRec result JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_dataset(args.data)
    print(f"{args.data}: {data.num_users} users, {data.num_items} items, "
          f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}", flush=True)

    test_batches = build_eval_batches(data, "test", 50)
    pop_valid = evaluate(PopRec(data, cut=2), build_eval_batches(data, "valid", 50))
    pop_test = evaluate(PopRec(data, cut=1), test_batches)
    pop_leaky = evaluate(PopRec(data, cut=0), test_batches)

    cfg = TrainConfig(**{**S3REC, "max_epochs": args.max_epochs, "seed": args.seed})
    deadline = time.monotonic() + args.wall_minutes * 60

    def log(e: EpochLog) -> bool:
        print(f"epoch {e.epoch:3d}  loss {e.train_loss:.4f}  valid hr@10 {e.valid['hr@10']:.4f} "
              f"ndcg@10 {e.valid['ndcg@10']:.4f} ndcg@20 {e.valid['ndcg@20']:.4f}  "
              f"{e.seconds:.1f}s{' *' if e.is_best else ''}", flush=True)
        return time.monotonic() > deadline  # wall-time cap (reported as "pruned")

    result = train(data, cfg, on_epoch=log)
    doc = result.to_json()
    doc["poprec"] = {"valid": pop_valid, "test": pop_test, "test_counts_incl_test": pop_leaky}
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=2)

    stop = "wall-time cap" if result.stopped == "pruned" else result.stopped
    print(f"\nSASRec stopped: {stop} after {len(result.epochs)} epochs ({result.seconds / 60:.1f} min), "
          f"best epoch {result.best_epoch}")
    print(f"{'':26s} {'HR@5':>7s} {'NDCG@5':>7s} {'HR@10':>7s} {'NDCG@10':>7s} {'HR@20':>7s} {'NDCG@20':>7s}")
    rows = [("SASRec (ours, test)", result.test), ("SASRec (S3-Rec repo)", PUBLISHED["SASRec (S3-Rec repo)"]),
            ("PopRec (ours, test)", pop_test), ("PopRec (counts incl. test)", pop_leaky),
            ("PopRec (S3-Rec repo)", PUBLISHED["PopRec (S3-Rec repo)"])]
    for name, m in rows:
        cells = " ".join(f"{m[k]:7.4f}" if k in m else f"{'-':>7s}"
                         for k in ("hr@5", "ndcg@5", "hr@10", "ndcg@10", "hr@20", "ndcg@20"))
        print(f"{name:26s} {cells}")


if __name__ == "__main__":
    main()
