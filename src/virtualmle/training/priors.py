"""Train-split score priors: item transition, item co-occurrence and popularity (REFERENCE.md
section 1, the priors of the paper's unreleased runner), added to the model's scores at ranking.

For a user whose history ends with item `l` and whose `prior_recent_k` most recent items are
`R` (m = |R|), every item b is ranked by

    softmax(model logits)_b + prior_transition * P_trans(b | l)
                            + prior_cooc * sum_{a in R} P_cooc(b | a) / norm(m)
                            + prior_pop * P_pop(b)

- P_trans(b | a): share of a's next items that are b (consecutive pairs);
- P_cooc(b | a): share of a's neighbours that are b, neighbours = items at most `prior_window`
  positions away in the same sequence, either side;
- P_pop(b): share of all interactions that are b;
- norm(m) = sqrt(m), m or 1 for `prior_norm` = sqrt, count, none.

Why softmax: every term is then a distribution over items, so a weight reads as "this much of the
prior per unit of the model" on every dataset and temperature, where raw logits have an arbitrary
scale (temperature 0.05 multiplies them by 20). Ranking by the model's scores alone is unchanged
by it (softmax is monotone), which is why weights of 0 skip the hook altogether.

Leak-free by construction: all three are counted on the training split only, every user's
`seq[:-2]` (what `TrainBatches` trains on), never a validation or test target; the same tables
serve validation and test. They are not used in training: the training pairs are exactly what the
tables count, so a prior in the training logits would hand the model its own label.

Tables are sparse (numpy CSR; scipy is not a dependency) and cached on disk
(`data/cache.py`, ``priors-<key>.npz``) under a key of the training split's content, the item
count and `prior_window`: a trial process loads them in milliseconds, and any change of the data
(a different file, slice or re-indexing) is a different key.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, replace

import numpy as np
import torch

from virtualmle.data import cache as _cache
from virtualmle.data.dataset import SequenceData
from virtualmle.training.config import TrainConfig

logger = logging.getLogger(__name__)

# Bump when the tables' definition changes, so old cache entries are never read as new ones.
PRIORS_VERSION = 1


@dataclass(frozen=True)
class SparseRows:
    """A row-stochastic sparse matrix in CSR form: row a holds P(b | a) for its columns b."""

    indptr: np.ndarray  # (R + 1,) int64: row a's entries are [indptr[a], indptr[a + 1])
    indices: np.ndarray  # (nnz,) int64 column ids, ascending within a row
    values: np.ndarray  # (nnz,) float32, each non-empty row sums to 1

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, num_rows: int) -> SparseRows:
        """Count the (row, col) pairs and divide each row by its total."""
        key = rows.astype(np.int64) * num_rows + cols.astype(np.int64)
        uniq, counts = np.unique(key, return_counts=True)  # sorted: by row, then column
        r, c = uniq // num_rows, uniq % num_rows
        totals = np.bincount(r, weights=counts, minlength=num_rows)
        indptr = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(np.bincount(r, minlength=num_rows), out=indptr[1:])
        return cls(indptr, c.astype(np.int64), (counts / totals[r]).astype(np.float32))

    def row(self, a: int) -> dict[int, float]:
        """Row `a` as {column: value} (for inspection and tests)."""
        lo, hi = self.indptr[a], self.indptr[a + 1]
        return {int(c): float(v) for c, v in zip(self.indices[lo:hi], self.values[lo:hi])}

    def gather(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every entry of rows[0], rows[1], ...: (owner i, column, value), all (E,)."""
        starts = self.indptr[rows]
        lengths = self.indptr[rows + 1] - starts
        owner = np.repeat(np.arange(len(rows)), lengths)
        # Position of each entry inside its row, then its index in `indices` / `values`.
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        pos = np.repeat(starts, lengths) + within
        return owner, self.indices[pos], self.values[pos]

    def is_valid(self, num_rows: int) -> bool:
        """Structural check for a table read back from the cache."""
        ip = self.indptr
        return (
            ip.shape == (num_rows + 1,) and ip[0] == 0 and bool(np.all(np.diff(ip) >= 0))
            and ip[-1] == len(self.indices) == len(self.values)
            and (len(self.indices) == 0 or (self.indices.min() >= 0 and self.indices.max() < num_rows))
        )


