"""What the live service's HTTP API carries, independent of the web framework: the
request body of ``POST /v1/bars/{timeframe}``, its conversion into the engine's bar
frame, and answers as JSON-ready records in the one answer schema
(:mod:`regimes.answers`).

Structural problems of a body (not JSON, a row without ``symbol``, a price that is not
a number) refuse the whole request, naming the row and field
(:func:`validation_message`); problems of a row's values (NaN or non-positive prices,
an unsafe symbol name, a duplicate or out-of-order bar) refuse that row only, with its
reason, and the rest of the batch is answered (:mod:`regimes.live.screening`).
"""

from __future__ import annotations

import math
from datetime import datetime

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from regimes.answers import UNKNOWN

BAR_FIELDS = ("open", "high", "low", "close", "volume")


class BarIn(BaseModel):
    """One closed bar of one symbol (prices may be null: that row is refused, not the batch)."""

    model_config = ConfigDict(extra="forbid")

    symbol: str = Field(min_length=1, max_length=64)
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    volume: float | None
    is_gap: bool = False


class BarsRequest(BaseModel):
    """Closed bars of many symbols for one bar time (``ts``: the bar's open time, with a
    time zone)."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime
    bars: list[BarIn] = Field(min_length=1)


def validation_message(error: ValidationError, max_items: int = 5) -> str:
    """A ValidationError as one line naming each field and row, e.g.
    ``bars[3].close: Input should be a valid number``."""
    parts = []
    for item in error.errors()[:max_items]:
        where = ""
        for piece in item["loc"]:
            where += f"[{piece}]" if isinstance(piece, int) else (f".{piece}" if where else piece)
        parts.append(f"{where or 'body'}: {item['msg']}")
    more = len(error.errors()) - max_items
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def bars_frame(request: BarsRequest) -> pd.DataFrame:
    """The request's rows as the engine's bar frame (columns symbol, ts, open, high,
    low, close, volume, is_gap), in request order; a missing price is NaN."""
    ts = pd.Timestamp(request.ts)
    if ts.tzinfo is None:
        raise ValueError("ts: expected a time zone (e.g. 2024-01-02T14:30:00Z)")
    rows = request.bars
    columns = {
        "symbol": np.array([bar.symbol for bar in rows], dtype=object),
        "ts": pd.DatetimeIndex([ts.tz_convert("UTC")] * len(rows)),
    }
    for name in BAR_FIELDS:
        columns[name] = np.array(
            [math.nan if (v := getattr(bar, name)) is None else v for bar in rows], dtype=float
        )
    columns["is_gap"] = np.array([bar.is_gap for bar in rows], dtype=bool)
    return pd.DataFrame(columns)


def _plain(values: np.ndarray) -> list:
    """Floats with NaN as None (JSON null)."""
    return [None if v != v else float(v) for v in values.tolist()]


def answer_records(answers: pd.DataFrame, labels: dict[int, str] | None = None) -> list[dict]:
    """The answers as JSON-ready records: symbol, ts, state_id, label, state_prob,
    posterior (list of K), entropy, loglik, is_unknown, reason, model_id."""
    if answers.empty:
        return []
    labels = labels or {}
    posterior_columns = sorted(c for c in answers.columns if c.startswith("p_"))
    posterior = answers[posterior_columns].to_numpy(dtype=float)
    posterior_lists = [None if not np.isfinite(row).all() else row.tolist() for row in posterior]
    state_id = answers["state_id"].to_numpy(dtype=np.int64).tolist()
    ts = [t.isoformat() for t in pd.DatetimeIndex(answers["ts"])]
    reason = answers["ood_reason"].tolist()
    columns = zip(
        answers["symbol"].tolist(),
        ts,
        state_id,
        _plain(answers["state_prob"].to_numpy(dtype=float)),
        posterior_lists,
        _plain(answers["entropy"].to_numpy(dtype=float)),
        _plain(answers["loglik"].to_numpy(dtype=float)),
        answers["is_unknown"].tolist(),
        reason,
        answers["model_id"].tolist(),
        strict=True,
    )
    return [
        {
            "symbol": symbol,
            "ts": when,
            "state_id": state,
            "label": None if state == UNKNOWN else labels.get(state),
            "state_prob": prob,
            "posterior": post,
            "entropy": h,
            "loglik": ll,
            "is_unknown": bool(unknown),
            "reason": None if why is None or why != why else why,
            "model_id": model_id,
        }
        for symbol, when, state, prob, post, h, ll, unknown, why, model_id in columns
    ]


def refused_records(rejected: pd.DataFrame) -> list[dict]:
    """Refused rows as records: row (position in the request), symbol, ts, reason."""
    if rejected is None or rejected.empty:
        return []
    return [
        {
            "row": int(row),
            "symbol": None if symbol is None else str(symbol),
            "ts": None if ts is None or ts != ts else pd.Timestamp(ts).isoformat(),
            "reason": str(reason),
        }
        for row, symbol, ts, reason in rejected[["row", "symbol", "ts", "reason"]].itertuples(
            index=False
        )
    ]
