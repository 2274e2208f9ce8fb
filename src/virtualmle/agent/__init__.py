"""The VirtualMLE agent and the OPRO baseline, as methods of the one search loop.

Importing this package registers ``agent`` and ``opro`` with `virtualmle.search.methods`, so
``virtualmle search --method agent|opro`` and ``virtualmle tune`` run through the same loop,
executor and storage as grid / random / TPE. See docs/agent.md.
"""

from virtualmle.agent.agent import AgentConfig, VirtualMLEAgent
from virtualmle.agent.candidates import Axis, Candidate, ProposalRejected, RuleHint, SpaceView, space_view
from virtualmle.agent.diagnostics import Diagnostics, Observation, diagnose
from virtualmle.agent.opro import OproMethod
from virtualmle.agent.surrogate import Surrogate, rank_candidates
from virtualmle.search.methods import register

register("agent", VirtualMLEAgent)
register("opro", OproMethod)

__all__ = [
    "AgentConfig", "Axis", "Candidate", "Diagnostics", "Observation", "OproMethod", "ProposalRejected",
    "RuleHint", "SpaceView", "Surrogate", "VirtualMLEAgent", "diagnose", "rank_candidates", "space_view",
]
