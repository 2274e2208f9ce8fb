"""Say once per study that the LLM's replies were unusable and the code's choice ran instead.

Without it only storage and the LLM log showed that an agent study ran on code alone (issue 15).
Kept out of the agent class so the notice is one call from wherever the agent's step ends.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def llm_fallback(step: dict[str, Any]) -> bool:
    """Whether a step's ``fallback`` came from unusable LLM replies (not an exhausted space)."""
    return str(step.get("fallback") or "").startswith("llm")


class FallbackNotice:
    """Counts a study's LLM fallbacks; the first one in this process prints one line."""

    def __init__(self) -> None:
        self.said = False

    def note(self, step: dict[str, Any], history: list[Any], study: str) -> None:
        """Call once per proposal with its ``agent`` step record and the study's history."""
        if self.said or not llm_fallback(step):
            return
        before = sum(1 for r in history if llm_fallback((r.user_attrs or {}).get("agent") or {}))
        self.said = True
        logger.warning(
            "agent (study %s): the LLM's replies were unusable (%s), so the code's own choice runs "
            "instead; fallbacks in this study: %d (said once; each trial's 'agent' attr and the LLM "
            "log have the details)", study, str(step["fallback"])[:80], before + 1)
