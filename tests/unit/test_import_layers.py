"""gluondet's modules import downward only: data flows config -> dataset -> model -> engine -> run
folder -> eval/detect/export, and an import against that flow (even inside a function) is a cycle
waiting to happen. Each module belongs to the first layer listing a prefix of its name."""
import ast
from pathlib import Path

import gluondet

PACKAGE = Path(gluondet.__file__).parent

# lowest first; a module may import its own layer and the layers below
LAYERS = [
    ["gluondet", "gluondet.errors", "gluondet.layouts", "gluondet.extras"],
    ["gluondet.constants", "gluondet.fileio", "gluondet.ranges", "gluondet.runtime", "gluondet.precision",
     "gluondet.image", "gluondet.progress", "gluondet.viz", "gluondet.run_layout",
     "gluondet.export_folder"],
    ["gluondet.config"],
    ["gluondet.data"],
    ["gluondet.eval.html_report"],  # placeholder: html_report reads run folders (layer of run_folder)
    ["gluondet.eval"],
    ["gluondet.families"],
    ["gluondet.models"],
    ["gluondet.run_folder", "gluondet.run_lock", "gluondet.run_commit", "gluondet.run_claim"],
    ["gluondet.engine"],
    ["gluondet.predict"],
    ["gluondet.pipeline", "gluondet.serve"],
    ["gluondet.export"],
    ["gluondet.cli", "gluondet.__main__"],
]
# modules placed above their package's layer (they read what a higher layer writes)
PLACED = {"gluondet.eval.html_report": "gluondet.run_folder"}


def module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module):
    module = PLACED.get(module, module)
    best = None
    for i, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (i, len(prefix))
    return best[0]


def imported_modules(path):
    """(line, gluondet module) of every import of a gluondet module in ``path``, anywhere in it."""
    module = module_name(path)
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
            for alias in node.names:  # "from . import hooks" imports a module, "from .x import y" a name
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                              or (PACKAGE.parent / Path(*sub.split("."))).is_dir() else target))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, name) for line, name in found if name == "gluondet" or name.startswith("gluondet.")]


def test_no_module_imports_a_layer_above_its_own():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        for line, target in imported_modules(path):
            if layer_of(target) > layer_of(module):
                upward.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {module} imports {target}")
    assert not upward, "imports against the data flow:\n" + "\n".join(upward)


def test_every_module_has_a_layer():
    for path in PACKAGE.rglob("*.py"):
        assert layer_of(module_name(path)) is not None, path


def test_the_layer_check_sees_an_upward_import(tmp_path):
    assert layer_of("gluondet.data.loader") < layer_of("gluondet.models")  # so data -> models is upward
    assert layer_of("gluondet.eval.html_report") == layer_of("gluondet.run_folder")
