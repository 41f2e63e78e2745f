"""Packaging: the pinned versions agree across cae/pins.py, setup.py and environment.yml;
the README's two commands are what `run` offers and CI runs."""

import ast
import os
import pathlib
import re
import runpy
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _environment_pins():
    pins = {}
    for line in (ROOT / "environment.yml").read_text().splitlines():
        match = re.match(r"\s*-\s*([A-Za-z0-9_.\-\[\]]+)==([\w.]+)\s*$", line)
        if match:
            pins[match.group(1)] = match.group(2)
    python = re.search(r"-\s*python=([\d.]+)", (ROOT / "environment.yml").read_text()).group(1)
    return pins, python


def test_environment_yml_matches_pins():
    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    expected = {**pins["RUNTIME"], **pins["TEST"], **pins["CLUSTER"]}
    found, python = _environment_pins()
    assert found == expected
    assert python == pins["PYTHON"]


def test_setup_py_reads_pins(monkeypatch):
    captured = {}
    import setuptools

    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(ROOT)
    runpy.run_path(str(ROOT / "setup.py"))
    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    assert captured["install_requires"] == [f"{k}=={v}" for k, v in pins["RUNTIME"].items()]
    assert captured["extras_require"]["test"] == [f"{k}=={v}" for k, v in {**pins["TEST"], **pins["CLUSTER"]}.items()]
    assert captured["extras_require"]["cluster"] == [f"{k}=={v}" for k, v in pins["CLUSTER"].items()]
    assert captured["entry_points"]["console_scripts"] == ["cae=cae.cli:main"]


def test_installed_versions_match_pins():
    """What is installed is what is pinned (a drifted environment fails here first)."""
    from importlib import metadata

    pins = runpy.run_path(str(ROOT / "cae" / "pins.py"))
    for name, version in pins["RUNTIME"].items():
        assert metadata.version(name) == version, name


def _commands(text):
    """The command lines of a shell text: comments, blank lines and variable set-up left out."""
    lines = (line.split("#")[0].strip() for line in text.splitlines())
    return [line for line in lines if line and not re.match(r"(export |set |cd |if |fi\b|\w+=)", line)]


def test_readme_first_block_is_the_main_job_and_the_tests():
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert _commands(block) == ["./run table2", "./run test"]
    assert (ROOT / "run").stat().st_mode & 0o111, "run must be executable (git update-index --chmod=+x run)"


def test_ci_runs_the_readme_test_command_and_nothing_else():
    commands = _commands((ROOT / ".ci" / "run").read_text())
    assert [c for c in commands if not c.startswith("echo ")] == ["./run test"]


