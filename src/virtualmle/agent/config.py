"""The agent's switches: `AgentConfig` (the CLI's flags and the ablations) and its `Mode`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from virtualmle.errors import ConfigError

__all__ = ["AgentConfig", "Mode"]

Mode = Literal["hybrid", "llm"]


@dataclass
class AgentConfig:
    """Switches of the agent (the CLI's flags and the ablations).

    Attributes:
        mode: ``hybrid`` (code candidates, surrogate-ranked, LLM picks among near-ties) or
            ``llm`` (the LLM proposes the change itself; validated and re-asked).
        reflection: run the Reflect step (``--no-reflection`` turns it off).
        memory: read and write long-term memory and distil a summary (``--no-memory``).
        memory_dir: the bank directory (default ``~/.virtualmle/memory``).
        transfer: ``auto``, ``none`` or dataset names to take cognition summaries from.
        transfer_k: summaries retrieved by ``auto``.
        transfer_parts: what transfer brings in: ``both`` (rules as candidate hints and prompt
            lines, and prior trials for the surrogate), ``rules`` or ``trials`` only (the
            transfer ablation).
        plateau_k: trials on the same parameters without improvement before a change must
            touch another parameter.
        max_changes: parameters one proposal may change.
        shortlist: at most this many candidates are shown to the LLM in hybrid mode.
        pick_margin: only candidates scoring within this margin of the best are shown, so a
            position-biased model cannot pick a clearly worse one (standardised units with
            ``ucb``; a fraction of the best score with ``ei``).
        kappa: exploration weight of the surrogate's uncertainty (``ucb`` only).
        reasks: pure-LLM mode: re-asks after a refused proposal before falling back.
        unavailable_retries: a step is retried this often when the backend is unreachable.
        context: what the LLM is sent: ``full`` (the whole planning context), ``compact``
            (profile, incumbent, diagnostics, plateau, rules: a fraction of the tokens) or
            ``auto`` (compact for local models, which process prompts slowly on CPUs; full for
            HTTP endpoints). The full context is stored with every trial either way.
        explore: this many configurations drawn from the whole space (a Latin-hypercube sample
            over the axes' values) join the local candidates in hybrid mode on every step, so
            the surrogate's acquisition can leave the incumbent's neighbourhood.
        tpe: this many suggestions of an independent Optuna TPE sampler, fed the study's
            history, join the candidates in hybrid mode (0 turns it off).
        acquisition: ``ei`` (expected improvement, default) or ``ucb`` (``mu + kappa * sigma``).
        prior_scale: weight of the candidates' prior evidence (diagnostics, momentum, rules) next
            to the acquisition value.
        ard: fit a surrogate length scale per parameter (automatic relevance determination), so
            parameters whose changes did not matter stop attracting trials.
        display: print the hypothesis and verdict of each trial (the CLI's progress display).
        stop_hopeless: watch each running trial's validation curve and stop it when even an
            optimistic projection cannot reach the incumbent (`agent/watch.py`; the reason is
            stored as ``stop_reason``). Off by default: the published bench numbers are without it.
        screen_epochs: screen each round's candidates for this many epochs, then promote the
            best from its checkpoint (`agent/screen.py`); 0 (default) trains every trial in full.
        screen_width: candidates screened per round.
        screen_tolerance: the best screen is not promoted when it trails the incumbent's curve at
            the same epoch by more than this share.
        screen_cost_factor: stop a screen that costs, or on its pace would cost, more than this
            many times the study's median finished screen, so its round can promote without it
            (`agent/screen.py`, `costly`); 0 turns the cap off.
        screen_cost_share: with a compute budget, the cap is never below this share of it: a
            screen is stopped only when it is also a large part of what the study may spend.
        screen_repeat: stop a running screen once its first this-many validations repeat a
            finished trial's flat curve (`agent/flat.py`, `repeats`); 0 (default) turns it off.
        confirm_patience: a promotion that would only confirm its screen's curve continues with
            less patience (`agent/screen.py`, `confirming`): one past its peak ends at once, a
            flat one with at most this patience; 0: every promotion keeps its configuration's
            patience.
    """

    mode: Mode = "hybrid"
    reflection: bool = True
    memory: bool = True
    memory_dir: Path | None = None
    transfer: str = "auto"
    transfer_k: int = 2
    transfer_parts: Literal["both", "rules", "trials"] = "both"
    plateau_k: int = 3
    max_changes: int = 2
    shortlist: int = 4
    pick_margin: float = 0.15
    kappa: float = 0.5
    reasks: int = 2
    unavailable_retries: int = 1
    context: Literal["auto", "compact", "full"] = "auto"
    explore: int = 256
    tpe: int = 2
    acquisition: Literal["ei", "ucb"] = "ei"
    prior_scale: float = 0.1
    ard: bool = True
    display: bool = False
    stop_hopeless: bool = False
    screen_epochs: int = 0
    screen_width: int = 3
    screen_tolerance: float = 0.1
    screen_cost_factor: float = 5.0
    screen_cost_share: float = 0.15
    confirm_patience: int = 5
    screen_repeat: int = 0

    def check(self) -> None:
        """Refuse switches no agent can run with (one line, `ConfigError`)."""
        if self.mode not in ("hybrid", "llm"):
            raise ConfigError(f"--mode {self.mode!r} is not allowed: use hybrid or llm")
        if self.screen_epochs < 0 or self.screen_width < 1:
            raise ConfigError(f"screening needs screen_epochs >= 0 and screen_width >= 1, not "
                              f"{self.screen_epochs} and {self.screen_width}")
        if self.screen_repeat < 0:
            raise ConfigError(f"screen_repeat must be >= 0 (0: off), not {self.screen_repeat}")
        if self.confirm_patience < 0:
            raise ConfigError(f"confirm_patience must be >= 0 (0: promotions keep their patience), not {self.confirm_patience}")
        if not self.screen_cost_factor >= 0 or not 0 <= self.screen_cost_share <= 1:
            raise ConfigError(f"screen_cost_factor must be >= 0 (0: no cap) and screen_cost_share in [0, 1], not "
                              f"{self.screen_cost_factor} and {self.screen_cost_share}")
