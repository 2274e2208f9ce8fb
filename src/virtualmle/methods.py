"""The method registry: every name ``--method`` / ``--methods`` accepts, above both the classic
methods (`virtualmle.search.methods`) and the agent package (`virtualmle.agent`).

Neither of those imports this module, so there is no import cycle. Built-in methods are named by
``module:attribute`` and imported only when built: `method_names` costs nothing, and a broken
import of the agent is raised as what it is (an ImportError naming the module), never hidden as
"unknown method".

    from virtualmle.methods import get_method, method_names, register
    method = get_method("tpe", space=space, seed=0)
    register("mine", MyMethod)   # a factory called as factory(space=..., seed=..., **options)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Callable

from virtualmle.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from virtualmle.search.method import Method
    from virtualmle.search.space import SearchSpace

MethodFactory = Callable[..., "Method"]

_BUILTIN: dict[str, str] = {
    "grid": "virtualmle.search.methods:GridSearch",
    "random": "virtualmle.search.methods:RandomSearch",
    "tpe": "virtualmle.search.methods:TPESearch",
    "default": "virtualmle.search.methods:DefaultControl",
    "agent": "virtualmle.agent.agent:VirtualMLEAgent",
    "opro": "virtualmle.agent.opro:OproMethod",
}
_REGISTRY: dict[str, MethodFactory | str] = dict(_BUILTIN)
# Methods that take ``llm=`` (an LLMClient, LLMOptions, a spec string or None) and write llm_log.jsonl.
LLM_METHODS = frozenset({"agent", "opro"})


def register(name: str, factory: MethodFactory) -> None:
    """Make ``--method NAME`` build ``factory(space=..., seed=..., **options)``."""
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    """Every registered method name (nothing is imported)."""
    return sorted(_REGISTRY)


def get_method(name: str, *, space: SearchSpace, seed: int = 0, **options: Any) -> Method:
    """Build the method registered as ``name``.

    Raises:
        ConfigError: no method of that name.
    """
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method {name!r}: use one of {', '.join(method_names())}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attr = factory.partition(":")
        factory = getattr(importlib.import_module(module), attr)
    return factory(space=space, seed=seed, **options)
