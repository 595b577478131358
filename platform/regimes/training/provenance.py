"""What makes a model reproducible: data fingerprint, package versions, git revision."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd

# =========================================================================== packaging


def _stable(obj):
    """A copy without wall-clock attributes (``*_seconds_``), so the same inputs pickle to
    the same bytes (a model_id's content never depends on how fast the machine was)."""
    import copy

    clone = copy.copy(obj)
    for name in [n for n in vars(clone) if n.endswith("seconds_")]:
        delattr(clone, name)
    return clone


def data_fingerprint(frame: pd.DataFrame) -> str:
    """sha256 of the training frame's content (keys, features, closes, flags).

    ``minute_of_day`` is left out: it follows from ``ts`` and the market calendar, which
    the artifact's resolved config already fingerprints."""
    from regimes.data.synth import content_sha256

    columns = sorted(c for c in frame.columns if c != "minute_of_day")
    return content_sha256(frame.sort_values(["symbol", "ts"]).reset_index(drop=True), columns)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in (
        "numpy",
        "pandas",
        "scikit-learn",
        "scipy",
        "hmmlearn",
        "torch",
        "onnx",
        "onnxruntime",
        "pyarrow",
        "deltalake",
        "sqlalchemy",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def git_revision() -> str | None:
    """The commit the running code came from, or ``None`` when that cannot be known.

    Run from a source checkout (an editable install), git answers for that checkout
    only. An install of a VCS URL answers with the commit the installer recorded
    (PEP 610 ``direct_url.json``). Anything else, e.g. a wheel, has no revision: asking
    git from inside ``site-packages`` would name whichever repository happens to hold
    the virtual environment.
    """
    checkout = _source_checkout()
    if checkout is not None:
        return _git_head(checkout)
    return _recorded_vcs_commit()


def _source_checkout() -> Path | None:
    """The repository root when ``regimes`` runs from its source tree (``platform/regimes``)."""
    import regimes

    package_dir = Path(regimes.__file__).resolve().parent
    root = package_dir.parents[1]
    if package_dir.parent.name != "platform" or not (root / "pyproject.toml").is_file():
        return None
    return root


def _git_head(checkout: Path) -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--show-toplevel", "HEAD"],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = result.stdout.split()
    if result.returncode != 0 or len(lines) != 2:
        return None
    toplevel, head = lines
    # A copied source tree without .git may sit inside another repository: not ours.
    return head if Path(toplevel).resolve() == checkout else None


def _recorded_vcs_commit() -> str | None:
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        text = distribution("regimes").read_text("direct_url.json")
    except PackageNotFoundError:
        return None
    try:
        commit = json.loads(text or "{}").get("vcs_info", {}).get("commit_id")
    except (json.JSONDecodeError, AttributeError):
        return None
    return commit if isinstance(commit, str) else None
