"""Every public name has a place in the API reference (docs/api.md): ``lwpd.__all__`` and the
``__all__`` of each public module are compared against the reference's directives."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

API = (Path(__file__).resolve().parents[1] / "docs" / "api.md").read_text()
MODULES = ["lwpd", "lwpd.cluster", "lwpd.robust", "lwpd.schemes", "lwpd.problems", "lwpd.stragglers", "lwpd.cost",
           "lwpd.placement", "lwpd.sklearn", "lwpd.torch"]


def documented() -> dict[str, set[str]]:
    """Names per module, from autoclass/autofunction (top level lwpd unless qualified) and
    automodule ``:members:`` lists (a bare ``:members:`` documents the module's ``__all__``)."""
    names: dict[str, set[str]] = {}
    for kind, target in re.findall(r"\.\. auto(class|function|module):: ([\w.]+)", API):
        if kind == "module":
            block = re.split(r"```|\n\.\. ", API.split(f".. automodule:: {target}", 1)[1], maxsplit=1)[0]
            members = re.search(r":members:(.*)", block)
            listed = members.group(1).strip() if members else ""
            if members and not listed:
                listed = ",".join(importlib.import_module(target).__all__)
            names.setdefault(target, set()).update(n.strip() for n in listed.split(",") if n.strip())
        else:
            module, _, name = target.rpartition(".")
            names.setdefault(module or "lwpd", set()).add(name)
    return names


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_is_in_the_api_reference(module):
    pytest.importorskip("torch") if module == "lwpd.torch" else None
    public = set(importlib.import_module(module).__all__)
    missing = public - documented().get(module, set())
    assert not missing, f"{module}: {sorted(missing)} are public but not in docs/api.md"


def test_the_reference_names_only_what_exists():
    for module, names in documented().items():
        mod = importlib.import_module(module)
        assert not [n for n in names if not hasattr(mod, n)], module