def test_run_without_a_job_is_a_usage_error():
    result = subprocess.run(["sh", str(ROOT / "run")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "./run table2 | ./run test" in result.stderr


# --------------------------------------------------------------------------- import graph
PACKAGE = ROOT / "cae"
# Third-party packages whose import starts Keras (or TensorFlow, or ART, which imports it).
_KERAS = ("keras", "tensorflow", "art", "jax")


def _cae_imports(tree):
    """``(module, line, inside_a_function)`` for every import of a cae module in ``tree``."""
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            names = []
            if isinstance(child, ast.ImportFrom) and child.module == "cae":
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and (child.module or "").startswith("cae."):
                names = [child.module.split(".")[1]]
            elif isinstance(child, ast.Import):
                names = [alias.name.split(".")[1] for alias in child.names if alias.name.startswith("cae.")]
            found.extend((name, child.lineno, nested) for name in names if (PACKAGE / f"{name}.py").exists())
            visit(child, inner)

    visit(tree, False)
    return found


def _modules():
    return {path.stem: ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.glob("*.py"))}


def _starts_keras(modules):
    """The cae modules whose import (top-level statements only) imports Keras."""
    direct = set()
    for name, tree in modules.items():
        for node in tree.body:
            roots = [a.name.split(".")[0] for a in node.names] if isinstance(node, ast.Import) else \
                [(node.module or "").split(".")[0]] if isinstance(node, ast.ImportFrom) else []
            if set(roots) & set(_KERAS):
                direct.add(name)
    top = {name: {m for m, _, nested in _cae_imports(tree) if not nested} for name, tree in modules.items()}
    heavy, grown = set(direct), True
    while grown:
        grown = False
        for name, imported in top.items():
            if name not in heavy and imported & heavy:
                heavy.add(name)
                grown = True
    return heavy


def test_cae_imports_have_no_cycles():
    """cae's modules import each other one way: no cycle, whether an import is at the top
    of a file or inside a function (a function-level import hides a cycle, it does not
    remove it)."""
    graph = {name: {m for m, _, _ in _cae_imports(tree)} - {name} for name, tree in _modules().items()}
    state = {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if name in path:
            cycle = path[path.index(name):] + [name]
            raise AssertionError(f"import cycle: {' -> '.join(cycle)}")
        for other in sorted(graph[name]):
            visit(other, path + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


# cae's modules in layers (the README's order): a module imports only modules of earlier layers.
LAYERS = (
    ("__init__", "paths", "presets", "pins", "errors", "paper", "checks"),
    ("imagenet32", "scripts"),
    ("data", "preprocessing"),
    ("models", "ensemble", "stats", "scores", "tables", "remote"),
    ("zoo", "fingerprint", "attacks"),
    ("removal",),
    ("cluster",),
    ("experiments", "peers"),
    ("plan", "figures", "evaluation"),
    ("reports",),
    ("benchmark",),
    ("cli",),
)


def test_cae_imports_point_down_the_layers():
    layer = {name: i for i, names in enumerate(LAYERS) for name in names}
    modules = _modules()
    assert set(modules) == set(layer), "place every module of cae/ in LAYERS"
    upward = [f"cae.{name} imports cae.{module} (line {line})" for name, tree in modules.items()
              for module, line, _ in _cae_imports(tree) if layer[module] >= layer[name] and module != name]
    assert not upward, "; ".join(upward)


def test_cae_imports_are_at_the_top_unless_they_start_keras():
    """An import of a cae module inside a function is there only to keep Keras from
    starting when a lighter module is imported (``cae data``, the zoo's training
    workers): it must import a module whose import starts Keras."""
    modules = _modules()
    heavy = _starts_keras(modules)
    hidden = [f"cae/{name}.py:{line} imports cae.{module}" for name, tree in modules.items()
              for module, line, nested in _cae_imports(tree) if nested and module not in heavy]
    assert not hidden, "move these imports to the top of the file: " + "; ".join(hidden)


# The only cae modules imported inside functions, by importing module, and why there:
# each imports Keras, which the importing module must not start when it is imported.
FUNCTION_LEVEL_IMPORTS = {
    "cli": ({"attacks", "ensemble", "experiments", "models", "plan", "preprocessing"},
            "cae --help, cae data and cae verify --url start without Keras and TensorFlow"),
    "fingerprint": ({"models", "preprocessing"},
                    "loading and checking a fingerprint, and cae.removal / cae.cluster, do not start Keras"),
    "removal": ({"attacks", "models"},
                "the zoo's training workers (cae.cluster) import cae.removal before they set up Keras's "
                "threads and devices"),
    "zoo": ({"models"}, "the zoo's training workers import cae.zoo before they set up Keras"),
}


def test_function_level_cae_imports_are_the_allowed_ones():
    """A new import of a cae module inside a function fails here: put it at the top of the
    file, or add it to FUNCTION_LEVEL_IMPORTS with the reason. An allowed one that is gone
    fails too, so that the list stays exact."""
    found = {(name, module) for name, tree in _modules().items()
             for module, _, nested in _cae_imports(tree) if nested}
    allowed = {(name, module) for name, (modules, _) in FUNCTION_LEVEL_IMPORTS.items() for module in modules}
    assert not found - allowed, f"function-level imports not in FUNCTION_LEVEL_IMPORTS: {sorted(found - allowed)}"
    assert not allowed - found, f"FUNCTION_LEVEL_IMPORTS lists imports that are gone: {sorted(allowed - found)}"


def test_training_workers_and_the_cli_start_without_keras():
    """The modules a Ray training worker imports before it sets up Keras's threads and
    devices (cae.cluster and what it imports), and the CLI's, do not import Keras."""
    code = ("import sys, cae.cluster, cae.cli, cae.data; "
            f"print(sorted(m for m in {_KERAS!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
