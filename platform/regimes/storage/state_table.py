"""The state table's schema and the validation of a batch of answers before it is
written: columns, dtypes, UTC timestamps, z past d and p past K null, safe partition
values, probabilities, no duplicate keys (one clear error naming row and column)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from regimes.answers import (
    CURRENT_STATE_COLUMNS,
    LATENT_FIELDS,
    P_WIDTH,
    POSTERIOR_FIELDS,
    SCALAR_COLUMNS,
    STORED_FIELDS,
    UNKNOWN,
    Z_WIDTH,
)
from regimes.errors import BadInputError, UnsafeNameError
from regimes.paths import check_model_id, check_symbol, check_timeframe_name

Z_COLUMNS = tuple(f.name for f in LATENT_FIELDS)
"""Latent columns the store holds, ``z_00..z_15`` (the largest d the config allows)."""
P_COLUMNS = tuple(f.name for f in POSTERIOR_FIELDS)
"""Posterior columns the store holds, ``p_00..p_15`` (the largest K the config allows)."""
KEY_COLUMNS = ("symbol", "timeframe", "model_id", "ts")
"""One row per key: a MERGE on these replaces the stored row."""
PARTITION_COLUMNS = ("timeframe", "model_id", "symbol", "date")
"""Directory levels on disk, outermost first; ``date`` is ts's UTC day, YYYY-MM-DD."""
REQUIRED_COLUMNS = SCALAR_COLUMNS
"""Columns every batch carries besides ``z_00..z_{d-1}`` and ``p_00..p_{K-1}``."""
# CURRENT_STATE_COLUMNS (from regimes.answers): what upsert_current_states takes.
_ARROW_TYPES = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "int64": pa.int64(),
    "float64": pa.float64(),
    "bool": pa.bool_(),
}
STATE_SCHEMA = pa.schema(
    [
        *[pa.field(f.name, _ARROW_TYPES[f.dtype], nullable=f.nullable) for f in STORED_FIELDS],
        pa.field("date", pa.string(), nullable=False),
    ]
)
"""The state table's schema; NULL (never NaN) marks a value that does not exist."""

_MICROS_PER_DAY = 86_400_000_000
_PROBABILITY_TOLERANCE = 1e-9


