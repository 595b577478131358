"""``regimes demo``: everything that exists, end to end, on one home directory.

Each step is the same plain function its own command runs; the demo only chains them
and prints where every output went.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any


def run_demo(
    ctx, args: argparse.Namespace, *, say: Callable[[str], None], progress
) -> dict[str, Any]:
    from regimes import db
    from regimes.bars import resample_symbols
    from regimes.cli import cmd_synth

    started = time.perf_counter()
    settings = ctx.settings
    say(f"== regimes demo in {settings.home}")
    say(f"   database: {settings.db_url}")
    say(f"   config:   {settings.config_dir}")
    say("")
    say("== 1/2 synthetic market with known regimes")
    synth_args = argparse.Namespace(
        symbols=args.symbols,
        days=args.days,
        seed=args.seed,
        start=_default_start(),
        missing_rate=0.002,
    )
    synth_result = cmd_synth(ctx, synth_args)
    say("")
    say("== 2/2 align 1m bars to the session, mark gaps, resample to 5m 15m 1h 1d")
    report = resample_symbols(
        ctx.engine,
        ctx.config.timeframes.session,
        ctx.config.timeframes.gaps.max_missing_fraction,
        progress=progress("resampling"),
    )
    say(f"   1m gap rows marked: {report.gap_rows_added}")
    summary = db.bars_summary(ctx.engine)
    table = (
        summary.groupby("timeframe", sort=False)
        .agg(
            symbols=("symbol", "nunique"),
            bars=("bars", "sum"),
            gaps=("gaps", "sum"),
            first_ts=("first_ts", "min"),
            last_ts=("last_ts", "max"),
        )
        .reindex([tf for tf in ("1m", "5m", "15m", "1h", "1d") if tf in set(summary["timeframe"])])
        .reset_index()
    )
    say("")
    say("bars per timeframe (all symbols):")
    say(table.to_string(index=False))
    say("")
    per_symbol = summary.pivot(index="symbol", columns="timeframe", values="bars")
    per_symbol = per_symbol.reindex(
        columns=[c for c in ("1m", "5m", "15m", "1h", "1d") if c in per_symbol.columns]
    )
    say("bars per symbol and timeframe (gap rows included):")
    say(per_symbol.to_string())
    elapsed = time.perf_counter() - started
    say("")
    say(f"== done in {elapsed:.1f}s. Outputs:")
    say(f"   bars:             {db.describe(ctx.engine)} (table bars)")
    say(f"   synthetic truth:  {synth_result['truth']}")
    say(f"   generating params:{synth_result['params']}")
    return {
        "command": "demo",
        "home": str(settings.home),
        "db_url": db.describe(ctx.engine),
        "bars": {row.timeframe: int(row.bars) for row in table.itertuples()},
        "gaps": {row.timeframe: int(row.gaps) for row in table.itertuples()},
        "truth": synth_result["truth"],
        "bars_sha256": synth_result["bars_sha256"],
        "seconds": round(elapsed, 3),
    }


def _default_start():
    from datetime import date

    return date(2024, 1, 2)
