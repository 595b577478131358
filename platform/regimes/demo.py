"""``regimes demo``: everything that exists, end to end, on one home directory.

Each step is the command a user would run (the same plain functions); the demo only
chains them and prints what happened and where every output went.
"""

from __future__ import annotations

import argparse
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
    from regimes import db
    from regimes.cli import cmd_features, cmd_resample, cmd_synth

    started = time.perf_counter()
    settings = ctx.settings
    steps = 5
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
    from regimes.cli import cmd_encode
    from regimes.errors import BadInputError

    try:
        encode = cmd_encode(ctx, argparse.Namespace(timeframe=None, encoder="pca"))
    except BadInputError as exc:
        say(f"   not fitted: {exc}")
        encode = {"timeframes": {}, "not_fitted": {}}
    say("")
    say(f"== 5/{steps} regimes: a Gaussian HMM on z_t per timeframe (K by BIC on validation)")
    regimes = _fit_regimes(ctx, encode, say)
    elapsed = time.perf_counter() - started
    say("")
    say(f"== done in {elapsed:.1f}s. Outputs:")
    say(f"   bars, features:   {db.describe(ctx.engine)} (tables bars, computed_features)")
    say(f"   synthetic truth:  {synth['truth']}")
    say(f"   generating params: {synth['params']}")
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
        "regimes": regimes,
        "truth": synth["truth"],
        "bars_sha256": synth["bars_sha256"],
        "seconds": round(elapsed, 3),
    }


def _feature_sample(ctx):
    import pandas as pd

    from regimes.feature_store import load_features

    columns = ["rv_15", "r15", "relvol_60", "bb_width", "stoch_k"]
    rows = {}
    for timeframe in TIMEFRAMES:
        frame = load_features(ctx.engine, ctx.config, timeframe, drop_unusable=True)
        if len(frame):
            rows[timeframe] = frame[[c for c in columns if c in frame.columns]].median()
    return pd.DataFrame(rows).T if rows else None


# A coarse grid keeps the demo inside its time budget; `regimes train` searches the range.
DEMO_K = {"1m": [8], "5m": [6, 9], "15m": [6, 9], "1h": [4, 6], "1d": [3, 5]}


def _fit_regimes(ctx, encode: dict, say) -> dict[str, Any]:
    import pandas as pd

    from regimes.errors import BadInputError, TrainingError
    from regimes.training import fit_regimes_first_fold

    rows, details, out = [], [], {}
    for timeframe in encode["timeframes"]:
        try:
            fit = fit_regimes_first_fold(
                ctx.engine, ctx.config, timeframe, k_values=DEMO_K[timeframe], n_restarts=1
            )
        except (BadInputError, TrainingError) as exc:
            say(f"   {timeframe}: not fitted: {exc}")
            continue
        table = fit.selection_table
        rows.append(
            {
                "timeframe": timeframe,
                "K": fit.hmm.K,
                "K tried": ",".join(str(k) for k in table["K"]),
                "mean dwell (bars)": round(fit.mean_dwell, 1),
                "stay prob": round(float(fit.hmm.params_.transmat.diagonal().mean()), 3),
                "val loglik/bar": round(fit.validation_loglik_per_bar, 2),
                "val entropy": round(fit.validation_entropy, 3),
                "fit s": round(fit.hmm.fit_seconds_, 1),
            }
        )
        busiest = sorted(fit.occupancy.items(), key=lambda item: -item[1])[:3]
        details.append(
            f"   {timeframe} busiest states: "
            + "; ".join(f"{k} {fit.labels[k]} ({share:.0%})" for k, share in busiest)
        )
        out[timeframe] = {
            "K": fit.hmm.K,
            "mean_dwell": fit.mean_dwell,
            "labels": fit.labels,
            "occupancy": fit.occupancy,
        }
    if rows:
        say(
            "regime models on each timeframe's first fold (fitted on train, scored on "
            "validation; filtered posteriors, no look-ahead):"
        )
        say(pd.DataFrame(rows).to_string(index=False))
        for line in details:
            say(line)
    return out
