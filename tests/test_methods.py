"""The method registry above search and agent: names without imports, no import cycle, and a
broken import raised as what it is."""

from __future__ import annotations

import subprocess
import sys

import pytest

from virtualmle import methods
from virtualmle.errors import ConfigError
from virtualmle.search.space import load_space


def test_names_need_no_import_and_search_does_not_import_the_agent() -> None:
    code = ("import sys; from virtualmle.methods import method_names; import virtualmle.search.methods, "
            "virtualmle.search.loop; print(method_names(), 'virtualmle.agent' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['agent', 'default', 'grid', 'opro', 'random', 'tpe'] False"


def test_a_broken_import_is_an_import_error_not_an_unknown_method(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(methods._REGISTRY, "broken", "virtualmle.no_such_module:Method")
    with pytest.raises(ModuleNotFoundError, match="virtualmle.no_such_module"):
        methods.get_method("broken", space=load_space("sasrec"))
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        methods.get_method("nope", space=load_space("sasrec"))
