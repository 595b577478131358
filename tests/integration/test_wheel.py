"""A wheel (non-editable) install works outside the checkout: the default config ships inside
the package, and nothing reaches back into the source tree."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest
import yaml

from regimes.config.loading import load_config
from regimes.config.spec import FIXED_FEATURES
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.integration

# The packaged copy of timeframes.yaml is made to differ from the checkout's, so the
# pipeline's answer shows which of the two it read.
LEFT_OUT_OF_5M = ("tod_sin", "stoch_k")
PACKAGED_CONFIG_FILES = ("features.yaml", "timeframes.yaml", "metadata.schema.json")

PROBE = """
import json, regimes
from regimes.config.loading import default_config_dir
from regimes.config.settings import resolve_settings
from regimes.training.provenance import git_revision
print(json.dumps({
    "regimes": regimes.__file__,
    "default_config_dir": str(default_config_dir()),
    "settings_config_dir": str(resolve_settings().config_dir),
    "git_revision": git_revision(),
}))
"""


def _copy_build_inputs(destination: Path) -> None:
    """Copy what the build reads (pyproject, readme, every package-dir) and nothing else:
    a stale ``build/`` of the checkout could otherwise slip files into the wheel."""
    pyproject = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    package_dirs = pyproject["tool"]["setuptools"]["package-dir"].values()
    roots = {Path(folder).parts[0] for folder in package_dirs}
    destination.mkdir()
    for name in ("pyproject.toml", pyproject["project"]["readme"]):
        shutil.copy2(REPO_ROOT / name, destination / name)
    for root in sorted(roots):
        shutil.copytree(
            REPO_ROOT / root, destination / root, ignore=shutil.ignore_patterns("__pycache__")
        )


def _edit_packaged_5m_features(source: Path) -> list[str]:
    """Give the copy's 5m timeframe an explicit feature list without LEFT_OUT_OF_5M."""
    path = source / "config" / "timeframes.yaml"
    config = yaml.safe_load(path.read_text())
    features = [name for name in FIXED_FEATURES if name not in LEFT_OUT_OF_5M]
    config["timeframes"]["5m"]["features"] = features
    config["timeframes"]["5m"]["feature_budget"] = len(features)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return features


def _run(command: list, cwd: Path, env: dict, timeout: int = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{command}: {result.stderr[-3000:]}"
    return result


def _last_json(result: subprocess.CompletedProcess) -> dict:
    return json.loads(result.stdout.strip().splitlines()[-1])


def _venv_with_wheel(venv: Path, wheel: Path) -> Path:
    """A fresh venv holding the wheel; its dependencies come from this test's venv through
    a ``.pth`` line (the .pth files *inside* that directory, e.g. the editable finder of
    the checkout, are not processed, so ``regimes`` can only come from the wheel)."""
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent, env=os.environ)
    python = venv / "bin" / "python"
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps"]
        + ["--no-index", wheel],
        cwd=venv.parent,
        env=os.environ,
    )
    site_packages = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            cwd=venv.parent,
            env=os.environ,
        ).stdout.strip()
    )
    dependency_dirs = dict.fromkeys(
        [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    )
    (site_packages / "test_dependencies.pth").write_text("\n".join(dependency_dirs) + "\n")
    return site_packages


def test_wheel_install_runs_a_pipeline_outside_the_checkout_on_its_packaged_config(tmp_path):
    assert not tmp_path.resolve().is_relative_to(REPO_ROOT), "the test needs a tmp dir outside"
    # A git repository around the venv: provenance must not report *its* revision.
    git = ["git", "-C", tmp_path, "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    _run(git + ["init", "-q"], cwd=tmp_path, env=os.environ)
    _run(
        git + ["-c", "commit.gpgsign=false", "commit", "-q", "--allow-empty", "-m", "trap"],
        cwd=tmp_path,
        env=os.environ,
    )

    source = tmp_path / "source"
    _copy_build_inputs(source)
    packaged_5m_features = _edit_packaged_5m_features(source)
    checkout_5m_features = load_config(REPO_ROOT / "config").timeframe("5m").selected_features
    assert set(LEFT_OUT_OF_5M) <= set(checkout_5m_features)
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["--no-index", "--wheel-dir", tmp_path / "dist", source],
        cwd=tmp_path,
        env=os.environ,
    )
    (wheel,) = (tmp_path / "dist").glob("regimes-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    for name in PACKAGED_CONFIG_FILES:
        assert f"regimes/config/defaults/{name}" in names

    site_packages = _venv_with_wheel(tmp_path / "venv", wheel)
    work = tmp_path / "work"
    work.mkdir()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTHON", "REGIMES_", "VIRTUAL_ENV"))
    }
    env["REGIMES_HOME"] = str(work / "home")
    python = tmp_path / "venv" / "bin" / "python"
    regimes = tmp_path / "venv" / "bin" / "regimes"

    where = _last_json(_run([python, "-c", PROBE], cwd=work, env=env))
    installed = Path(where["regimes"]).resolve()
    assert installed.is_relative_to(site_packages) and not installed.is_relative_to(REPO_ROOT)
    packaged_config = site_packages / "regimes" / "config" / "defaults"
    assert Path(where["default_config_dir"]) == packaged_config
    assert Path(where["settings_config_dir"]) == packaged_config
    assert where["git_revision"] is None

    synth = _last_json(_run([regimes, "synth", "--symbols", 2, "--days", 5], cwd=work, env=env))
    assert synth["symbols"] == ["SYN000", "SYN001"] and synth["bars_written"] > 0
    assert (work / "home" / "regimes.db").is_file()
    resample = _last_json(_run([regimes, "resample"], cwd=work, env=env))
    assert resample["rows_written"]["5m"] > 0
    features = _last_json(_run([regimes, "features", "--executor", "local"], cwd=work, env=env))
    assert features["failed"] == [] and features["rows_written"]["5m"] > 0

    # encode reads the 5m feature list from the default config: the packaged copy's.
    encode = _last_json(_run([regimes, "encode", "--timeframe", "5m"], cwd=work, env=env))
    report = encode["timeframes"]["5m"]
    considered = set(report["selected"]) | {d["feature"] for d in report["dropped"]}
    assert considered == set(packaged_5m_features) != set(checkout_5m_features)


def test_provenance_names_the_checkout_revision_when_run_from_source():
    """The counterpart of the wheel's None: an editable install reports this checkout's HEAD."""
    from regimes.training.provenance import git_revision

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_revision() == head