def to_state_table(frame: pd.DataFrame, d: int, K: int) -> pa.Table:
    """Validate a batch of regime answers and return it in :data:`STATE_SCHEMA`.

    Every check names the column and the row (position in ``frame``) that broke it:
    required columns present, no unknown columns, numbers where numbers belong,
    timezone-aware UTC ``ts`` at microsecond precision, z_k for k >= d and p_k for
    k >= K null, state ids in -1..K-1 with ``is_unknown`` exactly when -1 and an
    ``ood_reason`` for every UNKNOWN, probabilities in [0, 1], safe partition values
    (:mod:`regimes.paths`), one of the five timeframes, no key twice. NaN becomes NULL.

    >>> rows = pd.DataFrame({"symbol": ["SPY"], "ts": pd.to_datetime(["2024-01-02T14:30Z"]),
    ...     "timeframe": ["1m"], "model_id": ["m1"], "z_00": [0.5], "p_00": [0.9],
    ...     "p_01": [0.1], "state_id": [0], "raw_state_id": [0], "state_prob": [0.9],
    ...     "loglik": [-1.0], "entropy": [0.3], "is_unknown": [False], "ood_reason": [None]})
    >>> table = to_state_table(rows, d=1, K=2)
    >>> table.num_rows, table["date"][0].as_py(), table["z_01"][0].as_py()
    (1, '2024-01-02', None)
    """
    if not isinstance(frame, pd.DataFrame):
        raise BadInputError(f"states: expected a pandas DataFrame, got {type(frame).__name__}")
    d = _check_width(d, "d", Z_WIDTH)
    K = _check_width(K, "K", P_WIDTH)
    if len(frame) == 0:
        return STATE_SCHEMA.empty_table()
    missing = [c for c in (*REQUIRED_COLUMNS, *Z_COLUMNS[:d], *P_COLUMNS[:K]) if c not in frame]
    if missing:
        raise BadInputError(f"states: missing column(s) {missing} (d={d}, K={K})")
    unknown = [c for c in frame.columns if c not in STATE_SCHEMA.names]
    if unknown:
        raise BadInputError(f"states: unknown column(s) {unknown}; expected {STATE_SCHEMA.names}")
    frame = frame.reset_index(drop=True)
    n = len(frame)
    arrays: dict[str, pa.Array] = {}
    names = {}
    for column, check in (
        ("timeframe", check_timeframe_name),
        ("model_id", check_model_id),
        ("symbol", check_symbol),
    ):
        names[column] = _names(frame[column], column, check)
        arrays[column] = pa.array(names[column], pa.string())
    micros = _micros(frame["ts"])
    arrays["ts"] = pa.array(micros, pa.timestamp("us", tz="UTC"))
    for columns, width, what in ((Z_COLUMNS, d, "d"), (P_COLUMNS, K, "K")):
        for k, column in enumerate(columns):
            values = _floats(frame[column], column) if column in frame else np.full(n, np.nan)
            if k >= width and not np.isnan(values).all():
                row = _first(~np.isnan(values))
                raise BadInputError(
                    f"states: column {column}, row {row}: holds {values[row]!r} but the model "
                    f"has {what}={width}; {column[0]}_k for k >= {what} must be null or absent"
                )
            if column.startswith("p_"):
                _check_probability(values, column)
            arrays[column] = pa.array(values, pa.float64(), from_pandas=True)
    for column in ("state_prob", "loglik", "entropy"):
        values = _floats(frame[column], column)
        if column == "state_prob":
            _check_probability(values, column)
        arrays[column] = pa.array(values, pa.float64(), from_pandas=True)
    state_id = _integers(frame["state_id"], "state_id", UNKNOWN, K - 1)
    raw_state_id = _integers(frame["raw_state_id"], "raw_state_id", UNKNOWN, K - 1)
    is_unknown = _booleans(frame["is_unknown"], "is_unknown")
    ood_reason = _optional_strings(frame["ood_reason"], "ood_reason")
    if (wrong := is_unknown != (state_id == UNKNOWN)).any():
        row = _first(wrong)
        raise BadInputError(
            f"states: row {row}: is_unknown is {bool(is_unknown[row])} but state_id is "
            f"{state_id[row]}; is_unknown holds exactly when state_id == {UNKNOWN}"
        )
    if (silent := is_unknown & pd.isna(ood_reason)).any():
        raise BadInputError(
            f"states: column ood_reason, row {_first(silent)}: an UNKNOWN state needs a reason"
        )
    arrays["state_id"] = pa.array(state_id, pa.int64())
    arrays["raw_state_id"] = pa.array(raw_state_id, pa.int64())
    arrays["is_unknown"] = pa.array(is_unknown, pa.bool_())
    arrays["ood_reason"] = pa.array(ood_reason, pa.string(), from_pandas=True)
    dates = np.floor_divide(micros, _MICROS_PER_DAY).astype("datetime64[D]").astype(str)
    if "date" in frame:
        given = frame["date"].astype(str).to_numpy()
        if (wrong := given != dates).any():
            row = _first(wrong)
            raise BadInputError(
                f"states: column date, row {row}: {given[row]!r} is not ts's UTC day "
                f"{dates[row]!r} (leave date out: the store derives it)"
            )
    arrays["date"] = pa.array(dates, pa.string())
    keys = pd.DataFrame({c: names[c] for c in ("symbol", "timeframe", "model_id")})
    keys["ts"] = micros
    if (duplicated := keys.duplicated(keep=False).to_numpy()).any():
        rows = np.flatnonzero(duplicated)
        first = rows[0]
        raise BadInputError(
            f"states: duplicate key (symbol, timeframe, model_id, ts) in rows "
            f"{rows[:6].tolist()}: {names['symbol'][first]} {names['timeframe'][first]} "
            f"{names['model_id'][first]} {pd.Timestamp(micros[first], unit='us', tz='UTC')}"
        )
    table = pa.Table.from_arrays([arrays[name] for name in STATE_SCHEMA.names], schema=STATE_SCHEMA)
    return table.sort_by([(c, "ascending") for c in (*PARTITION_COLUMNS, "ts")])


def latest_per_symbol(frame: pd.DataFrame) -> pd.DataFrame:
    """The newest row per (symbol, timeframe), in the columns of ``current_states``.

    What the caller passes to :func:`regimes.data.sql.upsert_current_states` after a write.
    ``current_states`` holds one published model per timeframe, so pass only that
    model's rows: a (symbol, timeframe) with rows of two models is refused.
    ``current_states.state_prob`` is NOT NULL: an UNKNOWN answer without a posterior
    (warming up, gap) is mirrored with ``state_prob`` 0.0.
    """
    missing = [c for c in CURRENT_STATE_COLUMNS if c not in frame.columns]
    if missing:
        raise BadInputError(f"latest_per_symbol: missing column(s) {missing}")
    if frame.empty:
        return pd.DataFrame(columns=list(CURRENT_STATE_COLUMNS))
    models = frame.groupby(["symbol", "timeframe"])["model_id"].nunique()
    if (models > 1).any():
        symbol, timeframe = models[models > 1].index[0]
        raise BadInputError(
            f"latest_per_symbol: {symbol} ({timeframe}) has rows of {models.max()} models; "
            "pass only the rows of the model current_states publishes"
        )
    latest = frame.sort_values("ts", kind="stable").groupby(["symbol", "timeframe"]).tail(1)
    latest = latest.loc[:, list(CURRENT_STATE_COLUMNS)]
    latest = latest.assign(state_prob=latest["state_prob"].astype(float).fillna(0.0))
    return latest.sort_values(["symbol", "timeframe"]).reset_index(drop=True)


