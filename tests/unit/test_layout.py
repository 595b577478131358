"""The layout of DESIGN.md holds: one import root, four layers, clean imports."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.unit

ENGINES = ("ray", "prefect")


def _run(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_platform_is_still_the_standard_module_from_the_repo_root():
    out = _run(
        "import platform, json; print(json.dumps([platform.__file__, platform.python_version()]))"
    )
    path, version = json.loads(out)
    assert "/platform/regimes" not in path and not path.startswith(str(REPO_ROOT))
    assert version.count(".") == 2
    assert not (REPO_ROOT / "platform" / "__init__.py").exists()


def test_import_root_maps_the_four_layers():
    out = _run(
        "import json, regimes, regimes.jobs, regimes.serve, regimes.flows as f;"
        "print(json.dumps([m.__file__ for m in (regimes, regimes.jobs, regimes.serve, f)]))"
    )
    core, jobs, serve, flows = json.loads(out)
    assert core.startswith(str(REPO_ROOT / "platform" / "regimes"))
    assert jobs.startswith(str(REPO_ROOT / "jobs"))
    assert serve.startswith(str(REPO_ROOT / "serve"))
    assert flows.startswith(str(REPO_ROOT / "flows"))


def test_core_never_imports_the_engines():
    """Import every core module in a fresh interpreter and inspect the real import graph."""
    code = """
import importlib, json, pkgutil, sys
import regimes
core = [m.name for m in pkgutil.walk_packages(regimes.__path__, 'regimes.')
        if m.name.split('.')[1] not in ('jobs', 'serve', 'flows', '__main__')]
for name in core:
    importlib.import_module(name)
print(json.dumps({'modules': core, 'loaded': sorted(sys.modules)}))
"""
    data = json.loads(_run(code))
    assert "regimes.app.cli" in data["modules"] and "regimes.data.sql" in data["modules"]
    offending = [m for m in data["loaded"] if m.split(".")[0] in ENGINES]
    assert offending == [], f"the core pulled in engine modules: {offending[:10]}"


def test_importing_the_core_does_no_io_and_configures_no_logging(tmp_path):
    code = """
import logging, os, pkgutil, importlib, regimes
before = set(os.listdir('.'))
for m in pkgutil.walk_packages(regimes.__path__, 'regimes.'):
    if m.name.split('.')[1] not in ('jobs', 'serve', 'flows', '__main__'):
        importlib.import_module(m.name)
assert set(os.listdir('.')) == before, 'files appeared on import'
assert logging.getLogger().handlers == [], 'root logging configured on import'
print('ok')
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "module, allowed",
    [
        ("sqlalchemy", {"regimes.data.sql"}),
        ("torch", {"regimes.model.encoders.vae"}),
        ("hmmlearn", {"regimes.model.hmm._hmmlearn"}),
        (
            "deltalake",
            {
                "regimes.storage.registry",
                "regimes.storage.state_store",
                "regimes.storage.drift_reports",
            },
        ),
        ("evidently", {"regimes.drift.report"}),
    ],
)
def test_adapters_are_the_only_importers(module, allowed):
    """Style rule 3: one adapter module per heavy dependency."""
    offenders = []
    for path in (REPO_ROOT / "platform" / "regimes").rglob("*.py"):
        name = "regimes." + ".".join(
            path.relative_to(REPO_ROOT / "platform" / "regimes").with_suffix("").parts
        )
        text = path.read_text()
        if f"import {module}" in text or f"from {module}" in text:
            if name not in allowed:
                offenders.append(name)
    assert offenders == []


ENGINE_LAYERS = ("regimes.jobs", "regimes.flows", "regimes.serve")
CORE = REPO_ROOT / "platform" / "regimes"
APP = CORE / "app"


def _imported_names(tree, package: str = "regimes") -> list[tuple[int, str]]:
    """Every module an AST imports, at any depth (functions, classes, branches), relative
    imports resolved against ``package`` (the module's own package), plus
    ``importlib.import_module`` / ``__import__`` calls, by line."""
    import ast

    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = package.split(".")[: max(len(package.split(".")) - node.level + 1, 0)]
                module = ".".join([*base, module] if module else base)
            found.append((node.lineno, module))
            # ``from regimes import jobs`` names the engine layer through its alias.
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                found.append((node.lineno, f"<dynamic import: {name}>"))
    return found


