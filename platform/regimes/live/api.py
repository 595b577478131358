"""What the live service's HTTP API carries, independent of the web framework: the
request body of ``POST /v1/bars/{timeframe}``, its conversion into the engine's bar
frame, and answers as JSON-ready records in the one answer schema
(:mod:`regimes.answers`).

Two body forms (:data:`COLUMNAR_MEDIA_TYPE` selects the second): rows
(``{"ts", "bars": [{symbol, open, ...}, ...]}``, :class:`BarsRequest`) and columns
(``{"ts", "columns": {"symbol": [...], "open": [...], ...}}``, :class:`BarsColumns`,
answered in columns too: :func:`answer_columns`), which costs less to write and read on
both sides for large batches.

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


COLUMNAR_MEDIA_TYPE = "application/vnd.regimes.columns+json"
"""Media type of the columnar body and answer of ``POST /v1/bars/{timeframe}``."""


class ColumnsIn(BaseModel):
    """The bars of one bar time as columns of equal length (row i of every column is one
    symbol's bar; a null price refuses that row only, as in the row form)."""

    model_config = ConfigDict(extra="forbid")

    symbol: list[str] = Field(min_length=1)
    open: list[float | None]
    high: list[float | None]
    low: list[float | None]
    close: list[float | None]
    volume: list[float | None]
    is_gap: list[bool] | None = None


class BarsColumns(BaseModel):
    """Closed bars of many symbols for one bar time, as columns (media type
    :data:`COLUMNAR_MEDIA_TYPE`)."""

    model_config = ConfigDict(extra="forbid")

    ts: datetime
    columns: ColumnsIn


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
    ts = _bar_time(request.ts)
    rows = request.bars
    columns = {
        "symbol": np.array([bar.symbol for bar in rows], dtype=object),
        "ts": pd.DatetimeIndex([ts] * len(rows)),
    }
    for name in BAR_FIELDS:
        columns[name] = np.array(
            [math.nan if (v := getattr(bar, name)) is None else v for bar in rows], dtype=float
        )
    columns["is_gap"] = np.array([bar.is_gap for bar in rows], dtype=bool)
    return pd.DataFrame(columns)


def _bar_time(value) -> pd.Timestamp:
    ts = pd.Timestamp(value)
    if ts.tzinfo is None:
        raise ValueError("ts: expected a time zone (e.g. 2024-01-02T14:30:00Z)")
    return ts.tz_convert("UTC")


class _NotPlain(Exception):
    """The body needs the full validator (to say exactly what is wrong with it)."""


def parse_bars(data) -> pd.DataFrame:
    """A parsed JSON body of ``POST /v1/bars/{timeframe}`` -> the engine's bar frame.

    A well-formed body takes a columnar path (no per-row model objects: a 1,000-row
    batch in about a millisecond); anything unusual goes through :class:`BarsRequest`,
    so a malformed body fails with the validator's message naming row and field.

    Raises
    ------
    pydantic.ValidationError
        A structural problem (see :func:`validation_message`).
    ValueError
        ``ts`` without a time zone.
    """
    try:
        return _parse_plain(data)
    except _NotPlain:
        return bars_frame(BarsRequest.model_validate(data))


_FIELDS = frozenset(("symbol", *BAR_FIELDS, "is_gap"))


def _parse_plain(data) -> pd.DataFrame:
    if type(data) is not dict or data.keys() != {"ts", "bars"}:
        raise _NotPlain
    rows = data["bars"]
    if type(rows) is not list or not rows or not all(type(r) is dict for r in rows):
        raise _NotPlain
    if type(data["ts"]) is not str:
        raise _NotPlain
    try:
        ts = pd.Timestamp(data["ts"])
    except ValueError:
        raise _NotPlain from None
    frame = pd.DataFrame.from_records(rows)
    if not _FIELDS.issuperset(frame.columns) or not {"symbol", *BAR_FIELDS} <= set(frame):
        raise _NotPlain
    symbols = frame["symbol"]
    if (
        not all(type(v) is str for v in symbols.tolist())
        or not symbols.str.len().between(1, 64).all()
    ):
        raise _NotPlain
    columns = {"symbol": symbols.to_numpy(dtype=object)}
    for name in BAR_FIELDS:
        values = frame[name]
        if values.dtype.kind not in "fi":
            if any(type(v) not in (int, float) for v in values.dropna().tolist()):
                raise _NotPlain  # text, booleans, lists: the validator says which row
            values = values.astype(float)
        missing = np.flatnonzero(values.isna().to_numpy())
        if any(name not in rows[i] for i in missing.tolist()):
            raise _NotPlain  # an absent field (null is allowed: that row is refused)
        columns[name] = values.to_numpy(dtype=float)
    if "is_gap" in frame:
        gaps = frame["is_gap"]
        if gaps.dtype.kind != "b":
            if any(type(v) is not bool for v in gaps.dropna().tolist()):
                raise _NotPlain
            gaps = gaps.map(lambda v: v is True)  # missing -> False
        columns["is_gap"] = gaps.to_numpy(dtype=bool)
    else:
        columns["is_gap"] = np.zeros(len(frame), dtype=bool)
    if ts.tzinfo is None:
        raise ValueError("ts: expected a time zone (e.g. 2024-01-02T14:30:00Z)")
    frame = pd.DataFrame(columns)
    frame.insert(1, "ts", pd.DatetimeIndex([ts.tz_convert("UTC")]).repeat(len(frame)))
    return frame


def parse_columns(data) -> pd.DataFrame:
    """A parsed columnar body (:class:`BarsColumns`) -> the engine's bar frame.

    Raises
    ------
    ValueError
        The first structural problem, naming the column and row, e.g.
        ``columns.close[3]: expected a number or null``; ``ts`` without a time zone.
    """
    if type(data) is not dict or data.keys() != {"ts", "columns"}:
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"body: expected the keys ts and columns, got {keys}")
    columns = data["columns"]
    if type(columns) is not dict:
        raise ValueError("columns: expected an object of columns")
    unknown = sorted(set(columns) - _FIELDS)
    missing = [name for name in ("symbol", *BAR_FIELDS) if name not in columns]
    if unknown or missing:
        raise ValueError(f"columns: unknown {unknown}, missing {missing}")
    symbols = columns["symbol"]
    if type(symbols) is not list or not symbols:
        raise ValueError("columns.symbol: expected a list of at least one symbol")
    rows = len(symbols)
    for name, values in columns.items():
        if type(values) is not list or len(values) != rows:
            raise ValueError(f"columns.{name}: expected a list of {rows} values, like symbol")
    for row, symbol in enumerate(symbols):
        if type(symbol) is not str or not 1 <= len(symbol) <= 64:
            raise ValueError(f"columns.symbol[{row}]: expected a name of 1 to 64 characters")
    if type(data["ts"]) is not str:
        raise ValueError("ts: expected an ISO time with a time zone")
    try:
        ts = _bar_time(data["ts"])
    except ValueError as exc:
        raise ValueError(str(exc) if str(exc).startswith("ts:") else f"ts: {exc}") from None
    frame = {"symbol": np.array(symbols, dtype=object)}
    for name in BAR_FIELDS:
        values = columns[name]
        for row, value in enumerate(values):
            if value is not None and type(value) not in (int, float):
                raise ValueError(f"columns.{name}[{row}]: expected a number or null")
        frame[name] = np.array(values, dtype=float)  # null -> NaN: that row is refused
    gaps = columns.get("is_gap")
    if gaps is not None:
        for row, value in enumerate(gaps):
            if type(value) is not bool:
                raise ValueError(f"columns.is_gap[{row}]: expected true or false")
    frame["is_gap"] = np.array(gaps, dtype=bool) if gaps is not None else np.zeros(rows, bool)
    out = pd.DataFrame(frame)
    out.insert(1, "ts", pd.DatetimeIndex([ts]).repeat(rows))
    return out