@dataclass(frozen=True)
class PriorTables:
    """The three train-split priors of one dataset (ids 0..num_items, 0 = padding, never used)."""

    transition: SparseRows  # P_trans(b | a)
    cooc: SparseRows  # P_cooc(b | a) within `window`
    popularity: np.ndarray  # (num_items + 1,) float32 P_pop(b), sums to 1
    window: int
    cache: str = "off"  # where they came from: "hit", "miss" (computed and stored) or "off"

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {"popularity": self.popularity, "window": np.array([self.window], dtype=np.int64)}
        for name in ("transition", "cooc"):
            table: SparseRows = getattr(self, name)
            out.update({f"{name}_indptr": table.indptr, f"{name}_indices": table.indices,
                        f"{name}_values": table.values})
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], num_items: int, window: int) -> PriorTables | None:
        """Tables from a cache entry, or None when the entry does not fit this dataset."""
        try:
            tables = [SparseRows(arrays[f"{n}_indptr"], arrays[f"{n}_indices"], arrays[f"{n}_values"])
                      for n in ("transition", "cooc")]
            popularity, stored_window = arrays["popularity"], int(arrays["window"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            return None
        rows = num_items + 1
        if stored_window != window or popularity.shape != (rows,) or not all(t.is_valid(rows) for t in tables):
            return None
        return cls(tables[0], tables[1], popularity, window)


def train_sequences(data: SequenceData) -> list[np.ndarray]:
    """The training split: every user's seq[:-2] (validation and test targets cut off)."""
    return [s[:-2] for s in data.sequences]


def compute_prior_tables(seqs: list[np.ndarray], num_items: int, window: int) -> PriorTables:
    """Count the priors on `seqs` (already the training split)."""
    rows = num_items + 1
    lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
    flat = np.concatenate(seqs).astype(np.int64) if len(seqs) else np.zeros(0, dtype=np.int64)
    user = np.repeat(np.arange(len(seqs)), lengths)  # (I,) owner of each interaction

    def pairs(d: int) -> tuple[np.ndarray, np.ndarray]:
        # (earlier, later) items d positions apart in the same user's sequence.
        same = user[:-d] == user[d:] if len(flat) > d else np.zeros(0, dtype=bool)
        return flat[:-d][same], flat[d:][same]

    first, second = pairs(1)
    transition = SparseRows.from_pairs(first, second, rows)
    near = [pairs(d) for d in range(1, window + 1)]
    a = np.concatenate([p[0] for p in near] + [p[1] for p in near])
    b = np.concatenate([p[1] for p in near] + [p[0] for p in near])
    cooc = SparseRows.from_pairs(a, b, rows)
    counts = np.bincount(flat, minlength=rows).astype(np.float64)
    counts[0] = 0.0
    popularity = (counts / max(counts.sum(), 1.0)).astype(np.float32)
    return PriorTables(transition, cooc, popularity, window)


def priors_key(seqs: list[np.ndarray], num_items: int, window: int) -> str:
    """Cache entry name: a digest of the training split's content and the table knobs."""
    h = hashlib.sha256(f"priors:v{PRIORS_VERSION}:items={num_items}:window={window}:".encode())
    h.update(np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs)).tobytes())
    for s in seqs:
        h.update(np.asarray(s, dtype=np.int64).tobytes())
    return f"priors-{h.hexdigest()[:32]}"


def load_prior_tables(data: SequenceData, window: int, *, cache: bool = True) -> PriorTables:
    """The priors of `data`'s training split, from the cache when it holds them."""
    seqs = train_sequences(data)
    if not cache:
        return compute_prior_tables(seqs, data.num_items, window)
    key = priors_key(seqs, data.num_items, window)
    arrays = _cache.load_arrays(key)
    if arrays is not None:
        tables = PriorTables.from_arrays(arrays, data.num_items, window)
        if tables is not None:
            return replace(tables, cache="hit")
        logger.warning("ignoring cache entry %s: it does not fit %s; recomputing", key, data.name)
    tables = compute_prior_tables(seqs, data.num_items, window)
    _cache.store_arrays(key, tables.to_arrays())
    return replace(tables, cache="miss")


# prior_norm: what the co-occurrence sum over a user's m recent items is divided by.
_NORMS = {"sqrt": np.sqrt, "count": lambda m: m, "none": np.ones_like}


def prior_arrays(data: SequenceData, config: TrainConfig) -> dict[str, np.ndarray] | None:
    """What a saved model keeps of its priors (see `models.artifact`); None when all are off."""
    if not (config.prior_transition or config.prior_cooc or config.prior_pop):
        return None
    return load_prior_tables(data, config.prior_window).to_arrays()


