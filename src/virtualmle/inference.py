"""Using a saved model: load it, recommend top-K items in the file's own ids, evaluate it.

`load_model(DIR)` reads a model directory (`virtualmle.models.artifact`) and returns a
`LoadedModel`. Item ids cross this boundary as the strings of the user's file; inside, the
model's ids 1..num_items are used. Items a model never saw cannot be scored: they are left out
of histories (counted), and a test target the model never saw is dropped with its user.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from virtualmle.data.dataset import SequenceData
from virtualmle.errors import ConfigError
from virtualmle.models import SequentialRecommender, build_model
from virtualmle.models.artifact import load_priors, load_weights
from virtualmle.training.config import TrainConfig
from virtualmle.training.evaluation import ScoreAdjust

RECOMMEND_BATCH = 1024  # users per scoring batch


@dataclass
class MappedData:
    """A dataset re-expressed in a model's item ids, with what had to be left out."""

    data: SequenceData
    unknown_interactions: int = 0  # interactions on items the model never saw (left out)
    dropped_users: list[str] = field(default_factory=list)  # fewer than 3 known items left


@dataclass
class LoadedModel:
    """A saved model ready to use.

    Attributes:
        module: the torch module (`SequentialRecommender`), in eval mode on `device`.
        config: the trial configuration it was trained with.
        meta: model.json (data fingerprint, metrics, versions, ...).
        item_ids: the file's id of model item k at index k - 1.
        user_ids: the training users, in model order.
        device: where `module` lives.
        priors: the train-split score priors the config weights (`training.priors`), or None;
            recommendations and evaluation rank with them, as the trial's metrics did.
    """

    module: SequentialRecommender
    config: TrainConfig
    meta: dict[str, Any]
    item_ids: list[str]
    user_ids: list[str]
    device: torch.device
    priors: ScoreAdjust | None = None
    _index: dict[str, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._index = {item: k for k, item in enumerate(self.item_ids, 1)}

    @property
    def max_len(self) -> int:
        return int(self.config.max_len)

    @property
    def uses_time(self) -> bool:
        """Whether the model was trained with timestamps (HSTU's time-gap biases)."""
        return bool(self.meta["data"].get("has_timestamps"))

    @property
    def excludes_history(self) -> bool:
        """Whether rankings leave the user's history out (the model's evaluation mask; `none`
        keeps it, for data where users repeat items)."""
        return self.meta.get("protocol", {}).get("eval_mask", "history") != "none"

    def item_index(self, item: Any) -> int:
        """The model's id of a file item id (0: the model never saw it)."""
        return self._index.get(str(item), 0)

    # -- recommending -------------------------------------------------------------------------
    def recommend(
        self,
        histories: Mapping[Any, Sequence[Any]] | Sequence[Sequence[Any]],
        k: int = 10,
        *,
        timestamps: Mapping[Any, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    ) -> dict[Any, list[str]] | list[list[str]]:
        """Top-`k` items per history, in the file's ids, history items excluded.

        Args:
            histories: item ids in time order, per user: a mapping user -> items (the result is
                then a mapping too) or a list of lists. Items the model never saw are skipped; a
                history with no known item gets an empty list.
            k: items per user.
            timestamps: unix seconds aligned with `histories` (HSTU uses time gaps), optional.
        """
        keys = list(histories.keys()) if isinstance(histories, Mapping) else None
        seqs = [histories[key] for key in keys] if keys is not None else list(histories)
        times = None
        if timestamps is not None:
            times = [timestamps[key] for key in keys] if keys is not None else list(timestamps)
        mapped, mapped_times = [], []
        for i, seq in enumerate(seqs):
            ids = np.array([self.item_index(x) for x in seq], dtype=np.int64)
            keep = ids != 0
            mapped.append(ids[keep])
            mapped_times.append(None if times is None else np.asarray(times[i], dtype=np.int64)[keep])
        items, _ = self.top_k(mapped, k, mapped_times if times is not None else None)
        out = [[self.item_ids[j - 1] for j in row if j > 0] for row in items]
        out = [row if len(h) else [] for row, h in zip(out, mapped)]
        return dict(zip(keys, out)) if keys is not None else out

    @torch.inference_mode()
    def top_k(
        self, histories: list[np.ndarray], k: int, timestamps: list[np.ndarray | None] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores), each (U, k): top-`k` model item ids per history of model ids.

        The whole history is excluded from the ranking unless the model was evaluated with
        eval_mask=none; when fewer than `k` items are left, the rest of a row is 0 with score
        -inf. Scores are the model's, or log(softmax + priors) for a model with score priors.
        """
        if k < 1:
            raise ConfigError(f"k must be at least 1, got {k}")
        n = self.module.cfg.num_items
        k_eff = min(k, n)
        all_items = np.zeros((len(histories), k), dtype=np.int64)
        all_scores = np.full((len(histories), k), -math.inf, dtype=np.float32)
        table = self.module.output_embeddings()
        for start in range(0, len(histories), RECOMMEND_BATCH):
            chunk = histories[start:start + RECOMMEND_BATCH]
            t = max(1, max((min(len(h), self.max_len) for h in chunk), default=1))
            items = np.zeros((len(chunk), t), dtype=np.int64)
            ts = None
            if timestamps is not None and self.uses_time:
                ts = np.zeros((len(chunk), t), dtype=np.int64)
            rows, cols = [], []
            for i, h in enumerate(chunk):
                recent = h[-self.max_len:]
                if len(recent):
                    items[i, t - len(recent):] = recent
                    if ts is not None and timestamps[start + i] is not None:
                        ts[i, t - len(recent):] = timestamps[start + i][-self.max_len:]
                rows.append(np.full(len(h), i, dtype=np.int64))
                cols.append(np.asarray(h, dtype=np.int64))
            dev = self.device
            states = self.module.encode(
                torch.from_numpy(items).to(dev), None if ts is None else torch.from_numpy(ts).to(dev)
            )[:, -1, :]  # (B, D)
            scores = self.module.score_all(states, table)  # (B, N + 1)
            if self.priors is not None:
                scores = self.priors(scores, torch.from_numpy(items).to(dev))
            scores[:, 0] = -torch.inf
            if self.excludes_history:
                r = torch.from_numpy(np.concatenate(rows)).to(dev)
                c = torch.from_numpy(np.concatenate(cols)).to(dev)
                scores.index_put_((r, c), torch.tensor(-torch.inf, dtype=scores.dtype, device=dev))
            top = torch.topk(scores, k_eff, dim=1)  # (B, k)
            idx, val = top.indices.cpu().numpy(), top.values.float().cpu().numpy()
            idx[~np.isfinite(val)] = 0  # masked items are not recommendations
            all_items[start:start + len(chunk), :k_eff] = idx
            all_scores[start:start + len(chunk), :k_eff] = val
        return all_items, all_scores

    # -- data in the model's ids ---------------------------------------------------------------
    def map_data(self, data: SequenceData) -> MappedData:
        """`data` re-indexed to this model's items (the identity on the training data)."""
        if data.item_ids is None:
            raise ConfigError(f"{data.name}: the data carries no item ids to match to the model")
        lookup = np.array([0] + [self.item_index(x) for x in data.item_ids], dtype=np.int64)
        seqs, times, users, dropped = [], [], [], []
        unknown = 0
        with_time = data.timestamps is not None and self.uses_time  # as in training
        for u, seq in enumerate(data.sequences):
            ids = lookup[seq]
            keep = ids != 0
            unknown += int((~keep).sum())
            user = str(data.user_ids[u]) if data.user_ids is not None else str(u + 1)
            if int(keep.sum()) < 3:
                dropped.append(user)
                continue
            seqs.append(ids[keep])
            users.append(user)
            if with_time:
                times.append(data.timestamps[u][keep])
        mapped = SequenceData(
            data.name, seqs, self.module.cfg.num_items, times if with_time else None,
            data.source, dict(data.meta), np.array(users, dtype=str), np.array(self.item_ids, dtype=str),
        )
        return MappedData(mapped, unknown, dropped)

    def evaluate(self, data: SequenceData) -> dict[str, dict[str, float]]:
        """Validation and test metrics on `data` (already in this model's ids), as training does."""
        from virtualmle.training.evaluation import build_eval_batches, evaluate, resolve_eval_mask

        if not data.sequences:
            raise ConfigError(f"{data.name}: no user left to evaluate")
        mask = resolve_eval_mask(self.config.eval_mask, data)
        return {
            split: evaluate(self.module, build_eval_batches(data, split, self.max_len, self.device, mask),
                            self.priors)
            for split in ("valid", "test")
        }


def resolve_device(device: str) -> torch.device:
    """``auto`` (cuda when available, else cpu), ``cpu`` or ``cuda[:N]``; others are a ConfigError."""
    from virtualmle.training.device import resolve_device as resolve

    return torch.device(resolve(device))


def load_model(directory: str | Path, *, device: str = "auto") -> LoadedModel:
    """Load a saved model directory (``virtualmle train --save DIR``, ``runs/<study>/best_model``).

    Raises:
        ConfigError: not a model directory, an unreadable one, or an unusable device.
    """
    from virtualmle.training.priors import ScorePriors
    from virtualmle.training.trainer import model_config

    directory = Path(directory).expanduser()
    meta, state, ids = load_weights(directory)
    config = TrainConfig(**meta["config"])
    module = build_model(config.model, model_config(config, int(meta["num_items"])))
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise ConfigError(f"{directory}: weights do not fit the stored config "
                          f"({str(exc).splitlines()[0]})") from None
    try:
        priors = ScorePriors.from_saved(load_priors(directory), config, int(meta["num_items"]))
    except ValueError as exc:
        raise ConfigError(f"{directory}: {exc}") from None
    dev = resolve_device(device)
    module.to(dev).eval()
    return LoadedModel(module, config, meta, list(ids["items"]), list(ids.get("users", [])), dev, priors)


def read_data_for(
    model: LoadedModel, spec: str, options: dict[str, Any] | None = None, *, slice_users: int | None = None,
    same_slice: bool = False,
) -> tuple[SequenceData, bool]:
    """Read `spec` for `model`: (data, is_training_file).

    Without `options`, a file that is the model's training file is read the way training read
    it (format and columns stored in model.json). With `same_slice`, the training slice is
    applied to the training file too, so evaluation sees exactly the training users.
    """
    from virtualmle.data import load_dataset, resolve_dataset

    stored = model.meta.get("data", {})
    path, _ = resolve_dataset(spec)
    same_path = stored.get("source") is not None and Path(stored["source"]) == path.absolute()
    if not options and same_path:
        options = dict(stored.get("options") or {})
    data = load_dataset(spec, **(options or {}))
    is_training_file = data.meta.get("sha256") is not None and data.meta.get("sha256") == stored.get("sha256")
    if slice_users is None and same_slice and is_training_file:
        slice_users = stored.get("slice_users")
    if slice_users is not None:
        from virtualmle.data import slice_data

        data = slice_data(data, slice_users)
    return data, is_training_file
