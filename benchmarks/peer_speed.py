"""Seconds per training epoch: our SASRec against RecBole's SASRec, same data and settings, one run.

    VIRTUALMLE_DATA_DIR=/work/shared/data python benchmarks/peer_speed.py [--slice-users 5000] [--epochs 1]

Settings shared by both (RecBole's SASRec defaults): hidden 64, 2 blocks, 2 heads, feed-forward 256,
dropout 0.5, max_len 50, full softmax cross-entropy over all items, Adam lr 1e-3, batch 256,
leave-one-out split, full-ranking validation, the same torch thread count.

RecBole is not installed into the project's venv (it needs setuptools < 70, numpy < 2, pandas < 2.3):
it runs in its own venv, by default /tmp/recbole-venv:

    python3.11 -m venv /tmp/recbole-venv
    /tmp/recbole-venv/bin/pip install torch==2.13.0
    /tmp/recbole-venv/bin/pip install recbole==1.2.1 "setuptools<70" "numpy<2" "pandas<2.3"

The Beauty sequences are written to RecBole's atomic ``.inter`` format in a temp dir (the position
in the sequence is the timestamp, so RecBole's time-ordered leave-one-out split is ours). Note what
an "epoch" is: ours is one pass over the training sequences, supervising every position in one
forward pass; RecBole's SASRec expands every prefix of every sequence into its own training sample
(as its data pipeline does), so one of its epochs does more forward passes over the same data.
If RecBole fails to import or run, the script prints its error and the exit status.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RECBOLE_DRIVER = r'''
import json, os, sys, time
import torch
torch.set_num_threads(int(os.environ["PEER_THREADS"]))
from recbole.config import Config
from recbole.data import create_dataset, data_preparation
from recbole.model.sequential_recommender import SASRec
from recbole.trainer import Trainer
from recbole.utils import init_seed
cfg = {
    "data_path": sys.argv[1], "dataset": "beauty", "checkpoint_dir": sys.argv[2],
    "USER_ID_FIELD": "user_id", "ITEM_ID_FIELD": "item_id", "TIME_FIELD": "timestamp",
    "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
    "MAX_ITEM_LIST_LENGTH": 50, "hidden_size": 64, "n_layers": 2, "n_heads": 2, "inner_size": 256,
    "hidden_dropout_prob": 0.5, "attn_dropout_prob": 0.5, "loss_type": "CE", "learning_rate": 1e-3,
    "train_batch_size": 256, "eval_batch_size": 1024, "epochs": int(sys.argv[3]), "train_neg_sample_args": None,
    "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["NDCG", "Hit"], "topk": [10], "valid_metric": "NDCG@10", "device": "cpu", "use_gpu": False,
    "show_progress": False, "seed": 0, "reproducibility": True, "log_wandb": False, "save_dataset": False,
    "save_dataloaders": False, "user_inter_num_interval": "[0,inf)", "item_inter_num_interval": "[0,inf)",
}
config = Config(model="SASRec", dataset="beauty", config_dict=cfg)
init_seed(config["seed"], config["reproducibility"])
dataset = create_dataset(config)
train_data, valid_data, test_data = data_preparation(config, dataset)
model = SASRec(config, train_data.dataset)
trainer = Trainer(config, model)
epochs, evals = [], []
for e in range(config["epochs"]):
    t = time.perf_counter(); loss = trainer._train_epoch(train_data, e, show_progress=False)
    epochs.append(time.perf_counter() - t)
    t = time.perf_counter(); res = trainer.evaluate(valid_data, load_best_model=False, show_progress=False)
    evals.append(time.perf_counter() - t)
print("RESULT " + json.dumps({"train_epoch_s": epochs, "valid_s": evals, "valid": {k: float(v) for k, v in dict(res).items()},
                              "train_samples": len(train_data.dataset), "items": dataset.item_num - 1,
                              "users": dataset.user_num - 1, "torch": torch.__version__}))
'''


def _load_avg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def ours(data, threads: int, epochs: int) -> dict:
    import torch

    from virtualmle.training import TrainConfig, train

    torch.set_num_threads(threads)
    cfg = TrainConfig(model="sasrec", hidden=64, blocks=2, heads=2, dropout=0.5, attn_dropout=0.5, max_len=50,
                      loss="softmax", lr=1e-3, batch_size=256, max_epochs=epochs, patience=epochs + 1, seed=0)
    t = time.perf_counter()
    res = train(data, cfg)
    return {"epoch_s": [e.seconds for e in res.epochs], "total_s": time.perf_counter() - t,
            "valid": res.valid, "torch": torch.__version__}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slice-users", type=int, default=5000, help="first N Beauty users (0: all); default 5000")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--recbole-python", default="/tmp/recbole-venv/bin/python")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    args = ap.parse_args(argv)

    from virtualmle.data import load_dataset

    data = load_dataset("beauty", slice_users=args.slice_users or None)
    print(f"data: {data.name}, slice_users={args.slice_users or 'all'}; load average before: {_load_avg()}")
    out: dict = {"slice_users": args.slice_users, "threads": args.threads, "epochs": args.epochs,
                 "load_before": _load_avg()}
    r = ours(data, args.threads, args.epochs)
    out["ours"] = r
    print(f"ours   : {', '.join(f'{s:.1f}' for s in r['epoch_s'])} s per epoch (training + full-ranking validation), "
          f"valid ndcg@10 {r['valid']['ndcg@10']:.4f}; load average {_load_avg()}")

    with tempfile.TemporaryDirectory(prefix="peer_speed_") as tmp:
        ddir = Path(tmp) / "beauty"
        ddir.mkdir()
        lines = ["user_id:token\titem_id:token\ttimestamp:float"]
        # Sequences exactly as ours sees them (same slice, same order); position = timestamp.
        for u, seq in enumerate(_sequences(data)):
            lines += [f"u{u}\ti{it}\t{t}" for t, it in enumerate(seq)]
        (ddir / "beauty.inter").write_text("\n".join(lines) + "\n")
        driver = Path(tmp) / "driver.py"
        driver.write_text(RECBOLE_DRIVER)
        env = {**os.environ, "PEER_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
        if not Path(args.recbole_python).exists():
            print(f"recbole: {args.recbole_python} does not exist; create the venv as in this script's docstring")
            out["recbole"] = {"error": "venv missing"}
        else:
            t = time.perf_counter()
            proc = subprocess.run([args.recbole_python, str(driver), tmp, str(Path(tmp) / "ckpt"), str(args.epochs)],
                                  capture_output=True, text=True, env=env, cwd=tmp)
            wall = time.perf_counter() - t
            result = next((json.loads(line[7:]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")), None)
            if proc.returncode != 0 or result is None:
                tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
                print(f"recbole: FAILED (exit {proc.returncode}) after {wall:.0f} s:\n{tail}")
                out["recbole"] = {"error": tail, "returncode": proc.returncode}
            else:
                out["recbole"] = {**result, "wall_s": wall}
                per = [a + b for a, b in zip(result["train_epoch_s"], result["valid_s"])]
                print(f"recbole: {', '.join(f'{s:.1f}' for s in per)} s per epoch (training "
                      f"{', '.join(f'{s:.1f}' for s in result['train_epoch_s'])} + validation "
                      f"{', '.join(f'{s:.1f}' for s in result['valid_s'])}), valid ndcg@10 "
                      f"{result['valid'].get('ndcg@10', float('nan')):.4f}, {result['train_samples']} training "
                      f"samples (every prefix), torch {result['torch']}; load average {_load_avg()}")
                ratio = sum(per) / max(1e-9, sum(r["epoch_s"]))
                out["ratio"] = ratio
                print(f"ratio  : RecBole takes {ratio:.1f}x our seconds per epoch")
    out["load_after"] = _load_avg()
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1, default=str))
    return 0


def _sequences(data) -> list[list[int]]:
    """The (sliced) dataset's full user sequences as item-id lists."""
    seqs = getattr(data, "sequences", None)
    if seqs is None:
        raise SystemExit("SequenceData has no .sequences; update _sequences() for its API")
    return [list(map(int, s)) for s in seqs]


if __name__ == "__main__":
    sys.exit(main())
