"""A step's arrays -> the answer frame: the verdict per encoded bar (anti-chatter, then
the OOD checks), UNKNOWN reasons as small codes, and the frame in the columns of the one
answer schema (:mod:`regimes.answers`).

Shared by the live step (:mod:`regimes.live.engine`) and the offline path
(:mod:`regimes.live.replay`), so both give the same answers by construction.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from regimes.answers import UNKNOWN, answer_fields
from regimes.live import antichatter, ood

ANSWER_REASONS = ("warming up", "gap", "settling", *ood.REASONS[1:])
"""Every ``ood_reason`` an engine answer can carry."""
# Reasons travel as small integer codes inside a step (0 = a known state).
WARMING, GAP, SETTLING = 1, 2, 3
_OOD_CODE = np.array([0, GAP, *range(4, 4 + len(ood.REASONS) - 1)], dtype=np.int8)
_REASON_OUT = np.array([None, *ANSWER_REASONS], dtype=object)


class StepOutputs(NamedTuple):
    """Per-row outputs of a step, before they become a frame."""

    z: np.ndarray  # (n, d), NaN where not encoded
    posterior: np.ndarray  # (n, K), NaN where not encoded
    loglik: np.ndarray
    entropy: np.ndarray
    state_id: np.ndarray  # published state, UNKNOWN where not trusted
    raw_state_id: np.ndarray
    reason: np.ndarray  # int8 codes: 0 known, else 1 + index in ANSWER_REASONS


def empty_outputs(n: int, d: int, K: int) -> StepOutputs:
    """Outputs of ``n`` rows that were not encoded (all UNKNOWN, reason code 0 for now)."""
    return StepOutputs(
        np.full((n, d), np.nan),
        np.full((n, K), np.nan),
        np.full(n, np.nan),
        np.full(n, np.nan),
        np.full(n, UNKNOWN, dtype=np.int64),
        np.full(n, UNKNOWN, dtype=np.int64),
        np.zeros(n, dtype=np.int8),
    )


def judge(
    chatter: antichatter.AntiChatterState,
    health: ood.OODState,
    symbols: np.ndarray,
    posterior: np.ndarray,
    loglik: np.ndarray,
    entropy: np.ndarray,
    clipped: np.ndarray,
    anti_chatter,
    ood_settings: ood.OODSettings,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Anti-chatter, then the OOD checks, for one encoded bar of ``symbols`` (their rows in
    ``chatter`` and ``health``): (state_id, raw state, reason code)."""
    published, raw = antichatter.step(chatter, symbols, posterior, anti_chatter)
    no_gap = np.zeros(len(symbols), dtype=bool)  # gaps never reach the encoder
    why = ood.step_codes(health, symbols, loglik, entropy, raw, no_gap, ood_settings, clipped)
    settled = published >= 0
    unknown = why != 0
    state_id = np.where(unknown | ~settled, UNKNOWN, published)
    reason = np.where(unknown, _OOD_CODE[why], np.where(settled, 0, SETTLING))
    return state_id, raw, reason


def reason_counts(reason: np.ndarray) -> dict[str, int]:
    """Rows per outcome: ``known`` and each of :data:`ANSWER_REASONS`."""
    counts = np.bincount(reason, minlength=len(_REASON_OUT))
    return {"known": int(counts[0])} | {
        name: int(counts[code]) for code, name in enumerate(ANSWER_REASONS, start=1)
    }


def answer_frame(
    bars: pd.DataFrame, timeframe: str, model_id: str, outputs: StepOutputs
) -> pd.DataFrame:
    """One answer per row of ``bars``, in the stored columns of :mod:`regimes.answers`."""
    z, posterior = outputs.z, outputs.posterior
    n, d, K = len(outputs.state_id), z.shape[1], posterior.shape[1]
    known = np.isfinite(posterior).all(axis=1) if n else np.zeros(0, bool)
    state_prob = np.full(n, np.nan)
    if known.any():
        state_prob[known] = posterior[known].max(axis=1)
    values = {
        "symbol": bars["symbol"].to_numpy(dtype=object),
        "ts": pd.DatetimeIndex(bars["ts"]),
        "timeframe": _constant(n, timeframe),
        "model_id": _constant(n, model_id),
        "state_id": outputs.state_id,
        "raw_state_id": outputs.raw_state_id,
        "state_prob": state_prob,
        "loglik": outputs.loglik,
        "entropy": outputs.entropy,
        "is_unknown": outputs.state_id == UNKNOWN,
        "ood_reason": _REASON_OUT[outputs.reason],
    }
    values.update({f"z_{k:02d}": z[:, k] for k in range(d)})
    values.update({f"p_{k:02d}": posterior[:, k] for k in range(K)})
    columns = {field.name: values[field.name] for field in answer_fields(d, K)}
    # Fresh arrays all: no copy (and no broadcasting of scalars, ~5x faster).
    return pd.DataFrame(columns, copy=False)


def _constant(n: int, value: str) -> np.ndarray:
    """An object column of ``n`` times ``value`` (``fill`` is ~10x faster than
    ``np.full(n, value, dtype=object)``, which dominated the answer frame)."""
    column = np.empty(n, dtype=object)
    column.fill(value)
    return column
