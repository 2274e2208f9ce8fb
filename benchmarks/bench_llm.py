"""Speed benchmark: seconds per structured call of the embedded model on this CPU.

Loads the embedded SmolLM2-135M-Instruct once (reported separately), then makes `--calls`
structured calls of two shapes, each with a different seed so none is a cache hit (there is no
cache without a run directory anyway):

- `small`: a number and a 40-character reason (the shape of a quick decision);
- `pick`: a bounded hypothesis plus a choice among five labelled candidates (the shape of the
  agent's hybrid-mode pick).

Prints mean, p50 and p90 seconds per call, tokens per call and generated tokens per second.

    python benchmarks/bench_llm.py [--calls 10] [--threads N] [--llm SPEC]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from virtualmle.llm import make_llm


class Small(BaseModel):
    model_config = ConfigDict(extra="forbid")
    learning_rate: float
    reason: str = Field(max_length=40)


class Pick(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hypothesis: str = Field(max_length=120, description="one testable hypothesis")
    choice: Literal["A", "B", "C", "D", "E"]


PROMPTS = {
    "small": (
        Small,
        [
            {"role": "system", "content": "You tune a SASRec recommender. Answer in JSON."},
            {
                "role": "user",
                "content": "Propose a learning rate for Adam and give a short reason.",
            },
        ],
    ),
    "pick": (
        Pick,
        [
            {"role": "system", "content": "You are an ML engineer tuning SASRec on Amazon Beauty."},
            {
                "role": "user",
                "content": (
                    "The last trial overfit: train loss fell while validation NDCG@10 peaked at "
                    "epoch 12 and then dropped. Candidates:\n"
                    "A: dropout 0.2 -> 0.4\nB: hidden 64 -> 128\nC: lr 1e-3 -> 3e-3\n"
                    "D: weight_decay 0 -> 1e-4\nE: max_len 50 -> 100\n"
                    "State a hypothesis and pick one candidate."
                ),
            },
        ],
    ),
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=10, help="structured calls per shape")
    parser.add_argument(
        "--threads", type=int, default=None, help="llama.cpp threads (default: its choice)"
    )
    parser.add_argument("--llm", default=None, help="spec to benchmark (default: embedded)")
    parser.add_argument("--max-tokens", type=int, default=128)
    args = parser.parse_args()

    client = make_llm(args.llm, n_threads=args.threads, max_reasks=0)
    started = time.perf_counter()
    # Load (and warm) once, outside the timings: a study pays this once per process.
    client.structured(PROMPTS["small"][1], Small, max_tokens=64, seed=10_000)
    print(f"model: {client.model}  threads: {args.threads or 'default'}")
    print(f"load + first call: {time.perf_counter() - started:.2f} s")
    print(
        f"{'shape':<6} {'calls':>5} {'mean s':>7} {'p50 s':>6} {'p90 s':>6} {'prompt tok':>10} {'compl tok':>9} {'tok/s':>6} {'valid':>5}"
    )
    for shape, (schema, messages) in PROMPTS.items():
        seconds, prompt, completion, valid = [], [], [], 0
        for seed in range(args.calls):
            before = client.usage
            t = time.perf_counter()
            try:
                client.structured(
                    messages, schema, seed=seed, temperature=0.7, max_tokens=args.max_tokens
                )
                valid += 1
            except Exception as exc:  # a benchmark reports failures instead of stopping
                print(f"  call {seed}: {type(exc).__name__}: {exc}")
            seconds.append(time.perf_counter() - t)
            after = client.usage
            prompt.append(after.prompt_tokens - before.prompt_tokens)
            completion.append(after.completion_tokens - before.completion_tokens)
        rate = sum(completion) / sum(seconds)
        print(
            f"{shape:<6} {args.calls:>5} {statistics.mean(seconds):>7.2f} {percentile(seconds, 0.5):>6.2f} "
            f"{percentile(seconds, 0.9):>6.2f} {statistics.mean(prompt):>10.0f} {statistics.mean(completion):>9.0f} "
            f"{rate:>6.0f} {valid:>3}/{args.calls}"
        )


if __name__ == "__main__":
    main()
