"""The dataset profile: the numbers a person (and later the agent) needs to choose a configuration.

`profile_dataset` returns a JSON-ready dict; `describe_profile` turns it into a few lines of text.
Field meanings are documented in docs/data.md.
"""

from __future__ import annotations

import math

import numpy as np

from virtualmle.data.dataset import SequenceData


def _gini(counts: np.ndarray) -> float:
    """Gini coefficient of item popularity: 0 = every item equally popular, ->1 = one item."""
    x = np.sort(counts.astype(np.float64))
    n = x.size
    total = x.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2.0 * np.sum(ranks * x)) / (n * total) - (n + 1.0) / n)


def _top_share(counts_desc: np.ndarray, fraction: float) -> float:
    """Share of interactions on the most popular `fraction` of items (at least one item)."""
    k = max(1, math.ceil(fraction * counts_desc.size))
    return float(counts_desc[:k].sum() / counts_desc.sum())


def repeated_target_shares(data: SequenceData) -> tuple[float, float]:
    """Shares of validation and test targets the user already had earlier in their history.

    Validation target ``seq[-2]`` against ``seq[:-2]`` (users with 3+ items), test target
    ``seq[-1]`` against ``seq[:-1]`` (users with 2+ items): the users the evaluation ranks. A
    repeated target is what makes the choice of evaluation mask matter (docs/training.md).
    """
    shares = []
    for cut in (2, 1):
        hits = total = 0
        for s in data.sequences:
            if len(s) > cut:
                total += 1
                hits += bool(np.any(s[:-cut] == s[-cut]))
        shares.append(hits / total if total else 0.0)
    return shares[0], shares[1]


def degenerate_warnings(profile: dict) -> list[str]:
    """One line per property of a profiled file that makes its metrics meaningless.

    A single user (every metric is one user's hit or miss) or a density above 1 (more
    interactions than user x item pairs: the file is mostly repeats).
    """
    out = []
    if profile["users"] <= 1:
        out.append(f"{profile['name']}: only {profile['users']} user: metrics are one user's hit or miss")
    if profile["density"] > 1.0:
        out.append(
            f"{profile['name']}: density {profile['density']:.2f} > 1 (more interactions than "
            "user x item pairs): the file is mostly repeats"
        )
    return out


def profile_dataset(data: SequenceData, max_len: int = 50) -> dict:
    """Descriptors of `data` under the leave-one-out protocol, JSON-ready.

    Test target = ``seq[-1]``, validation target = ``seq[-2]``, training = ``seq[:-2]``.
    ``test_only_items`` counts the test cases (one per user) whose target item occurs in no
    user's ``seq[:-1]`` (no training sequence and no validation target): an item the model has
    never seen. This is the count `../shared/data/README.md` gives (Beauty 52, Sports 59,
    Toys 47); ``test_only_items_distinct`` counts the distinct such items.
    """
    lengths = np.fromiter((len(s) for s in data.sequences), dtype=np.int64, count=data.num_users)
    flat = np.concatenate(data.sequences) if data.sequences else np.zeros(0, dtype=np.int64)
    counts = np.bincount(flat, minlength=data.num_items + 1)[1:]
    counts_desc = np.sort(counts)[::-1]
    interactions = int(lengths.sum())

    # Items seen before test time: every position except each user's last one.
    seen = np.zeros(data.num_items + 1, dtype=bool)
    for s in data.sequences:
        seen[s[:-1]] = True
    test_targets = np.fromiter((s[-1] for s in data.sequences), dtype=np.int64, count=data.num_users)
    unseen = ~seen[test_targets]

    # Repeats: interactions whose item the same user already had earlier.
    repeats = interactions - int(sum(np.unique(s).size for s in data.sequences))

    repeat_valid, repeat_test = repeated_target_shares(data)

    def pct(q: float) -> float:
        return float(np.percentile(lengths, q)) if lengths.size else 0.0

    profile = {
        "name": data.name,
        "users": data.num_users,
        "items": data.num_items,
        "interactions": interactions,
        "density": interactions / (data.num_users * data.num_items) if data.num_users and data.num_items else 0.0,
        "seq_len": {
            "mean": float(lengths.mean()) if lengths.size else 0.0,
            "min": int(lengths.min()) if lengths.size else 0,
            "p50": pct(50),
            "p90": pct(90),
            "p95": pct(95),
            "max": int(lengths.max()) if lengths.size else 0,
        },
        "max_len": int(max_len),
        "share_within_max_len": float(np.mean(lengths <= max_len)) if lengths.size else 0.0,
        "popularity": {
            "gini": _gini(counts),
            "top1pct_share": _top_share(counts_desc, 0.01) if interactions else 0.0,
            "top10pct_share": _top_share(counts_desc, 0.10) if interactions else 0.0,
            "max_item_count": int(counts_desc[0]) if counts.size else 0,
            "median_item_count": float(np.median(counts)) if counts.size else 0.0,
            "items_under_5": int(np.sum(counts < 5)),
        },
        "test_only_items": int(unseen.sum()),
        "test_only_items_distinct": int(np.unique(test_targets[unseen]).size),
        "test_only_share": float(unseen.mean()) if unseen.size else 0.0,
        "repeat_interactions": repeats,
        "repeat_valid_share": repeat_valid,
        "repeat_test_share": repeat_test,
        "has_timestamps": data.timestamps is not None,
    }
    if data.timestamps is not None and interactions:
        ts = np.concatenate(data.timestamps)
        profile["time_span_days"] = float((ts.max() - ts.min()) / 86400.0)
    profile["warnings"] = degenerate_warnings(profile)
    return profile


def describe_profile(profile: dict) -> str:
    """A short human-readable summary of a `profile_dataset` result (a few lines)."""
    sl = profile["seq_len"]
    pop = profile["popularity"]
    lines = [
        f"{profile['name']}: {profile['users']:,} users, {profile['items']:,} items, "
        f"{profile['interactions']:,} interactions (density {profile['density']:.2e}).",
        f"Sequence length: mean {sl['mean']:.2f}, median {sl['p50']:g}, p90 {sl['p90']:g}, "
        f"p95 {sl['p95']:g}, max {sl['max']}; {profile['share_within_max_len']:.1%} of users fit in "
        f"max_len {profile['max_len']}.",
        f"Popularity: Gini {pop['gini']:.2f}; top 1% of items hold {pop['top1pct_share']:.1%} and top 10% "
        f"hold {pop['top10pct_share']:.1%} of interactions.",
        f"Leave-one-out: {profile['test_only_items']} test targets ({profile['test_only_share']:.2%}) are items "
        f"never seen before test ({profile['test_only_items_distinct']} distinct items).",
        f"Repeats: {profile['repeat_valid_share']:.2%} of validation and {profile['repeat_test_share']:.2%} "
        "of test targets are items the user already had (they decide the evaluation mask).",
        "Timestamps: " + ("yes." if profile["has_timestamps"] else "no (order only)."),
    ]
    lines += [f"Warning: {w}" for w in profile.get("warnings", [])]
    return "\n".join(lines)
