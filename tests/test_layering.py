"""Imports run downward only: every module's imports are parsed and checked against the layers.

From the bottom up (a module may import its own unit and any lower layer, nothing else):

    0  the shared base        utils/errors.py, inputs.py, outputs.py, distributed.py, random_state.py
                              (at most six modules at the top of utils/)
    1  data, model            dataloader/ | models/            (two units: neither imports the other)
    2  options                options.py                       (the typed flags; the model types)
    4  evaluation             utils/evaluation/
    5  training, conformance, utils/training/ | utils/conformance/ | utils/benchmarking/
       benchmarking
    6  entry points           train.py | evaluate.py | each file of scripts/ and preprocessing/

Tests sit above everything and are not checked. Function-level imports count like any other.
"""
import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_PACKAGES = ("dataloader", "models", "preprocessing", "scripts", "utils", "options", "train", "evaluate")
BASE = ("utils/__init__.py", "utils/errors.py", "utils/inputs.py", "utils/outputs.py", "utils/distributed.py",
        "utils/random_state.py")
LAYERS = [  # (rank, unit, the paths in it: a file, or a folder ending in '/')
    (0, "the shared base", BASE),
    (1, "dataloader/", ("dataloader/",)), (1, "models/", ("models/",)),
    (2, "options.py", ("options.py",)),
    (4, "utils/evaluation/", ("utils/evaluation/",)),
    (5, "utils/training/", ("utils/training/",)), (5, "utils/conformance/", ("utils/conformance/",)),
    (5, "utils/benchmarking/", ("utils/benchmarking/",)),
    (6, "train.py", ("train.py",)), (6, "evaluate.py", ("evaluate.py",)),
]
ENTRY_POINT_FOLDERS = ("scripts/", "preprocessing/")  # layer 6, each file a unit of its own


def unit_of(path: str) -> tuple[int, str]:
    """(rank, unit) of a repository path such as 'utils/training/steps.py'."""
    if path.startswith(ENTRY_POINT_FOLDERS):
        return 6, path
    for rank, unit, paths in LAYERS:
        if any(path == member or (member.endswith("/") and path.startswith(member)) for member in paths):
            return rank, unit
    raise LookupError(f"{path} belongs to no layer: add it to LAYERS in tests/test_layering.py")


def module_path(root: Path, module: str):
    """The repository path of a dotted module name ('utils.outputs' -> 'utils/outputs.py'), or None."""
    parts = module.split(".")
    for candidate in ("/".join(parts) + ".py", "/".join(parts) + "/__init__.py"):
        if (root / candidate).is_file():
            return candidate
    return None


def imported_paths(root: Path, tree: ast.AST):
    """(line, imported module's repository path) of every project import in a parsed module."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in PROJECT_PACKAGES:
                continue
            path = module_path(root, name)
            if path is not None:
                yield node.lineno, path
                if isinstance(node, ast.ImportFrom):
                    break  # `from package import module` names the module, not the package


def project_modules(root: Path) -> list[str]:
    """The repository path of every module of the project (not tests/)."""
    modules = []
    for package in PROJECT_PACKAGES:
        if (root / f"{package}.py").is_file():
            modules.append(f"{package}.py")
        modules += sorted(path.relative_to(root).as_posix() for path in (root / package).rglob("*.py"))
    return modules


def layering_violations(root: Path) -> list[str]:
    """`file:line: ...` for every import of a higher layer or of another unit of the same layer."""
    violations = []
    for name in project_modules(root):
        source = root / name
        rank, unit = unit_of(name)
        for line, target in imported_paths(root, ast.parse(source.read_text(), name)):
            target_rank, target_unit = unit_of(target)
            if target_unit != unit and target_rank >= rank:
                direction = "a higher layer" if target_rank > rank else "another unit of its layer"
                violations.append(f"{name}:{line}: imports {target} ({direction}: {target_unit} is "
                                  f"layer {target_rank}, {unit} is layer {rank})")
    return violations


def test_imports_run_downward_only(repo_root):
    assert layering_violations(repo_root) == []


def test_the_top_of_utils_holds_at_most_six_shared_base_modules(repo_root):
    top = sorted(f"utils/{path.name}" for path in (repo_root / "utils").glob("*.py"))
    assert top == sorted(BASE) and len(top) - 1 <= 6


def test_every_module_has_a_layer(repo_root):
    modules = project_modules(repo_root)
    assert len(modules) > 40
    for module in modules:
        unit_of(module)


@pytest.mark.parametrize("importer, line, expected", [
    ("models/vilbert.py", "from utils.training.steps import base_step", "a higher layer"),
    ("models/vilbert.py", "from dataloader.collate import collate_dialog_batch", "another unit of its layer"),
    ("train.py", "import evaluate", "another unit of its layer"),
    ("utils/outputs.py", "def f():\n    from options import TrainOptions", "a higher layer"),
    ("utils/conformance/data.py", "from preprocessing import pre_process_visdial", "a higher layer"),
])
def test_an_upward_import_is_reported_with_its_file_and_line(tmp_path, importer, line, expected):
    for path in ("models/vilbert.py", "models/__init__.py", "dataloader/collate.py", "utils/training/steps.py",
                 "utils/outputs.py", "utils/conformance/data.py", "preprocessing/pre_process_visdial.py",
                 "preprocessing/__init__.py", "options.py", "train.py", "evaluate.py"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("")
    (tmp_path / importer).write_text(f"import os\n{line}\n")
    violations = layering_violations(tmp_path)
    line_number = line.count("\n") + 2
    assert len(violations) == 1 and violations[0].startswith(f"{importer}:{line_number}: imports ")
    assert expected in violations[0]
    (tmp_path / importer).write_text("import os\n")
    assert layering_violations(tmp_path) == []


def test_importing_the_metrics_does_not_load_the_models(repo_root):
    """utils/evaluation/__init__.py imports the ranker (and the models) only when it is asked for."""
    probe = ("import sys, utils.evaluation.metrics; loaded = sorted({m.split('.')[0] for m in sys.modules} & "
             "{'models', 'dataloader', 'options'}); from utils.evaluation import DialogRanker; "
             "print(loaded, 'models' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=repo_root, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(repo_root)}, check=True)
    assert result.stdout.split() == ["[]", "True"]
