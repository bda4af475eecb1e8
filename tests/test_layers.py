"""The layers point down, no module imports in a cycle, and the installed package needs nothing
from the dev extra (README, "Layers").

The layers are import-linter contracts in pyproject.toml ([tool.importlinter]). Its import graph
(grimp) counts every import statement, those inside functions included, so a lazy import can
neither hide an upward import nor a cycle. Each check also runs on a planted package, so it is
shown to fail where it should.
"""

from __future__ import annotations

import importlib.metadata
import re
import tomllib
from pathlib import Path

import grimp
import pytest
from importlinter.application import use_cases
from importlinter.configuration import configure

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = ROOT / "pyproject.toml"
PROJECT = tomllib.loads(PYPROJECT.read_text())
CONFIG = PROJECT["tool"]["importlinter"]
INSTALLED = [p.rstrip("*") for p in PROJECT["tool"]["setuptools"]["packages"]["find"]["include"]]

configure()


def import_graph(*packages: str, type_checking: bool = True) -> grimp.ImportGraph:
    return grimp.build_graph(*packages, include_external_packages=False, cache_dir=None,
                             exclude_type_checking_imports=not type_checking)


def import_cycles(graph: grimp.ImportGraph) -> list[tuple[str, ...]]:
    """Each cycle once, as ``a -> b -> ... -> a``: an import whose target leads back to it."""
    cycles: dict[frozenset[str], tuple[str, ...]] = {}
    for importer in sorted(graph.modules):
        for imported in sorted(graph.find_modules_directly_imported_by(importer)):
            back = graph.find_shortest_chain(importer=imported, imported=importer)
            if back:
                cycles.setdefault(frozenset(back), (importer, *back))
    return list(cycles.values())


def unlayered(graph: grimp.ImportGraph, layers: list[str]) -> list[str]:
    """Modules that no layer names, neither themselves nor a package above them."""
    named = {m.strip() for layer in layers for m in layer.replace("|", ":").split(":")}

    def covered(module: str) -> bool:
        parts = module.split(".")
        ancestors = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
        # a package whose descendants the layers name (ragstream, ragstream.triton) holds no code
        return bool(ancestors & named) or any(n.startswith(module + ".") for n in named)

    return sorted(m for m in graph.modules if not covered(m))


def contracts_kept(config_file: Path) -> bool:
    """import-linter's own run (its report goes to stdout, which pytest shows on failure)."""
    return use_cases.lint_imports(config_filename=str(config_file), cache_dir=None, no_logo=True)


def test_the_layer_contracts_are_kept():
    assert contracts_kept(PYPROJECT), "an import points up a layer: see the report above"


def test_no_module_imports_in_a_cycle():
    # an import under ``if TYPE_CHECKING`` never runs, and it is how a module names in an
    # annotation the type of a module that imports it (schemas.cloudevents <- schemas.envelope)
    cycles = import_cycles(import_graph(*CONFIG["root_packages"], type_checking=False))
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_has_a_layer():
    graph = import_graph(*CONFIG["root_packages"])
    layers = next(c["layers"] for c in CONFIG["contracts"] if c["type"] == "layers")
    assert not unlayered(graph, layers), (
        "add these modules to a layer in pyproject.toml [tool.importlinter]")


def test_the_installed_package_imports_nothing_from_the_dev_extra():
    """``ragstream chaos`` imported hypothesis, so it failed on a production install."""

    def name(requirement: str) -> str:
        return re.split(r"[\s<>=!~;\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    extras = PROJECT["project"]["optional-dependencies"]
    dev_only = {name(r) for r in extras["dev"]}
    dev_only -= {name(r) for r in PROJECT["project"]["dependencies"]}
    # another extra is part of the installed package, on demand (``ragstream[adapters]``); the
    # dev extra names the package itself to pull those in
    dev_only -= {name(r) for extra, needs in extras.items() if extra != "dev" for r in needs}
    dev_only.discard(PROJECT["project"]["name"])
    distributions = importlib.metadata.packages_distributions()
    graph = grimp.build_graph(*INSTALLED, include_external_packages=True, cache_dir=None)
    offenders = {
        external: sorted(graph.find_modules_that_directly_import(external))
        for external in graph.modules
        if {name(d) for d in distributions.get(external, [])} & dev_only}
    assert not offenders, f"installed modules import dev-only packages: {offenders}"


# the checks fail where they should -------------------------------------------------------------


@pytest.fixture
def planted(tmp_path, monkeypatch) -> Path:
    """``planted.low`` imports ``planted.high`` inside a function; ``high`` imports ``low``."""
    package = tmp_path / "planted"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "low.py").write_text("def lazy():\n    from planted import high\n    return high\n")
    (package / "high.py").write_text("from planted import low\n")
    (package / "stray.py").write_text("")
    (tmp_path / "pyproject.toml").write_text(
        '[tool.importlinter]\nroot_package = "planted"\n\n'
        '[[tool.importlinter.contracts]]\nname = "planted layers"\ntype = "layers"\n'
        'layers = ["planted.high", "planted.low"]\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def test_an_import_inside_a_function_that_points_up_breaks_the_contract(planted):
    assert not contracts_kept(planted / "pyproject.toml")


def test_a_cycle_through_an_import_inside_a_function_is_found(planted):
    assert import_cycles(import_graph("planted")) == [("planted.high", "planted.low",
                                                       "planted.high")]


def test_a_module_outside_every_layer_is_found(planted):
    assert unlayered(import_graph("planted"), ["planted.high", "planted.low"]) == [
        "planted.stray"]
