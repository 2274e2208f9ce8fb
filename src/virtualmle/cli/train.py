"""`virtualmle train`: train one configuration on one dataset and write the JSON result."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from virtualmle.cli.data_options import add_data_arguments, data_options
from virtualmle.cli.outputs import check_model_dir, check_output_file, write_json_atomic
from virtualmle.errors import ConfigError
from virtualmle.training.config import PARAM_HELP, PARAM_NAMES, TrainConfig, default_params
from virtualmle.training.params_text import coerce_params


def _epilog() -> str:
    sas, hstu = default_params("sasrec"), default_params("hstu")
    width = max(len(n) for n in PARAM_NAMES)
    lines = [
        "parameters (--set NAME=VALUE, or keys of --config), defaults for sasrec | hstu:",
    ]
    for name in PARAM_NAMES:
        a, b = sas[name], hstu[name]
        default = f"{a}" + ("" if a == b else f" | {b}")
        lines.append(f"  {name:<{width}}  {default:<17}  {PARAM_HELP[name]}")
    lines += [
        "  (loss=bce without negatives= uses 1 negative per position, as the original SASRec)",
        "",
        "precedence: model defaults < --config < --max-epochs/--seed < --set",
        "",
        "examples:",
        "  virtualmle train --data beauty --model sasrec --set lr=0.001 --set hidden=64 \\",
        "      --max-epochs 50 --seed 0 --output result.json",
        "  virtualmle train --data beauty --model hstu --slice-users 2000 --max-epochs 3",
        "  virtualmle train --data beauty --config trial.yaml --output result.json",
        "  virtualmle train --data ml-100k/u.data --slice-users 500 --save model/   (then: virtualmle recommend)",
        "",
        "the result JSON has: config, profile, num_params, epochs, best_epoch, valid, test,",
        "seconds, peak_memory_mb, stopped. valid/test map hr@5/10/20, ndcg@5/10/20, mrr to",
        "numbers; model selection uses validation only, test is computed once for the best epoch.",
        "datasets are looked up in $VIRTUALMLE_DATA_DIR (default ~/.cache/virtualmle/data).",
    ]
    return "\n".join(lines)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` command."""
    p = subparsers.add_parser(
        "train",
        help="train one SASRec/HSTU configuration and report validation and test metrics",
        description=(
            "Train one backbone configuration on one dataset with the leave-one-out protocol "
            "(train on seq[:-2], validate on seq[-2], test on seq[-1], full ranking over all "
            "items, history excluded except the target). Early stopping and the best epoch use "
            "the validation metric only; test metrics are computed once for the best epoch."
        ),
        epilog=_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="NAME_OR_PATH",
                   help="dataset name (beauty, baby, pet_supplies, sports, toys) or a file path")
    p.add_argument("--model", choices=("sasrec", "hstu"), default=None,
                   help="backbone (default: the config file's, else sasrec)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="NAME=VALUE",
                   help="set one parameter (repeatable); names and defaults are listed below")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="YAML or JSON file with a flat mapping of parameters")
    p.add_argument("--max-epochs", type=int, default=None, metavar="N",
                   help="shortcut for --set max_epochs=N")
    p.add_argument("--seed", type=int, default=None, metavar="N", help="shortcut for --set seed=N")
    p.add_argument("--output", type=Path, default=None, metavar="FILE",
                   help="write the result JSON here (atomically: never half-written; the directory must exist)")
    p.add_argument("--save", type=Path, default=None, metavar="DIR",
                   help="save the best-validation model here (weights, config, id maps, metrics; "
                        "docs/training.md); use it with `virtualmle recommend` / `evaluate`")
    p.add_argument("--slice-users", type=int, default=None, metavar="N",
                   help="use only the first N users (quick runs and tests)")
    p.add_argument("--device", default="auto", metavar="DEVICE",
                   help="auto, cpu, cuda or cuda:N (default auto: cuda when available)")
    p.add_argument("--threads", type=int, default=None, metavar="N",
                   help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quiet", action="store_true", help="no progress display and no table")
    add_data_arguments(p)
    p.set_defaults(func=run)


def _read_config_file(path: Path) -> dict[str, Any]:
    """A flat parameter mapping from a .json file or a YAML file (any other suffix)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc})") from None
    is_json = path.suffix.lower() == ".json"
    try:
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {first}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of parameter names to values")
    return data


def _parse_overrides(items: list[str]) -> dict[str, Any]:
    raw: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"--set expects NAME=VALUE, got {item!r}")
        raw[name.strip()] = value
    return coerce_params(raw)


def resolve_config(args: argparse.Namespace) -> TrainConfig:
    """Merge model defaults, --config, shortcuts and --set into a validated TrainConfig."""
    params: dict[str, Any] = _read_config_file(args.config) if args.config else {}
    if args.model is not None:
        params["model"] = args.model
    if args.max_epochs is not None:
        params["max_epochs"] = args.max_epochs
    if args.seed is not None:
        params["seed"] = args.seed
    params.update(_parse_overrides(args.overrides))
    return TrainConfig(**params)


def _print_table(doc: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{doc['config']['model']} on {doc['profile'].get('name', 'data')}: "
                        f"best epoch {doc['best_epoch']} ({doc['stopped']}), "
                        f"{doc['num_params']:,} params, {doc['seconds']:.1f}s")
    table.add_column("split")
    metrics = list(doc["test"])
    for m in metrics:
        table.add_column(m, justify="right")
    for split in ("valid", "test"):
        table.add_row(split, *(f"{doc[split][m]:.4f}" for m in metrics))
    Console().print(table)


def run(args: argparse.Namespace) -> int:
    """Entry point of `virtualmle train`."""
    config = resolve_config(args)  # validate before touching the data
    if args.slice_users is not None and args.slice_users < 1:
        raise ConfigError(f"--slice-users must be at least 1, got {args.slice_users}")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads must be at least 1, got {args.threads}")
    # Outputs are checked before training: a long run must not end in an unwritable path.
    output = check_output_file(args.output) if args.output is not None else None
    save = check_model_dir(args.save) if args.save is not None else None
    options = data_options(args)

    from virtualmle.data import load_dataset

    data = load_dataset(args.data, slice_users=args.slice_users, **options)  # a bad file fails before torch loads

    import torch

    from virtualmle.training.device import resolve_device
    from virtualmle.training.trainer import train

    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = train(data, config, device=device, progress=not args.quiet)
    doc = result.to_json()
    doc["data"] = {"spec": args.data, "name": data.name, "slice_users": args.slice_users, "options": options}
    if save is not None:
        from virtualmle.models.artifact import save_model
        from virtualmle.training.priors import prior_arrays

        save_model(save, result.model, config=doc["config"], data=data,
                   eval_mask=result.eval_mask, priors=prior_arrays(data, result.config),
                   data_info={"spec": args.data, "slice_users": args.slice_users, "options": options},
                   metrics={k: doc[k] for k in ("valid", "test", "best_epoch", "stopped")})
        doc["model_dir"] = str(save)
    if output is not None:
        write_json_atomic(output, doc)
    if not args.quiet:
        _print_table(doc)
    return 0
