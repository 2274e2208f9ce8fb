"""`virtualmle evaluate`: recompute a saved model's validation and test metrics on a file."""

from __future__ import annotations

import argparse
from pathlib import Path

from virtualmle.cli.data_options import add_data_arguments, data_options
from virtualmle.cli.outputs import check_output_file, write_json_atomic
from virtualmle.errors import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` command."""
    p = subparsers.add_parser(
        "evaluate",
        help="recompute a saved model's leave-one-out metrics on a data file",
        description=(
            "Evaluate a saved model with the training protocol (leave-one-out, full ranking, history\n"
            "excluded): validation ranks seq[-2] given seq[:-2], test ranks seq[-1] given seq[:-1].\n"
            "On the model's own training file (same content, by sha256) the training slice is used,\n"
            "so the stored test metrics are reproduced exactly. On another file, interactions on\n"
            "items the model never saw are left out and users left with fewer than 3 are dropped."
        ),
        epilog=(
            "examples:\n"
            "  virtualmle evaluate --model model/ --data beauty\n"
            "  virtualmle evaluate --model runs/beauty-sasrec-tpe-s0/best_model --data beauty --json m.json"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=True, type=Path, metavar="DIR", help="saved model directory")
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH", help="dataset name or file")
    p.add_argument("--slice-users", type=int, default=None, metavar="N",
                   help="first N users (default: the training slice on the training file, else all)")
    p.add_argument("--device", default="auto", metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--json", dest="json_out", type=Path, default=None, metavar="FILE", help="also write the metrics as JSON")
    add_data_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load, map to the model's ids, evaluate, print."""
    if args.slice_users is not None and args.slice_users < 1:
        raise ConfigError(f"--slice-users must be at least 1, got {args.slice_users}")
    json_out = check_output_file(args.json_out, "--json") if args.json_out is not None else None
    from virtualmle.inference import load_model, read_data_for

    model = load_model(args.model, device=args.device)
    data, on_training_file = read_data_for(model, args.data, data_options(args), slice_users=args.slice_users,
                                           same_slice=True)
    mapped = model.map_data(data)
    metrics = model.evaluate(mapped.data)
    stored = model.meta.get("metrics", {}).get("test", {})
    doc = {
        **metrics,
        "users": mapped.data.num_users,
        "dropped_users": len(mapped.dropped_users),
        "unknown_interactions": mapped.unknown_interactions,
        "training_file": on_training_file,
        "stored_test": stored,
        "reproduced": bool(stored) and metrics["test"] == stored,
    }
    if json_out is not None:
        write_json_atomic(json_out, doc)
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{model.config.model} from {args.model} on {data.name}: {doc['users']} users")
    table.add_column("split")
    names = list(metrics["test"])
    for name in names:
        table.add_column(name, justify="right")
    for split in ("valid", "test"):
        table.add_row(split, *(f"{metrics[split][n]:.6f}" for n in names))
    if stored:
        table.add_row("stored test", *(f"{stored.get(n, float('nan')):.6f}" for n in names))
    console = Console()
    console.print(table)
    if mapped.dropped_users or mapped.unknown_interactions:
        console.print(f"left out: {mapped.unknown_interactions} interactions on unknown items, "
                      f"{len(mapped.dropped_users)} users with fewer than 3 known items", highlight=False)
    if stored:
        console.print("stored test metrics reproduced exactly" if doc["reproduced"] else
                      "differs from the stored test metrics (another file, slice or protocol)", highlight=False)
    return 0