def _offending(name: str) -> bool:
    return (
        name.split(".")[0] in ENGINES
        or name.startswith(ENGINE_LAYERS)
        or name == "regimes.app"
        or name.startswith("regimes.app.")  # the layer above: it reaches the engines
        or name in ("importlib", "importlib.import_module")  # resources/metadata are fine
        or name.startswith("<dynamic import")
    )


def _core_offenders(root) -> list[str]:
    import ast

    offenders = []
    for path in root.rglob("*.py"):
        if APP in path.parents or path == root / "__main__.py":
            continue  # the application layer (and `python -m regimes`, its entry point)
        tree = ast.parse(path.read_text())
        parts = path.relative_to(root).with_suffix("").parts
        package = ".".join(("regimes", *parts[:-1]))
        offenders += [
            f"{path.relative_to(root)}:{line}: {name}"
            for line, name in _imported_names(tree, package)
            if _offending(name)
        ]
    return offenders


def test_no_core_module_imports_an_engine_anywhere():
    """Every import of the core, function-level ones included: no ray, prefect, jobs,
    flows or serve, and no importlib detour; only regimes.app bridges to the engines."""
    assert _core_offenders(CORE) == []


def test_the_layering_check_sees_imports_inside_functions(tmp_path):
    """The check above must catch what a module-level scan would miss."""
    package = tmp_path / "regimes_like"
    package.mkdir()
    (package / "ok.py").write_text("import json\n\ndef f():\n    from regimes import data\n")
    (package / "hidden.py").write_text(
        "def f():\n    if True:\n        from regimes.flows.train import train\n"
    )
    (package / "detour.py").write_text(
        "import importlib\n\ndef f():\n    return importlib.import_module('ray')\n"
    )
    (package / "aliased.py").write_text("class A:\n    def m(self):\n        import ray.serve\n")
    (package / "member.py").write_text("def f():\n    from regimes import jobs\n")
    (package / "up.py").write_text("def f():\n    from .jobs import runtime\n")
    (package / "sub").mkdir()
    (package / "sub" / "deep.py").write_text("def f():\n    from ..flows import train\n")
    (package / "above.py").write_text("def f():\n    from regimes.app import workspace\n")
    (package / "getattr.py").write_text(
        "import importlib\n\ndef f():\n    return getattr(importlib, 'import_' + 'module')\n"
    )
    (package / "fine.py").write_text("import importlib.resources\nfrom . import paths\n")
    offenders = sorted({o.split(":")[0] for o in _core_offenders(package)})
    assert offenders == [
        "above.py",
        "aliased.py",
        "detour.py",
        "getattr.py",
        "hidden.py",
        "member.py",
        "sub/deep.py",
        "up.py",
    ]


def test_the_app_layer_reaches_the_engines_with_plain_imports():
    """regimes.app is the bridge: it imports jobs and flows directly, never via importlib."""
    import ast

    names = []
    for path in APP.rglob("*.py"):
        names += [name for _, name in _imported_names(ast.parse(path.read_text()))]
    assert not [n for n in names if n.startswith("<dynamic import")]
    assert any(n.startswith("regimes.jobs") for n in names)
    assert any(n.startswith("regimes.flows") for n in names)


def test_the_demo_calls_use_cases_not_the_cli():
    """The CLI runs the demo use case; the demo never reaches back into the CLI."""
    import ast

    tree = ast.parse((APP / "demo.py").read_text())
    names = [name for _, name in _imported_names(tree)]
    assert not [n for n in names if n.startswith(("regimes.app.cli", "regimes.app.parser"))]
    assert "argparse" not in names


def test_engine_layers_hold_no_domain_arithmetic():
    """jobs/, serve/, flows/ stay thin: no numpy/pandas arithmetic of their own."""
    for folder in ("jobs", "serve", "flows"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            text = path.read_text()
            assert "import numpy" not in text and "import pandas" not in text, path
