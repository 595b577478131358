"""Bars: session-aware resampling and SQL upserts, against plain-library anchors.

* resample: ``regimes.data.bars.resample`` (1m -> 5m/1h, session-anchored, gap-aware) vs the
  anchor pandas ``groupby(symbol).resample(rule, origin=..., offset=...)`` computing
  plain OHLCV on the same aligned bars (no gap policy).
* upsert: ``regimes.data.sql.upsert_bars`` into SQLite vs the anchor: the sqlite3 driver's
  ``executemany`` of ``INSERT OR REPLACE`` with pre-converted tuples (no validation,
  no SQLAlchemy).
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import best_of, table  # noqa: E402

from regimes.config.loading import load_timeframes  # noqa: E402
from regimes.data import sql as db  # noqa: E402
from regimes.data.bars import align_minutes, resample  # noqa: E402
from regimes.data.synth import SynthConfig, generate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS, DAYS = 10, 40


def _anchor_resample(aligned: pd.DataFrame, rule: str) -> pd.DataFrame:
    present = aligned.loc[~aligned["is_gap"]].set_index("ts")
    grouped = present.groupby("symbol").resample(rule, origin="start_day", offset="14h30min")
    out = grouped.agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}
    )
    return out.dropna(subset=["open"])


def run() -> str:
    session = load_timeframes(ROOT / "config" / "timeframes.yaml").session
    market = generate(SynthConfig(symbols=SYMBOLS, days=DAYS, seed=3), session)
    aligned = pd.concat(
        [align_minutes(group, session)[0] for _, group in market.bars.groupby("symbol")],
        ignore_index=True,
    )
    rows = []
    for timeframe, rule in (("5m", "5min"), ("1h", "1h")):
        ours, _ = best_of(lambda tf=timeframe: resample(aligned, tf, session, 0.2))
        anchor, _ = best_of(lambda r=rule: _anchor_resample(aligned, r))
        rows.append(
            [
                f"resample 1m -> {timeframe}",
                f"{len(aligned):,} bars",
                f"{ours * 1e3:.0f} ms",
                f"{anchor * 1e3:.0f} ms",
                f"{ours / anchor:.2f}",
            ]
        )

    frame = market.bars.iloc[:100_000]
    with tempfile.TemporaryDirectory() as tmp:
        engine = db.make_engine(f"sqlite:///{Path(tmp) / 'ours.db'}")
        db.create_schema(engine)
        ours, _ = best_of(lambda: db.upsert_bars(engine, frame), repeats=3)
        engine.dispose()
        connection = sqlite3.connect(Path(tmp) / "anchor.db")
        connection.execute(
            "CREATE TABLE bars (symbol TEXT, timeframe TEXT, ts TEXT, open REAL, high REAL, "
            "low REAL, close REAL, volume REAL, is_gap INTEGER, "
            "PRIMARY KEY (symbol, timeframe, ts))"
        )
        tuples = list(
            zip(
                frame["symbol"],
                frame["timeframe"],
                frame["ts"].dt.strftime("%Y-%m-%d %H:%M:%S.%f"),
                frame["open"],
                frame["high"],
                frame["low"],
                frame["close"],
                frame["volume"],
                frame["is_gap"].astype(int),
                strict=True,
            )
        )

        def anchor_insert():
            with connection:
                connection.executemany(
                    "INSERT OR REPLACE INTO bars VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", tuples
                )

        anchor, _ = best_of(anchor_insert, repeats=3)
        connection.close()
    rows.append(
        [
            "upsert bars (SQLite)",
            f"{len(frame):,} rows",
            f"{ours * 1e3:.0f} ms",
            f"{anchor * 1e3:.0f} ms",
            f"{ours / anchor:.2f}",
        ]
    )
    return "\n".join(
        [
            "## bars: resampling and SQL upserts",
            "",
            "Anchors: pandas `groupby().resample()` (plain OHLCV, no session or gap policy)",
            "and the sqlite3 driver's `executemany` (no validation, pre-converted tuples).",
            "",
            table(rows, ["operation", "size", "regimes", "anchor", "ratio regimes/anchor"]),
        ]
    )