def _iso_times(ts: pd.DatetimeIndex) -> list[str]:
    """ISO strings of ``ts``, formatted once per distinct time (a batch has one)."""
    codes, uniques = pd.factorize(ts)
    names = [t.isoformat() for t in uniques]
    return [names[c] for c in codes.tolist()]


def answer_records(answers: pd.DataFrame, labels: dict[int, str] | None = None) -> list[dict]:
    """The answers as JSON-ready records: symbol, ts, state_id, label, state_prob,
    posterior (list of K), entropy, loglik, is_unknown, reason, model_id.

    Floats stay Python floats, NaN included: the service's JSON encoder (orjson) writes
    NaN as null, so an undefined value (a bar still warming up) reads as null.
    """
    if answers.empty:
        return []
    labels = labels or {}
    posterior_columns = sorted(c for c in answers.columns if c.startswith("p_"))
    posterior = answers[posterior_columns].to_numpy(dtype=float)
    defined = np.isfinite(posterior).all(axis=1).tolist()
    posterior_lists = [p if ok else None for p, ok in zip(posterior.tolist(), defined, strict=True)]
    state_id = answers["state_id"].to_numpy(dtype=np.int64).tolist()
    reason = answers["ood_reason"].where(answers["ood_reason"].notna(), None).tolist()
    columns = zip(
        answers["symbol"].tolist(),
        _iso_times(pd.DatetimeIndex(answers["ts"])),
        state_id,
        answers["state_prob"].to_numpy(dtype=float).tolist(),
        posterior_lists,
        answers["entropy"].to_numpy(dtype=float).tolist(),
        answers["loglik"].to_numpy(dtype=float).tolist(),
        answers["is_unknown"].to_numpy(dtype=bool).tolist(),
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
            "is_unknown": unknown,
            "reason": why,
            "model_id": model_id,
        }
        for symbol, when, state, prob, post, h, ll, unknown, why, model_id in columns
    ]


def answer_columns(answers: pd.DataFrame, labels: dict[int, str] | None = None) -> dict:
    """The answers as columns (the columnar answer of ``POST /v1/bars/{timeframe}``): the
    fields of :func:`answer_records`, each a list (``posterior`` a list of K-lists), with
    numpy arrays the JSON encoder writes directly; an undefined value (a bar still
    warming up) is null, in ``posterior`` each of its K values."""
    names = ("state_prob", "entropy", "loglik")
    if answers.empty:
        return {
            k: []
            for k in (
                "symbol",
                "ts",
                "state_id",
                "label",
                *names,
                "posterior",
                "is_unknown",
                "reason",
                "model_id",
            )
        }
    labels = labels or {}
    posterior_columns = sorted(c for c in answers.columns if c.startswith("p_"))
    state_id = answers["state_id"].to_numpy(dtype=np.int64)
    label_of = {s: None if s == UNKNOWN else labels.get(s) for s in np.unique(state_id).tolist()}
    return {
        "symbol": answers["symbol"].tolist(),
        "ts": _iso_times(pd.DatetimeIndex(answers["ts"])),
        "state_id": state_id,
        "label": [label_of[s] for s in state_id.tolist()],
        **{name: answers[name].to_numpy(dtype=float) for name in names},
        "posterior": np.ascontiguousarray(answers[posterior_columns].to_numpy(dtype=float)),
        "is_unknown": answers["is_unknown"].to_numpy(dtype=bool),
        "reason": answers["ood_reason"].where(answers["ood_reason"].notna(), None).tolist(),
        "model_id": answers["model_id"].tolist(),
    }


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
