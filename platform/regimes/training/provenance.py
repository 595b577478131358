"""What makes a model reproducible: data fingerprint, package versions, git revision."""

from __future__ import annotations

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
    """sha256 of the training frame's content (keys, features, closes, flags)."""
    from regimes.data.synth import content_sha256

    columns = sorted(frame.columns)
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
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None
