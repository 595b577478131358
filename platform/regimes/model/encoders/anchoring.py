"""Latent anchoring across retrains (the plan's "latent instability" mitigation).

A refit encoder may return the same latent space with flipped signs or rotated axes.
Given z of the new encoder and of the previous model on a shared window of bars,
:func:`anchor` finds the orthogonal rotation R minimising ||Z_new R - Z_prev|| (orthogonal
Procrustes), stores it on the encoder (applied after its transform and in its ONNX
export) and reports the alignment: residual before and after, per-axis correlation
before and after, and how many axes had flipped sign.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.linalg import orthogonal_procrustes

from regimes.errors import BadInputError
from regimes.model.encoders.base import Encoder


@dataclass(frozen=True)
class AnchorReport:
    rows: int
    residual_before: float
    residual_after: float
    axis_correlation_before: list[float]
    axis_correlation_after: list[float]
    sign_flips: int

    def as_dict(self) -> dict:
        return asdict(self)


def _axis_correlation(a: np.ndarray, b: np.ndarray) -> list[float]:
    a = a - a.mean(axis=0)
    b = b - b.mean(axis=0)
    denominator = np.sqrt((a**2).sum(axis=0) * (b**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = (a * b).sum(axis=0) / denominator
    return [float(v) for v in np.nan_to_num(values)]


def _residual(z: np.ndarray, target: np.ndarray) -> float:
    norm = float(np.linalg.norm(target))
    return float(np.linalg.norm(z - target)) / norm if norm > 0 else 0.0


def anchor(encoder: Encoder, z_new: np.ndarray, z_previous: np.ndarray) -> AnchorReport:
    """Align ``encoder``'s axes to the previous model's on a shared window.

    ``z_new`` is the new encoder's *unanchored* output on the shared bars
    (:meth:`Encoder.transform_unanchored`), ``z_previous`` the previous model's z on the
    same bars, row for row.
    """
    z_new = np.asarray(z_new, dtype=np.float64)
    z_previous = np.asarray(z_previous, dtype=np.float64)
    if z_new.shape != z_previous.shape:
        raise BadInputError(
            f"anchoring: shapes differ ({z_new.shape} new vs {z_previous.shape} previous); "
            "anchoring needs the same d and the same shared bars"
        )
    if z_new.shape[0] < 2 * z_new.shape[1]:
        raise BadInputError(
            f"anchoring: {z_new.shape[0]} shared rows is too few for d = {z_new.shape[1]}"
        )
    before = _axis_correlation(z_new, z_previous)
    rotation, _ = orthogonal_procrustes(z_new, z_previous)
    aligned = z_new @ rotation
    encoder.anchor_rotation_ = rotation
    return AnchorReport(
        rows=int(z_new.shape[0]),
        residual_before=_residual(z_new, z_previous),
        residual_after=_residual(aligned, z_previous),
        axis_correlation_before=before,
        axis_correlation_after=_axis_correlation(aligned, z_previous),
        sign_flips=int(sum(1 for value in before if value < 0)),
    )
