"""tools/: every entry point is thin, one call into the package and nothing else (detectron2's tools layout)."""
import ast
import importlib.util

import pytest
from conftest import REPO_ROOT

from cxr_codet.benchmark.cli import main as benchmark_main
from cxr_codet.engine.launcher import run_train_net
from cxr_codet.studies.cli import ablation_table_main, run_study_main

TOOLS = sorted((REPO_ROOT / "tools").glob("*.py"))


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: p.name)
def test_tool_defines_nothing_and_calls_one_package_function(path):
    tree = ast.parse(path.read_text())
    assert not [node for node in tree.body if isinstance(node, (ast.FunctionDef, ast.ClassDef))], path.name
    package_imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module
                       and node.module.startswith("cxr_codet")]
    assert len(package_imports) == 1 and len(package_imports[0].names) == 1, path.name
    entry = package_imports[0].names[0].asname or package_imports[0].names[0].name
    main_block = [node for node in tree.body if isinstance(node, ast.If)]
    assert len(main_block) == 1 and entry in ast.unparse(main_block[0]), path.name


@pytest.mark.parametrize("tool, entry, name", [
    ("train_net.py", run_train_net, "run_train_net"),
    ("run_study.py", run_study_main, "run_study_main"),
    ("ablation_table.py", ablation_table_main, "ablation_table_main"),
    ("benchmark.py", benchmark_main, "main"),
])
def test_tool_runs_the_package_entry_point(tool, entry, name):
    spec = importlib.util.spec_from_file_location(f"tool_{tool[:-3]}", REPO_ROOT / "tools" / tool)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert getattr(module, name) is entry
