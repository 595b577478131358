"""What the live service's HTTP ingress computes, without HTTP: routing rows to shards,
joining the shards' replies, the composite record, the model listing and the
dashboard's figures. ``regimes.serve.ingress`` only moves requests and replies."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd

from regimes.errors import BadInputError
from regimes.live.api import refused_records
from regimes.live.monitoring import monitor_series
from regimes.live.sharding import shards_of
from regimes.live.sync import TimeframeSynchronizer


class ShardRouter:
    """Rows -> shard parts; the shard of a symbol is remembered (it comes every bar)."""

    def __init__(self, limit: int = 1_000_000):
        self.limit = limit
        self._cache: dict[int, dict[str, int]] = {}

    def shards(self, symbols: list[str], shards: int) -> np.ndarray:
        cache = self._cache.setdefault(shards, {})
        if len(cache) > self.limit:
            cache.clear()
        found = [cache.get(s) for s in symbols]
        if None in found:
            fresh = [s for s, f in zip(symbols, found, strict=True) if f is None]
            cache.update(zip(fresh, shards_of(fresh, shards).tolist(), strict=True))
            found = [cache[s] for s in symbols]
        return np.asarray(found, dtype=np.int64)

    def split(self, bars: pd.DataFrame, shards: int) -> list[tuple[int, pd.DataFrame, np.ndarray]]:
        """(shard, its rows, their positions in ``bars``) for every shard with rows."""
        of_row = self.shards(bars["symbol"].tolist(), shards)
        parts = []
        for index in range(shards):
            rows = np.flatnonzero(of_row == index)
            if len(rows):
                parts.append((index, bars.iloc[rows].reset_index(drop=True), rows))
        return parts

    def group(self, symbols: list[str], shards: int) -> dict[int, list[str]]:
        """Symbols per shard (for reads)."""
        out: dict[int, list[str]] = {}
        for symbol, index in zip(symbols, self.shards(symbols, shards).tolist(), strict=True):
            out.setdefault(index, []).append(symbol)
        return out


def pooled(frames) -> pd.DataFrame:
    """The non-empty frames one after the other (an empty frame when none)."""
    frames = [f for f in frames if f is not None and len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def join_replies(replies, positions) -> tuple[pd.DataFrame, list[dict]]:
    """The shards' (answers, refused rows) -> all answers and the refused rows as records,
    each refused row numbered by its position in the request."""
    answers, refused = [], []
    for (shard_answers, rejected), rows in zip(replies, positions, strict=True):
        answers.append(shard_answers)
        if len(rejected):
            rejected = rejected.assign(row=rows[rejected["row"].astype(int).to_numpy()])
            refused.extend(refused_records(rejected))
    return pooled(answers), sorted(refused, key=lambda r: r["row"])


def bar_time(bars: pd.DataFrame) -> str:
    return pd.Timestamp(bars["ts"].iloc[0]).isoformat()


SYNC_COLUMNS = (
    "symbol",
    "ts",
    "timeframe",
    "model_id",
    "state_id",
    "state_prob",
    "is_unknown",
    "ood_reason",
)


class AnswerBacklog:
    """Answers returned and not yet fed to the synchroniser (:func:`feed`), bounded: past
    ``limit`` frames they are folded into the newest two per symbol (all :func:`feed`
    keeps), so a service that is never asked for a composite record does not grow.

    Parameters
    ----------
    limit : int
        Frames kept before they are folded.
    """

    def __init__(self, limit: int = 64):
        self.limit = limit
        self.frames: list[pd.DataFrame] = []

    def add(self, answers: pd.DataFrame) -> None:
        if len(answers):
            self.frames.append(answers[list(SYNC_COLUMNS)])
        if len(self.frames) > self.limit:
            self.frames[:] = [pooled(self.frames).groupby("symbol", sort=False).tail(2)]


def feed(sync: TimeframeSynchronizer, frames: list[pd.DataFrame], champion: str | None) -> None:
    """The newest two answers per symbol of ``champion`` into the synchroniser."""
    frame = pooled(frames)
    frames.clear()
    if frame.empty or champion is None:
        return
    frame = frame.groupby("symbol", sort=False).tail(2)
    frame = frame[frame["model_id"] == champion]
    if len(frame):
        sync.update(frame)


def parse_at(at: str | None) -> pd.Timestamp:
    """``at`` of a composite query (default now), time zone required."""
    try:
        when = pd.Timestamp(at) if at else pd.Timestamp(datetime.now(UTC))
    except ValueError:
        raise BadInputError(f"at: not a time: {at!r}") from None
    if when.tzinfo is None:
        raise BadInputError(f"at: expected a time zone, got {at!r}")
    return when


def _none_if_nan(value):
    if value is None:
        return None
    value = float(value)
    return None if value != value else value


def learn_calendar(sync: TimeframeSynchronizer, symbol: str, markets) -> None:
    """Give ``sync`` the market calendar of ``symbol`` once (``markets()`` returns the
    :class:`regimes.data.markets.MarketBook`), so its states age in market time; a symbol
    on the default session is remembered as wall-clock (None)."""
    if symbol not in sync.calendars:
        sync.calendars[symbol] = markets().market_calendars([symbol]).get(symbol)


def composite(sync, symbol: str, when: pd.Timestamp, champions: dict, labels: dict) -> dict:
    """The composite record of ``symbol`` at ``when`` as JSON-ready cells per timeframe."""
    record = sync.composite([symbol], when).iloc[0].to_dict()
    cells = {}
    for timeframe in sync.ttl:
        state = int(record[f"state_{timeframe}"])
        champion = champions.get(timeframe)
        cells[timeframe] = {
            "state_id": state,
            "label": labels.get(timeframe, {}).get(champion, {}).get(state),
            "state_prob": _none_if_nan(record[f"prob_{timeframe}"]),
            "age_s": _none_if_nan(record[f"age_s_{timeframe}"]),
            "reason": record[f"reason_{timeframe}"],
            "model_id": champion,
        }
    return {"symbol": symbol, "at": when.isoformat(), "timeframes": cells}


def models_listing(registry, timeframes, served: dict[str, set]) -> dict:
    """Champion and shadows per timeframe with since / actor / reason."""
    out = {}
    for timeframe in timeframes:
        current = registry.current(timeframe)
        live = current["role"].isin(["champion", "shadow"]) & current["symbol"].isna()
        out[timeframe] = [
            {
                "model_id": row.model_id,
                "role": row.role,
                "since": pd.Timestamp(row.since).isoformat(),
                "actor": row.actor,
                "reason": row.reason,
                "served": row.model_id in served.get(timeframe, set()),
            }
            for row in current[live].itertuples(index=False)
        ]
    return {"timeframes": out}


def pool_comparisons(replies: list[dict]) -> dict[str, pd.DataFrame]:
    """Every shard's kept answers per model, pooled."""
    pooled_frames: dict[str, list] = {}
    for reply in replies:
        for model_id, frame in reply.items():
            pooled_frames.setdefault(model_id, []).append(frame)
    return {model_id: pooled(frames) for model_id, frames in pooled_frames.items()}


