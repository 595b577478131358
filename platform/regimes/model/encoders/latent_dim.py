"""Latent-dimension selection (plan 3.6): the data behind choosing d, and its plots.

PCA: the cumulative explained-variance curve; the chosen d is the smallest d in the
configured range that explains ``target`` of the variance (else the range's top). The
VAE's curve (reconstruction error and KL per d) comes from
``regimes.model.encoders.vae.vae_latent_dim_scan``; :func:`save_curve` plots either.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from regimes.model.encoders.pca import PCAEncoder


def pca_curve(
    X: np.ndarray, d_range: tuple[int, int], target: float = 0.9
) -> tuple[pd.DataFrame, int]:
    """Cumulative explained variance for d = 1..min(p, 16) and the chosen d."""
    X = np.asarray(X, dtype=np.float64)
    top = min(16, X.shape[1])
    low, high = d_range
    high = min(high, top)
    if low > high:
        from regimes.errors import BadInputError

        raise BadInputError(
            f"latent dimension: the range [{d_range[0]}, {d_range[1]}] is above the {X.shape[1]} "
            "input column(s)"
        )
    encoder = PCAEncoder(latent_dim=max(low, 6) if top >= 6 else top).fit(X)
    ratios = encoder.explained_variance_ratio_all_[:top]
    curve = pd.DataFrame(
        {"d": np.arange(1, top + 1), "explained_variance": ratios, "cumulative": np.cumsum(ratios)}
    )
    in_range = curve[(curve["d"] >= low) & (curve["d"] <= high)]
    reaching = in_range[in_range["cumulative"] >= target]
    chosen = int(reaching["d"].iloc[0]) if len(reaching) else int(in_range["d"].iloc[-1])
    return curve, chosen


def save_curve(
    curve: pd.DataFrame,
    x: str,
    ys: list[str],
    png_path: str | Path,
    title: str,
    chosen: int | None = None,
) -> tuple[Path, Path]:
    """Write ``curve`` as CSV beside a PNG line plot of ``ys`` against ``x``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = png_path.with_suffix(".csv")
    curve.to_csv(csv_path, index=False)
    figure, axis = plt.subplots(figsize=(6, 3.5), dpi=100)
    for column in ys:
        axis.plot(curve[x], curve[column], marker="o", label=column)
    if chosen is not None:
        axis.axvline(chosen, color="grey", linestyle="--", label=f"chosen d = {chosen}")
    axis.set_xlabel(x)
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    figure.savefig(png_path)
    plt.close(figure)
    return png_path, csv_path
