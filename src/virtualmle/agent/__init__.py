"""The VirtualMLE agent and the OPRO baseline, as methods of the one search loop.

`virtualmle.methods` registers ``agent`` and ``opro`` (this package does not import the
registry), so ``virtualmle search --method agent|opro`` and ``virtualmle tune`` run through the
same loop, executor and storage as grid / random / TPE. See docs/agent.md.
"""

from virtualmle.agent.agent import VirtualMLEAgent
from virtualmle.agent.config import AgentConfig
from virtualmle.agent.candidates import Candidate, RuleHint
from virtualmle.agent.diagnostics import Diagnostics, Observation, diagnose
from virtualmle.agent.llm_call import LLMCaller, LLMOptions
from virtualmle.agent.opro import OproMethod
from virtualmle.agent.space_view import Axis, ProposalRejected, SpaceView, space_view
from virtualmle.agent.surrogate import Surrogate, rank_candidates

__all__ = [
    "AgentConfig", "Axis", "Candidate", "Diagnostics", "LLMCaller", "LLMOptions", "Observation", "OproMethod",
    "ProposalRejected",
    "RuleHint", "SpaceView", "Surrogate", "VirtualMLEAgent", "diagnose", "rank_candidates", "space_view",
]