def drift_cells(stored: pd.DataFrame, timeframe: str, models) -> list[dict]:
    """The newest drift report of each of ``models`` (from the drift_reports table)."""
    import json

    mine = stored[stored["timeframe"] == timeframe]
    cells = []
    for model_id in models:
        rows = mine[mine["model_id"] == model_id]
        if not len(rows):
            continue
        summary = json.loads(rows["summary"].iloc[-1])
        cells.append(
            {
                "model_id": model_id,
                "created_at": summary["created_at"],
                "passed": summary["passed"],
                "failed": [c["name"] for c in summary["checks"] if not c["passed"]],
                "occupancy_reference": summary.get("state", {}).get("occupancy_reference"),
            }
        )
    return cells


def monitor_cell(answers, counters: dict, drift: list[dict], roles: dict, shadows: dict) -> dict:
    """The dashboard's figures of one timeframe."""
    champion = roles.get("champion")
    bars = counters.get("bars", 0)
    training = next((d["occupancy_reference"] for d in drift if d["model_id"] == champion), None)
    return {
        "champion": champion,
        "shadows": roles.get("shadows", []),
        "series": monitor_series(answers),
        "occupancy_training": training,
        "switch_rate": counters.get("published_switches", 0) / bars if bars else None,
        "shadow_agreement": {m: f.get("agreement") for m, f in shadows.items()},
        "drift": drift,
    }


def events_listing(registry, newest: int = 10) -> list[dict]:
    """The newest registry transitions, newest first."""
    events = registry.events().tail(newest).iloc[::-1]
    return [
        {
            "event_ts": pd.Timestamp(e.event_ts).isoformat(),
            "timeframe": e.timeframe,
            "model_id": e.model_id,
            "from_role": e.from_role,
            "to_role": e.to_role,
            "actor": e.actor,
            "reason": e.reason,
        }
        for e in events.itertuples(index=False)
    ]


def now_iso() -> str:
    return datetime.now(UTC).isoformat()
