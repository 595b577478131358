"""``regimes demo``: everything that exists, end to end, on one home directory.

Each step is the command a user would run (the same plain functions); the demo only
chains them and prints what happened and where every output went.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

from regimes.timeframes import TIMEFRAMES

DEMO_START = date(2024, 1, 2)


def run_demo(
    ctx, args: argparse.Namespace, *, say: Callable[[str], None], progress
) -> dict[str, Any]:
    from regimes.app.cli import cmd_features, cmd_resample, cmd_synth, engine_layer
    from regimes.data import sql as db

    started = time.perf_counter()
    settings = ctx.settings
    steps = 7
    say(f"== regimes demo in {settings.home}")
    say(f"   database: {db.mask_url(settings.db_url)}")
    say(f"   config:   {settings.config_dir}")
    say("")
    say(f"== 1/{steps} synthetic market with known regimes")
    synth = cmd_synth(
        ctx,
        argparse.Namespace(
            symbols=args.symbols,
            days=args.days,
            seed=args.seed,
            start=DEMO_START,
            missing_rate=0.002,
        ),
    )
    say("")
    say(f"== 2/{steps} align 1m bars to the session, mark gaps, resample to 5m 15m 1h 1d")
    cmd_resample(ctx, argparse.Namespace(symbols=None, timeframes=list(TIMEFRAMES[1:])))
    summary = db.bars_summary(ctx.engine)
    bars_table = (
        summary.groupby("timeframe", sort=False)
        .agg(
            symbols=("symbol", "nunique"),
            bars=("bars", "sum"),
            gaps=("gaps", "sum"),
            first_ts=("first_ts", "min"),
            last_ts=("last_ts", "max"),
        )
        .reindex([tf for tf in TIMEFRAMES if tf in set(summary["timeframe"])])
        .reset_index()
    )
    say("")
    say("bars per timeframe (all symbols, gap rows included):")
    say(bars_table.to_string(index=False))
    say("")
    say(f"== 3/{steps} the 21 features per (symbol, timeframe), fanned out on {args.executor}")
    features = cmd_features(
        ctx, argparse.Namespace(timeframe=None, symbols=None, executor=args.executor)
    )
    stored = db.features_summary(ctx.engine)
    feature_table = (
        stored.groupby("timeframe", sort=False)
        .agg(
            symbols=("symbol", "nunique"),
            rows=("rows", "sum"),
            warmup=("warmup", "sum"),
            gaps=("gaps", "sum"),
        )
        .reindex([tf for tf in TIMEFRAMES if tf in set(stored["timeframe"])])
        .reset_index()
    )
    feature_table["usable"] = (
        feature_table["rows"] - feature_table["warmup"] - feature_table["gaps"]
    )
    say("")
    say("computed_features read back per timeframe (usable = neither warm-up nor gap):")
    say(feature_table.to_string(index=False))
    sample = _feature_sample(ctx)
    if sample is not None:
        say("")
        say("median of a few usable features per timeframe (all symbols):")
        say(sample.to_string())
    say("")
    say(
        f"== 4/{steps} state vectors: selection, stationarity, scaling and a PCA encoder per "
        "timeframe"
    )
    from regimes.app.cli import cmd_encode
    from regimes.errors import BadInputError

    try:
        encode = cmd_encode(ctx, argparse.Namespace(timeframe=None, encoder="pca"))
    except BadInputError as exc:
        say(f"   not fitted: {exc}")
        encode = {"timeframes": {}, "not_fitted": {}}
    say("")
    say(
        f"== 5/{steps} training: every timeframe through the Prefect flow, its grid on "
        f"{args.executor}; 1d on real S&P 500 daily bars (arch's copy, no download)"
    )
    server = engine_layer("regimes.flows.server").ensure_prefect_server(ctx.settings.home)
    say(f"   Prefect server: {server.api_url}")
    try:
        trained = _train_all(ctx, args, say)
        say("")
        say(
            f"== 6/{steps} live: the last day bar by bar through the inference engine of every "
            "timeframe, then composite multi-timeframe records"
        )
        live = _live(ctx, trained, say, progress)
        say("")
        say(
            f"== 7/{steps} state store: every model's states over the whole history, backfilled "
            f"through the Prefect flow on {args.executor} into Delta Lake"
        )
        stored = _backfill_all(ctx, args, trained, say)
    finally:
        server.stop()
    elapsed = time.perf_counter() - started
    say("")
    say(f"== done in {elapsed:.1f}s. Outputs:")
    say(f"   bars, features:   {db.describe(ctx.engine)} (tables bars, computed_features)")
    say(f"   synthetic truth:  {synth['truth']}")
    say(f"   generating params: {synth['params']}")
    if stored:
        say(f"   state store:      {stored['store']} (Delta Lake; `regimes states` exports it)")
    plots = [r["latent_dim_plot"] for r in encode["timeframes"].values() if "latent_dim_plot" in r]
    if plots:
        say(f"   latent-dim curves: {str(Path(plots[0]).parent)}/ ({len(plots)} PNG + CSV)")
    return {
        "command": "demo",
        "home": str(settings.home),
        "db_url": db.describe(ctx.engine),
        "bars": {row.timeframe: int(row.bars) for row in bars_table.itertuples()},
        "gaps": {row.timeframe: int(row.gaps) for row in bars_table.itertuples()},
        "features": {row.timeframe: int(row.rows) for row in feature_table.itertuples()},
        "usable_features": {row.timeframe: int(row.usable) for row in feature_table.itertuples()},
        "feature_failures": features["failed"],
        "state_vectors": {
            tf: {
                "d": r["d"],
                "explained_variance": r["explained_variance"],
                "selected": r["selected"],
            }
            for tf, r in encode["timeframes"].items()
        },
        "trained": trained,
        "live": live,
        "states": stored,
        "truth": synth["truth"],
        "bars_sha256": synth["bars_sha256"],
        "seconds": round(elapsed, 3),
    }


def _feature_sample(ctx):
    import pandas as pd

    from regimes.features.store import load_features

    columns = ["rv_15", "r15", "relvol_60", "bb_width", "stoch_k"]
    rows = {}
    for timeframe in TIMEFRAMES:
        frame = load_features(ctx.engine, ctx.config, timeframe, drop_unusable=True)
        if len(frame):
            rows[timeframe] = frame[[c for c in columns if c in frame.columns]].median()
    return pd.DataFrame(rows).T if rows else None


# The demo's small grid keeps it inside its time budget; `regimes train` uses the full one.
DEMO_GRID = {
    "1m": {"K": [8], "covariance": ["diag"]},
    "5m": {"K": [6], "covariance": ["diag"]},
    "15m": {"K": [6], "covariance": ["diag"]},
    "1h": {"K": [4], "covariance": ["diag"]},
    "1d": {"K": [3, 4], "covariance": ["diag"]},
}


def _ingest_sp500(ctx, say) -> str:
    from arch.data import sp500

    from regimes.data.ingest import ingest_file

    raw = sp500.load()[["Open", "High", "Low", "Close", "Volume"]]
    path = ctx.settings.home / "sp500_daily.parquet"
    raw.rename_axis("date").to_parquet(path)
    report = ingest_file(
        ctx.engine,
        path,
        "^GSPC",
        "1d",
        session=ctx.config.timeframes.session,
        tz=ctx.config.timeframes.session.timezone,
    )
    say(
        f"   ingested {report.rows_written} daily bars of ^GSPC ({report.first_ts[:10]} .. "
        f"{report.last_ts[:10]}) from {path}"
    )
    return "^GSPC"


def _train_all(ctx, args, say) -> list[dict]:
    import pandas as pd

    from regimes.app.cli import cmd_features, engine_layer
    from regimes.data.synth import read_truth
    from regimes.errors import RegimesError
    from regimes.training.evaluation import accuracy_against_truth

    symbol = _ingest_sp500(ctx, say)
    cmd_features(ctx, argparse.Namespace(timeframe=["1d"], symbols=[symbol], executor="local"))
    truth = read_truth(ctx.settings.synth_dir)
    flow = engine_layer("regimes.flows.train").train
    rows = []
    for timeframe in TIMEFRAMES:
        symbols = [symbol] if timeframe == "1d" else None
        try:
            [result] = flow(
                timeframes=[timeframe],
                home=str(ctx.settings.home),
                db_url=ctx.settings.db_url,
                config_dir=str(ctx.settings.config_dir),
                symbols=symbols,
                grid=DEMO_GRID[timeframe],
                seed=args.seed,
                executor=args.executor,
            )
        except RegimesError as exc:
            say(f"   {timeframe}: not trained: {exc}")
            continue
        accuracy = accuracy_against_truth(ctx.engine, ctx.config, result["path"], truth)
        rows.append(
            {
                "timeframe": timeframe,
                "model_id": result["model_id"],
                "K": result["K"],
                "d": result["d"],
                "covariance": result["covariance"],
                "val LL/bar": round(result["val_loglik_per_bar"], 3),
                "BIC": round(result["val_bic"], 1),
                "accuracy vs truth": (
                    f"{accuracy['accuracy']:.2f} ({accuracy['level'].split('_')[0]}, chance "
                    f"{accuracy['chance']:.2f})"
                    if accuracy
                    else "n/a (real data)"
                ),
                "status": result["status"],
                "path": result["path"],
            }
        )
    if rows:
        table = pd.DataFrame(rows)
        say("trained models (validation = the last walk-forward fold):")
        say(table.drop(columns=["path"]).to_string(index=False))
        say(f"   artifacts: {ctx.settings.models_dir}/timeframe=<tf>/model_id=<id>/")
        say(f"   registry:  {ctx.settings.home / 'registry'} (all registered as candidates)")
    return rows


def _live(ctx, trained: list[dict], say, progress) -> dict:
    """The last synthetic day through a live engine per timeframe (cold-started from the
    database), switch counts with and without anti-chatter, composite records."""
    import time as clock

    import pandas as pd

    from regimes.data import sql as db
    from regimes.live.engine import DatabaseHistory, InferenceEngine
    from regimes.live.sync import TimeframeSynchronizer
    from regimes.timeframes import TIMEFRAME_DURATION

    paths = {row["timeframe"]: row["path"] for row in trained}
    summary = db.bars_summary(ctx.engine)
    synthetic = summary[summary["symbol"].str.startswith("SYN")]
    symbols = sorted(synthetic["symbol"].unique())
    if not symbols or not paths:
        say("   no synthetic bars or no trained model to run")
        return {}
    zone = ctx.config.timeframes.session.timezone
    last_1m = pd.Timestamp(synthetic.loc[synthetic["timeframe"] == "1m", "last_ts"].max())
    day_start = last_1m.tz_convert(zone).normalize().tz_convert("UTC")
    sync = TimeframeSynchronizer.from_config(ctx.config)
    rows, emitted = [], []
    for timeframe in TIMEFRAMES:
        if timeframe not in paths:
            say(f"   {timeframe}: no trained model to run")
            continue
        engine = InferenceEngine(
            paths[timeframe], ctx.config, history=DatabaseHistory(ctx.engine, timeframe)
        )
        # 1d: the day before as well, the last daily state final during the last day.
        start = day_start - pd.Timedelta(days=4) if timeframe == "1d" else day_start
        bars = db.read_bars(ctx.engine, timeframe, symbols, start)
        steps = [group for _, group in bars.groupby("ts", sort=True)]
        if timeframe == "1d":
            steps = steps[-2:]
        started = clock.perf_counter()
        answers = pd.concat(
            [engine.step(group) for group in progress(f"live {timeframe}")(steps)],
            ignore_index=True,
        )
        seconds = clock.perf_counter() - started
        emitted.append(answers)
        counters = engine.counters()
        reasons = answers["ood_reason"].value_counts()
        rows.append(
            {
                "timeframe": timeframe,
                "model_id": engine.model_id,
                "bars": len(answers),
                "cold-started": counters["cold_started"],
                "known": int((~answers["is_unknown"]).sum()),
                **{str(k): int(v) for k, v in reasons.items()},
                "switches raw": counters["raw_switches"],
                "switches published": counters["published_switches"],
                "ms/step": round(1000 * seconds / max(len(steps), 1), 1),
            }
        )
    table = pd.DataFrame(rows).fillna(0)
    for column in table.columns[3:]:
        if column != "ms/step":
            table[column] = table[column].astype(int)
    say(
        f"the last synthetic day ({day_start.tz_convert(zone).date()}) through the live engine, "
        f"{len(symbols)} symbols; each symbol cold-started from its stored history:"
    )
    say(table.to_string(index=False))
    say(
        "   switches raw = changes of the filtered argmax; published = after anti-chatter "
        "(p_switch, min_dwell_bars, majority vote per timeframe)"
    )
    say(
        "   the 1d model was trained on ^GSPC: synthetic daily bars it never saw the like of "
        "are UNKNOWN (out_of_range / loglik) rather than forced into a regime"
    )
    # The synchroniser sees each answer when its bar closes, as it would live.
    answers = pd.concat(emitted, ignore_index=True)
    answers["final_at"] = answers["ts"] + answers["timeframe"].map(TIMEFRAME_DURATION)
    answers = answers.sort_values(["final_at", "timeframe"], kind="stable")
    composites, fed = {}, 0
    session_open = day_start.tz_convert(zone) + ctx.config.timeframes.session.open_offset
    for label, at in (
        ("midday", session_open.tz_convert("UTC") + pd.Timedelta(hours=3)),
        ("close", last_1m + pd.Timedelta(minutes=1)),
    ):
        closed = int((answers["final_at"] <= at).sum())
        sync.update(answers.iloc[fed:closed])
        fed = closed
        composite = sync.composite(symbols, at)
        shown = composite[["symbol"]].copy()
        for timeframe in TIMEFRAMES:
            state = composite[f"state_{timeframe}"]
            reason = composite[f"reason_{timeframe}"]
            shown[timeframe] = [
                f"{int(s)} ({p:.2f})" if s >= 0 else f"UNKNOWN: {r}"
                for s, p, r in zip(state, composite[f"prob_{timeframe}"], reason, strict=True)
            ]
        say("")
        say(
            f"composite records at {label} {at.tz_convert(zone):%Y-%m-%d %H:%M %Z} "
            "(state (probability) per timeframe; TTLs from config/timeframes.yaml):"
        )
        say(shown.to_string(index=False))
        composites[label] = json.loads(composite.to_json(orient="records", date_format="iso"))
    return {
        "day": str(day_start.tz_convert(zone).date()),
        "engines": json.loads(table.to_json(orient="records")),
        "composite": composites,
    }


def _backfill_all(ctx, args, trained: list[dict], say) -> dict:
    """Every trained model's states over the stored history through the backfill flow,
    then a per-timeframe summary read back from Delta and the current_states table."""
    import math
    import os

    import pandas as pd

    from regimes.app.cli import engine_layer
    from regimes.data import sql as db
    from regimes.storage.state_store import StateStore

    flow = engine_layer("regimes.flows.backfill").backfill
    store = StateStore.from_env(ctx.settings.home)
    rows = []
    for model in trained:
        symbols = db.list_symbols(ctx.engine, model["timeframe"])
        results = flow(
            timeframe=model["timeframe"],
            model_id=model["model_id"],
            home=str(ctx.settings.home),
            db_url=ctx.settings.db_url,
            config_dir=str(ctx.settings.config_dir),
            # One unit per core: anti-chatter and OOD advance all of a unit's symbols
            # together, so a few wide units beat many narrow ones.
            symbols_per_unit=max(1, math.ceil(len(symbols) / (os.cpu_count() or 1))),
            executor=args.executor,
        )
        failed = [r for r in results if r["error"]]
        for result in failed:
            say(f"   {model['timeframe']}: FAILED {result['symbols']}: {result['error']}")
        rows.append(
            {
                "timeframe": model["timeframe"],
                "written": sum(r["rows_written"] for r in results),
                "commits": sum(r["commits"] for r in results),
                "units": len(results),
                "seconds": round(max((r["seconds"] for r in results), default=0.0), 1),
            }
        )
    if not rows or not store.exists():
        return {}
    summary = store.summary()
    occupancy = summary.pop("occupancy")
    summary["occupancy (state: share, -1 = UNKNOWN)"] = [
        ", ".join(f"{k}: {v:.2f}" for k, v in sorted(shares.items())) for shares in occupancy
    ]
    say("backfills (rows written, Delta commits, Ray units, seconds of the slowest unit):")
    say(pd.DataFrame(rows).to_string(index=False))
    say("")
    say(f"state history read back from {store.root} (partitions timeframe/model_id/symbol/date):")
    say(summary.to_string(index=False))
    current = db.read_current_states(ctx.engine)
    say("")
    say(f"current_states ({db.describe(ctx.engine)}), the newest state per symbol and timeframe:")
    pivot = current.assign(
        state=[
            "UNKNOWN" if unknown else f"{state} ({prob:.2f})"
            for state, prob, unknown in zip(
                current["state_id"], current["state_prob"], current["is_unknown"], strict=True
            )
        ]
    ).pivot(index="symbol", columns="timeframe", values="state")
    say(
        pivot.reindex(columns=[tf for tf in TIMEFRAMES if tf in pivot.columns])
        .fillna("")
        .to_string()
    )
    return {
        "store": store.root,
        "backfills": rows,
        "summary": json.loads(summary.to_json(orient="records", date_format="iso")),
        "current_states": len(current),
    }
