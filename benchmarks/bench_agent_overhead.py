"""The agent's own overhead per trial (plan + LLM + memory seconds) against the trial's training
seconds. Target: under 10%.

Runs a real `tune` study (the same loop, executor and storage as `virtualmle tune`) and reads the
per-trial timings the agent stores in the trial user attrs (``agent.seconds`` for plan/act,
``agent_seconds`` for observe/reflect/memory).

    python benchmarks/bench_agent_overhead.py                      # beauty, 4000 users, 3 epochs
    python benchmarks/bench_agent_overhead.py --slice-users 0 --max-epochs 20 --trials 5
    python benchmarks/bench_agent_overhead.py --llm http://127.0.0.1:8000/v1#qwen
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="beauty")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--slice-users", type=int, default=4000, help="0 = all users")
    ap.add_argument("--max-epochs", type=int, default=3)
    ap.add_argument("--llm", default=None, help="--llm spec (default: the embedded SmolLM2)")
    ap.add_argument("--llm-threads", type=int, default=None, help="CPU threads of a local model (default llama.cpp's)")
    ap.add_argument("--mode", default="hybrid", choices=("hybrid", "llm"))
    ap.add_argument("--out", default=None, help="working directory (default: a temporary one)")
    args = ap.parse_args()

    import optuna

    from virtualmle.agent import AgentConfig, VirtualMLEAgent
    from virtualmle.llm import make_llm
    from virtualmle.search.loop import SearchOptions, run_search
    from virtualmle.search.space import load_space

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(args.out or tempfile.mkdtemp(prefix="bench_agent_"))
    work.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{work / 'bench.db'}"
    space = load_space(args.model)
    llm = make_llm(args.llm or os.environ.get("VIRTUALMLE_LLM"), run_dir=work / "run", max_tokens_budget=None,
                   n_threads=args.llm_threads)
    agent = VirtualMLEAgent(space=space, seed=0, llm=llm,
                            config=AgentConfig(mode=args.mode, memory_dir=work / "memory", transfer="none"))
    options = SearchOptions(data=args.data, model=args.model, trials=args.trials, seed=0,
                            study_name="bench", space=space, max_epochs=args.max_epochs,
                            slice_users=args.slice_users or None, run_dir=work / "run")
    t0 = time.perf_counter()
    run_search(agent, options, storage=storage)
    wall = time.perf_counter() - t0
    trials = sorted(optuna.load_study(study_name="bench", storage=storage).trials, key=lambda t: t.number)

    print(f"agent overhead: {args.data}/{args.model}, {args.trials} trials, slice {args.slice_users or 'all'} users, "
          f"{args.max_epochs} epochs, llm {llm.model} ({llm.dialect}, threads {args.llm_threads or 'default'}), "
          f"mode {args.mode}")
    print(f"{'trial':>5} {'train s':>8} {'plan s':>7} {'pick llm s':>10} {'reflect s':>9} {'memory s':>8} "
          f"{'agent s':>8} {'overhead':>8}")
    tot_train = tot_agent = 0.0
    for t in trials:
        a = t.user_attrs
        step = (a.get("agent") or {}).get("seconds") or {}
        obs = a.get("agent_seconds") or {}
        train = float(a.get("seconds", 0.0))
        plan, pick = float(step.get("plan", 0.0)), float(step.get("llm", 0.0))
        propose_total = float(step.get("total", plan + pick))
        reflect, memory = float(obs.get("reflect_llm", 0.0)), float(obs.get("memory", 0.0))
        agent_s = propose_total + float(obs.get("observe_total", reflect + memory))
        tot_train += train
        tot_agent += agent_s
        print(f"{t.number:>5} {train:>8.2f} {plan:>7.3f} {pick:>10.2f} {reflect:>9.2f} {memory:>8.3f} "
              f"{agent_s:>8.2f} {agent_s / train if train else float('nan'):>8.1%}")
    u = llm.usage
    print(f"total: train {tot_train:.1f} s, agent {tot_agent:.1f} s -> overhead {tot_agent / max(tot_train, 1e-9):.1%} "
          f"(target < 10%); wall {wall:.1f} s")
    print(f"LLM: {u.calls} calls, {u.prompt_tokens} prompt + {u.completion_tokens} completion tokens, "
          f"{u.seconds:.1f} s, {u.reasks} re-asks; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    llm.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
