"""Hierarchical memory of the VirtualMLE agent.

- Short-term, per study (`StudyMemory`): trials, hypotheses, reflections, incumbent, coverage,
  open hypotheses; rebuilt from the Optuna trials' user attributes (`StudyMemory.from_records`).
- Long-term, per dataset x backbone (`InsightSet`): insights edited by `InsightOp`s (ADD /
  UPVOTE / DOWNVOTE / EDIT / REMOVE), each with a machine-actionable `Rule`; `ops_from_evidence`
  writes them in code from the study's pooled evidence (`study_evidence`): one-parameter moves
  become rules only beyond noise, multi-parameter trials only evidence about the combination.
- Cognition summaries, across datasets (`distill` -> `CognitionSummary`): ranked transferable
  rules, a starting configuration and a search order.
- The bank directory (`MemoryBank`): versioned JSON files, atomic and lock-protected writes,
  retrieval by dataset similarity (`similar`, `get_summaries`, `prior_trials`).

Everything LLM-written is data: sanitised, length-bounded, never a path, and quoted when it goes
back into a prompt (`render_for_prompt`).
"""

from virtualmle.memory.bank import (
    SCHEMA_VERSION,
    MemoryBank,
    default_memory_dir,
    profile_distance,
)
from virtualmle.memory.cognition import (
    CognitionSummary,
    PriorTrial,
    TransferRule,
    distill,
)
from virtualmle.memory.errors import (
    InsightOpError,
    MarkdownFormatError,
    MemoryBankError,
    SchemaVersionError,
)
from virtualmle.memory.evidence import MoveEvidence, Pair, StudyEvidence, study_evidence
from virtualmle.memory.insights import (
    ApplyResult,
    Insight,
    InsightOp,
    InsightOps,
    InsightSet,
    TrialRef,
    ops_from_evidence,
)
from virtualmle.memory.rules import (
    NON_TRANSFERABLE,
    Action,
    Rule,
    descriptors,
    regime_condition,
)
from virtualmle.memory.short_term import (
    ATTR_CHANGED,
    ATTR_DIAGNOSTICS,
    ATTR_HYPOTHESIS,
    ATTR_PARENT,
    ATTR_REFLECTION,
    FAILURES,
    Hypothesis,
    ParamCoverage,
    Reflection,
    StudyMemory,
    TrialEntry,
)
from virtualmle.memory.text import render_for_prompt, sanitize_text, slugify

__all__ = [
    "ATTR_CHANGED", "ATTR_DIAGNOSTICS", "ATTR_HYPOTHESIS", "ATTR_PARENT", "ATTR_REFLECTION",
    "FAILURES", "NON_TRANSFERABLE", "SCHEMA_VERSION",
    "Action", "ApplyResult", "CognitionSummary", "Hypothesis", "Insight", "InsightOp", "InsightOpError",
    "InsightOps", "InsightSet", "MarkdownFormatError", "MemoryBank", "MemoryBankError", "MoveEvidence", "Pair",
    "ParamCoverage", "PriorTrial", "Reflection", "Rule", "SchemaVersionError", "StudyEvidence", "StudyMemory", "TransferRule", "TrialEntry",
    "TrialRef", "default_memory_dir", "descriptors", "distill", "ops_from_evidence", "profile_distance",
    "regime_condition", "render_for_prompt", "sanitize_text", "slugify", "study_evidence",
]