def _check_width(value: Any, what: str, largest: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise BadInputError(f"{what}: expected an integer, got {value!r}")
    if not 1 <= value <= largest:
        raise BadInputError(f"{what}: expected 1..{largest} (the store's width), got {value}")
    return int(value)


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _names(series: pd.Series, column: str, check: Callable[[Any], str]) -> np.ndarray:
    values = series.to_numpy(dtype=object)
    for value in pd.unique(values):
        try:
            check(value)
        except UnsafeNameError as exc:
            same = pd.isna(values) if not isinstance(value, str) and pd.isna(value) else None
            row = _first(same if same is not None else values == value)
            raise UnsafeNameError(f"states: column {column}, row {row}: {exc}") from None
    return values


def _micros(series: pd.Series) -> np.ndarray:
    """``ts`` as int64 microseconds since the epoch, refusing anything but UTC instants."""
    dtype = series.dtype
    if not isinstance(dtype, pd.DatetimeTZDtype):
        if pd.api.types.is_datetime64_dtype(dtype):
            raise BadInputError(
                "states: column ts is timezone-naive; expected timezone-aware UTC bar open "
                "times (pd.to_datetime(..., utc=True))"
            )
        raise BadInputError(f"states: column ts has dtype {dtype}; expected datetime64 in UTC")
    if str(dtype.tz) not in ("UTC", "Etc/UTC"):
        raise BadInputError(
            f"states: column ts is in time zone {dtype.tz}; expected UTC (tz_convert('UTC'))"
        )
    if (absent := series.isna().to_numpy()).any():
        raise BadInputError(f"states: column ts, row {_first(absent)}: missing timestamp")
    nanos = pd.DatetimeIndex(series).as_unit("ns").asi8
    if (finer := nanos % 1000 != 0).any():
        raise BadInputError(
            f"states: column ts, row {_first(finer)}: finer than a microsecond, the store's "
            "resolution"
        )
    return nanos // 1000


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(
        value, bool | np.bool_
    )


def _floats(series: pd.Series, column: str) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise BadInputError(f"states: column {column} is boolean; expected float64")
    if pd.api.types.is_numeric_dtype(dtype):
        return series.to_numpy(dtype="float64", na_value=np.nan)
    if pd.api.types.is_object_dtype(dtype):
        values = series.to_numpy(dtype=object)
        fits = np.fromiter((v is None or _is_number(v) for v in values), bool, len(values))
        if not fits.all():
            row = _first(~fits)
            raise BadInputError(
                f"states: column {column}, row {row}: {values[row]!r} is not a number"
            )
        return np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    raise BadInputError(f"states: column {column} has dtype {dtype}; expected float64")


def _integers(series: pd.Series, column: str, low: int, high: int) -> np.ndarray:
    dtype = series.dtype
    if pd.api.types.is_bool_dtype(dtype):
        raise BadInputError(f"states: column {column} is boolean; expected int64")
    if pd.api.types.is_integer_dtype(dtype):
        if (absent := series.isna().to_numpy()).any():
            raise BadInputError(f"states: column {column}, row {_first(absent)}: missing")
        values = series.to_numpy(dtype="int64")
    elif pd.api.types.is_float_dtype(dtype) or pd.api.types.is_object_dtype(dtype):
        raw = series.to_numpy(dtype=object)
        fits = np.fromiter((_is_number(v) and float(v).is_integer() for v in raw), bool, len(raw))
        if not fits.all():
            row = _first(~fits)
            raise BadInputError(
                f"states: column {column}, row {row}: {raw[row]!r} is not an integer"
            )
        values = np.array([int(v) for v in raw], dtype="int64")
    else:
        raise BadInputError(f"states: column {column} has dtype {dtype}; expected int64")
    if (outside := (values < low) | (values > high)).any():
        row = _first(outside)
        raise BadInputError(
            f"states: column {column}, row {row}: {values[row]} outside {low}..{high} "
            f"({UNKNOWN} = UNKNOWN, then the model's K states)"
        )
    return values


def _booleans(series: pd.Series, column: str) -> np.ndarray:
    if pd.api.types.is_bool_dtype(series.dtype):
        if (absent := series.isna().to_numpy()).any():
            raise BadInputError(f"states: column {column}, row {_first(absent)}: missing")
        return series.to_numpy(dtype=bool)
    values = series.to_numpy(dtype=object)
    fits = np.fromiter((isinstance(v, bool | np.bool_) for v in values), bool, len(values))
    if not pd.api.types.is_object_dtype(series.dtype) or not fits.all():
        row = _first(~fits) if not fits.all() else 0
        raise BadInputError(f"states: column {column}, row {row}: {values[row]!r} is not a boolean")
    return values.astype(bool)


def _optional_strings(series: pd.Series, column: str) -> np.ndarray:
    values = series.to_numpy(dtype=object)
    absent = pd.isna(values)
    fits = absent | np.fromiter((isinstance(v, str) for v in values), bool, len(values))
    if not fits.all():
        row = _first(~fits)
        raise BadInputError(f"states: column {column}, row {row}: {values[row]!r} is not text")
    return np.where(absent, None, values)


def _check_probability(values: np.ndarray, column: str) -> None:
    with np.errstate(invalid="ignore"):
        outside = (values < -_PROBABILITY_TOLERANCE) | (values > 1 + _PROBABILITY_TOLERANCE)
    if outside.any():
        row = _first(outside)
        raise BadInputError(
            f"states: column {column}, row {row}: {values[row]!r} is not a probability"
        )