class ScorePriors:
    """The evaluation's `score_adjust` hook: softmax the model's scores, add the weighted priors.

    Returns the log of that sum (same ranking, no float underflow: see `__call__`).
    """

    def __init__(self, tables: PriorTables, *, transition: float = 0.0, cooc: float = 0.0,
                 pop: float = 0.0, recent_k: int = 5, norm: str = "count") -> None:
        self.tables = tables
        self.transition, self.cooc, self.pop = transition, cooc, pop
        self.recent_k = recent_k
        self.norm = _NORMS[norm]
        self._popularity = torch.from_numpy(tables.popularity)
        self._log_pop: torch.Tensor | None = None

    @classmethod
    def from_config(cls, data: SequenceData, config: TrainConfig, *, cache: bool = True) -> ScorePriors | None:
        """The priors a trial asks for; None when every prior weight is 0 (rank the model alone)."""
        if not (config.prior_transition or config.prior_cooc or config.prior_pop):
            return None
        return cls(load_prior_tables(data, config.prior_window, cache=cache),
                   transition=config.prior_transition, cooc=config.prior_cooc, pop=config.prior_pop,
                   recent_k=config.prior_recent_k, norm=config.prior_norm)

    @classmethod
    def from_saved(cls, arrays: dict[str, np.ndarray] | None, config: TrainConfig,
                   num_items: int) -> ScorePriors | None:
        """The priors of a saved model (its priors.npz arrays); None when it uses none.

        Raises:
            ValueError: the config weights a prior but the arrays are missing or do not fit.
        """
        if not (config.prior_transition or config.prior_cooc or config.prior_pop):
            return None
        tables = None if arrays is None else PriorTables.from_arrays(arrays, num_items, config.prior_window)
        if tables is None:
            raise ValueError("the config weights a score prior but the saved prior tables are missing "
                             "or do not fit the model")
        return cls(tables, transition=config.prior_transition, cooc=config.prior_cooc, pop=config.prior_pop,
                   recent_k=config.prior_recent_k, norm=config.prior_norm)

    def __call__(self, scores: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Adjust a batch in place.

        Args:
            scores: (B, N + 1) model scores (column 0 is padding). Overwritten.
            items: (B, T) left-padded histories, the most recent item last.
        Returns:
            `scores`, now log(softmax(scores) + weighted priors); column 0 is -inf.
        """
        # The log of the sum ranks exactly like the sum, but a probability that underflows to 0
        # in float32 (a logit ~100 below the best) would tie with every other such item, and the
        # evaluation breaks ties in the target's favour: in the log domain nothing underflows.
        # Each prior is folded in with log(x + q) = logaddexp(log x, log q): one dense pass for
        # popularity, sparse updates at the few entries the other two touch.
        scores[:, 0] = -torch.inf
        scores.sub_(torch.logsumexp(scores, dim=1, keepdim=True))  # log softmax, (B, N + 1)
        if self.pop:
            torch.logaddexp(scores, self._log_popularity(scores), out=scores)
        hist = items.cpu().numpy()
        if self.transition:
            owner, cols, vals = self.tables.transition.gather(hist[:, -1])
            self._fold(scores, owner, cols, vals * self.transition)
        if self.cooc:
            recent = hist[:, -self.recent_k:]  # (B, k), left-padded with 0
            m = np.maximum((recent != 0).sum(axis=1), 1).astype(np.float64)  # (B,) recent items
            weight = self.cooc / self.norm(m)  # (B,)
            # One pass per recent position: within a pass every (user, item) is unique, so the
            # sparse update needs no de-duplication. Padding (id 0) has an empty row.
            for j in range(recent.shape[1]):
                owner, cols, vals = self.tables.cooc.gather(recent[:, j])
                self._fold(scores, owner, cols, vals * weight[owner])
        return scores

    def _log_popularity(self, scores: torch.Tensor) -> torch.Tensor:
        """(N + 1,) log(prior_pop * P_pop), -inf where an item was never seen in training."""
        if self._log_pop is None or self._log_pop.device != scores.device or self._log_pop.dtype != scores.dtype:
            self._log_pop = (self._popularity.double() * self.pop).log().to(scores.device, scores.dtype)
        return self._log_pop

    @staticmethod
    def _fold(scores: torch.Tensor, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray) -> None:
        """scores[r, c] = log(exp(scores[r, c]) + v) at unique (r, c) entries."""
        if len(rows) == 0:
            return
        dev = scores.device
        idx = (torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev))
        mass = torch.from_numpy(np.asarray(vals, dtype=np.float64)).to(dev, scores.dtype)
        scores.index_put_(idx, torch.logaddexp(scores[idx], mass.log()))
