"""Training batches, precomputed once per trial and (by default) bucketed by sequence length.

Amazon sequences are short (Beauty: mean 8.9 items) against max_len 50, so padding every batch to
max_len wastes most of the compute. With `order="bucketed"` (the release) users are sorted by
length (random order among equal lengths), cut into batches, and each batch is left-padded only
to its own longest sequence; the batch order is shuffled with the trial's seeded RNG. With
`order="random"` a batch is a uniformly random set of users (as the published SASRec code
batches), still padded only to its own longest sequence: each batch then mixes short and long
histories, which changes how positions are weighted in a batch's mean loss.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from virtualmle.data.dataset import SequenceData


class TrainBatches:
    """Next-item training samples: per user, inputs s[:-1] and targets s[1:] of s = seq[:-2].

    The last `window` steps are kept. With `last_only`, only the final position is supervised.
    Users with fewer than two training items have no sample.
    """

    def __init__(
        self,
        data: SequenceData,
        window: int,
        batch_size: int,
        *,
        last_only: bool = False,
        device: str | torch.device = "cpu",
        order: str = "bucketed",
    ) -> None:
        if order not in ("bucketed", "random"):
            raise ValueError(f"batch order must be bucketed or random, got {order!r}")
        self.order = order
        self.batch_size = batch_size
        users = [u for u, s in enumerate(data.sequences) if len(s) - 2 >= 2]
        n = len(users)
        items = np.zeros((n, window), dtype=np.int64)
        targets = np.zeros((n, window), dtype=np.int64)
        ts = np.zeros((n, window), dtype=np.int64) if data.timestamps is not None else None
        lengths = np.zeros(n, dtype=np.int64)
        for i, u in enumerate(users):
            s = data.sequences[u][:-2]
            x, y = s[:-1][-window:], s[1:][-window:]
            k = len(x)
            lengths[i] = k
            items[i, window - k :] = x
            if last_only:
                targets[i, -1] = y[-1]
            else:
                targets[i, window - k :] = y
            if ts is not None:
                ts[i, window - k :] = data.timestamps[u][:-2][:-1][-window:]
        self.num_samples = n
        self.lengths = lengths
        self.items = torch.from_numpy(items).to(device)
        self.targets = torch.from_numpy(targets).to(device)
        self.timestamps = None if ts is None else torch.from_numpy(ts).to(device)
        self.device = device

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def epoch(
        self, rng: np.random.Generator
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]]:
        """Yield (items, timestamps, targets), each (B, T) with T the batch's longest sequence."""
        perm = rng.permutation(self.num_samples)
        order = perm if self.order == "random" else perm[np.argsort(self.lengths[perm], kind="stable")]
        chunks = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for j in rng.permutation(len(chunks)):
            idx_np = chunks[j]
            t = int(self.lengths[idx_np].max())
            idx = torch.from_numpy(idx_np).to(self.device)
            ts = None if self.timestamps is None else self.timestamps[idx, -t:]
            yield self.items[idx, -t:], ts, self.targets[idx, -t:]
