"""Imports flow one way: data -> modeling -> evaluation -> engine -> {benchmark, demo, studies} -> tools; config.py
and compat.py sit under all of them. A module may import from its own package and the layers before it, never from
a later layer nor from another package of its own layer (config and compat, or benchmark, demo and studies, are
independent of each other)."""
import ast
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "cxr_codet"


# Layers in import order; the packages of one layer sit side by side and do not import each other.
LAYERS = (("config", "compat"), ("data",), ("modeling",), ("evaluation",), ("engine",), ("benchmark", "demo", "studies"),
          ("tools",))


RANK = {package: rank for rank, layer in enumerate(LAYERS) for package in layer}


def layer_of(module: str):
    """The layer of a dotted module name inside cxr_codet ("cxr_codet.data.build" -> "data"); None outside
    the layers (third-party modules, the package root)."""
    parts = module.split(".")
    if parts[0] != "cxr_codet" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in RANK else None


def imported_modules(source: str, module: str, is_package: bool):
    """(line, dotted name) of every module that `source` (the text of `module`) imports, relative imports
    resolved; `is_package`: the source is a package's __init__.py."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            if layer_of(target) is not None:
                yield node.lineno, target
            else:  # `from .. import data`, `from cxr_codet import engine`: the names are the modules
                yield from ((node.lineno, f"{target}.{alias.name}") for alias in node.names)


def backward_imports(path: Path, module: str, layer: str, source: str = None):
    """'file:line imports X (L layer)' for each import of `path` (or of `source` as if it were that file) from
    a layer after `layer`."""
    rank = RANK[layer]
    source = path.read_text() if source is None else source
    found = []
    for line, name in imported_modules(source, module, path.name == "__init__.py"):
        target = layer_of(name)
        if target is None or target == layer:
            continue
        if RANK[target] >= rank:  # a later layer, or another package of the same layer
            found.append(f"{path.relative_to(REPO_ROOT)}:{line} imports {name} ({target} layer)")
    return found


def sources():
    """(path, dotted module, layer) of every module in cxr_codet's layers and tools/."""
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(REPO_ROOT).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        layer = layer_of(module)
        if layer is not None:
            yield path, module, layer
    for path in sorted((REPO_ROOT / "tools").glob("*.py")):
        yield path, f"tools.{path.stem}", "tools"


def test_every_module_imports_only_from_its_own_and_earlier_layers():
    found = [problem for path, module, layer in sources() for problem in backward_imports(path, module, layer)]
    assert not found, "imports that run backwards:\n" + "\n".join(found)


@pytest.mark.parametrize("module, source, message", [
    ("cxr_codet.data.datasets.probe", "from ...modeling.text import build_text_encoder\n",
     "cxr_codet/data/datasets/probe.py:2 imports cxr_codet.modeling.text (modeling layer)"),
    ("cxr_codet.modeling.localization.probe", "from cxr_codet.evaluation import x\n",
     "cxr_codet/modeling/localization/probe.py:2 imports cxr_codet.evaluation (evaluation layer)"),
    ("cxr_codet.modeling.probe", "from .. import engine\n",
     "cxr_codet/modeling/probe.py:2 imports cxr_codet.engine (engine layer)"),
    ("cxr_codet.config", "from .compat import apply\n", "cxr_codet/config.py:2 imports cxr_codet.compat (compat layer)"),
    ("cxr_codet.engine.probe", "import cxr_codet.demo.cli\n",
     "cxr_codet/engine/probe.py:2 imports cxr_codet.demo.cli (demo layer)"),
    ("cxr_codet.studies.probe", "from ..benchmark.tasks import BENCHMARK_TASKS\n",
     "cxr_codet/studies/probe.py:2 imports cxr_codet.benchmark.tasks (benchmark layer)"),
])
def test_a_backward_import_is_found_with_its_file_and_line(module, source, message):
    path = REPO_ROOT.joinpath(*module.split(".")).with_suffix(".py")
    assert backward_imports(path, module, layer_of(module), "import os\n" + source) == [message]


def test_imports_from_the_own_and_earlier_layers_pass():
    source = ("import torch\nfrom detectron2.data import DatasetCatalog\nfrom ...data.build import x\n"
              "from ..text import build_text_encoder\nfrom cxr_codet.config import add_cxr_codet_config\n"
              "from ... import compat\n")
    module = "cxr_codet.modeling.localization.probe"
    assert backward_imports(REPO_ROOT / "cxr_codet/modeling/localization/probe.py", module, "modeling", source) == []
