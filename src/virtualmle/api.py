"""The Python API: a notebook's three lines.

```python
import virtualmle
study, best = virtualmle.tune(data="beauty", model="sasrec", trials=10, storage="sqlite:///studies.db")
recs = virtualmle.load_model(best).recommend({"u1": ["12", "7", "30"]}, k=10)
```

`tune` runs the VirtualMLE agent and `search` a classic method, both through the same search
loop as the CLI (each trial in its own process); both return the Optuna study and the path of
the best trial's saved model (None when no trial completed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from virtualmle.inference import LoadedModel, load_model
from virtualmle.search.loop import DEFAULT_TRIALS

if TYPE_CHECKING:
    import optuna

__all__ = ["LoadedModel", "load_model", "search", "tune"]


def search(
    data: str,
    model: str = "sasrec",
    *,
    method: str = "tpe",
    trials: int = DEFAULT_TRIALS,
    storage: str | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    keep_models: int = 1,
    fmt: str | None = None,
    columns: dict[str, str | None] | None = None,
    **options: Any,
) -> tuple[optuna.Study, Path | None]:
    """Run (or resume) a search with a classic method (grid, random, tpe, default).

    Args:
        data: dataset name or file; `fmt` / `columns` as in `virtualmle.data.load_dataset`.
        model: ``sasrec`` or ``hstu``.
        method: a registered method name.
        trials: budget (trials of the study, earlier runs included).
        storage: Optuna storage URL (default ``sqlite:///virtualmle.db``).
        run_dir: trial files and the kept models (default ``runs/<study>``).
        keep_models: how many of the best trials' models to keep (the best is ``best_model``).
        **options: more `SearchOptions` fields (``max_epochs``, ``slice_users``, ``workers``, ...).
    Returns:
        (study, best model directory or None).
    """
    from virtualmle.methods import get_method
    from virtualmle.search.space import load_space

    space = load_space(model, options.pop("space", None))
    return _run(get_method(method, space=space, seed=seed), data, model, trials, storage, seed, run_dir,
                keep_models, fmt, columns, space, options)


def tune(
    data: str,
    model: str = "sasrec",
    *,
    trials: int = DEFAULT_TRIALS,
    storage: str | None = None,
    seed: int = 0,
    run_dir: str | Path | None = None,
    keep_models: int = 1,
    llm: Any = None,
    fmt: str | None = None,
    columns: dict[str, str | None] | None = None,
    **options: Any,
) -> tuple[optuna.Study, Path | None]:
    """Tune with the VirtualMLE agent (default settings of `virtualmle tune`).

    `llm` is an LLM client or spec (default: ``$VIRTUALMLE_LLM`` or the embedded model); other
    arguments as `search`.
    """
    from virtualmle.agent import VirtualMLEAgent
    from virtualmle.search.space import load_space

    space = load_space(model, options.pop("space", None))
    # A spec or None is turned into a client by the agent on its first LLM call, in the run dir.
    agent = VirtualMLEAgent(space=space, seed=seed, llm=llm)
    return _run(agent, data, model, trials, storage, seed, run_dir, keep_models, fmt, columns, space, options)


def _run(method, data, model, trials, storage, seed, run_dir, keep_models, fmt, columns, space, options):  # noqa: ANN001, ANN202
    import optuna

    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.storage import open_storage

    data_options = {k: v for k, v in (("fmt", fmt), ("columns", columns)) if v}
    opts = SearchOptions(data=data, model=model, trials=trials, seed=seed, space=space,
                         run_dir=Path(run_dir) if run_dir else None, keep_models=keep_models,
                         data_options=data_options, **options)
    summary = run_search(method, opts, storage=storage)
    study = optuna.load_study(study_name=summary.study_name, storage=open_storage(storage))
    best = summary.best_model
    return study, Path(best) if best else None
