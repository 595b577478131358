"""``regimes demo``: everything that exists, end to end, on one home directory.

Each step is the use case a user's command runs (the same functions, the same
Workspace); the demo only chains them and prints what happened and where every output
went. One Prefect server serves every flow of the run.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from regimes.app import backfill as backfill_cases
from regimes.app import data, features, rollout, training
from regimes.app import report as report_cases
from regimes.app.executors import Executor, LocalExecutor, executor_named
from regimes.app.orchestrators import Orchestrator, PrefectOrchestrator
from regimes.app.progress import Notify, Progress, no_progress, silent, ticking
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from regimes.timeframes import TIMEFRAMES

DEMO_START = date(2024, 1, 2)
SP500_SYMBOL = "^GSPC"


@dataclass(frozen=True)
class DemoRequest:
    symbols: int = 6
    days: int = 70
    seed: int = 7
    executor: str = "ray"


@dataclass(frozen=True)
class DemoResult:
    """The demo says what it does as it goes; the result is its JSON record."""

    record: dict[str, Any]

    def summary(self) -> list[str]:
        return []

    def as_dict(self) -> dict[str, Any]:
        return self.record


def _say_all(say: Notify, lines: list[str]) -> None:
    for line in lines:
        say(line)


def run(
    workspace: Workspace,
    request: DemoRequest,
    *,
    say: Notify = silent,
    progress: Progress = no_progress,
) -> DemoResult:
    """synth -> resample -> features -> state vectors -> training (Prefect, grids on the
    executor; 1d on the S&P 500) -> the last day live -> backfill into Delta ->
    validation reports -> the live service over HTTP with a shadow -> rollout, rollback,
    a drifted market against the drift gate and the retrain triggers -> an FX-like and a
    crypto-like market beside the equities."""
    from regimes.data import sql as db

    started = time.perf_counter()
    executor = executor_named(request.executor)
    orchestrator = PrefectOrchestrator()
    steps = 11
    marks: list[tuple[str, float]] = []

    def step(header: str) -> None:
        """A step's header; its start time measures the step before it."""
        marks.append((header.split(" ", 2)[1], time.perf_counter()))
        say(header)

    say(f"== regimes demo in {workspace.home}")
    say(f"   database: {db.mask_url(workspace.db_url)}")
    say(f"   config:   {workspace.config_dir}")
    say("")
    step(f"== 1/{steps} synthetic market with known regimes")
    synth = data.synth(
        workspace,
        data.SynthRequest(request.symbols, request.days, request.seed, DEMO_START, 0.002),
        progress,
    )
    _say_all(say, synth.summary())
    say("")
    step(f"== 2/{steps} align 1m bars to the session, mark gaps, resample to 5m 15m 1h 1d")
    _say_all(say, data.resample(workspace, data.ResampleRequest(), progress).summary())
    bars_table = _bars_table(workspace)
    say("")
    say("bars per timeframe (all symbols, gap rows included):")
    say(bars_table.to_string(index=False))
    say("")
    step(f"== 3/{steps} the 21 features per (symbol, timeframe), fanned out on {executor.name}")
    computed = features.features(workspace, features.FeaturesRequest(), executor, say, progress)
    _say_all(say, computed.summary())
    feature_table = _feature_table(workspace)
    say("")
    say("computed_features read back per timeframe (usable = neither warm-up nor gap):")
    say(feature_table.to_string(index=False))
    sample = _feature_sample(workspace)
    if sample is not None:
        say("")
        say("median of a few usable features per timeframe (all symbols):")
        say(sample.to_string())
    say("")
    step(
        f"== 4/{steps} state vectors: selection, stationarity, scaling and a PCA encoder per "
        "timeframe"
    )
    encode = _encode(workspace, say)
    say("")
    step(
        f"== 5/{steps} training: every timeframe through the Prefect flow, its grid on "
        f"{executor.name}; 1d on real S&P 500 daily bars (arch's copy, no download); "
        "each winner promoted to champion"
    )
    with orchestrator.session(workspace) as api_url:
        say(f"   Prefect server: {api_url}")
        trained = _train_all(workspace, request, executor, orchestrator, say, progress)
        say("")
        step(
            f"== 6/{steps} live: the last day bar by bar through the champion's engine of every "
            "timeframe, then composite multi-timeframe records"
        )
        live = _live(workspace, trained, say, progress)
        say("")
        step(
            f"== 7/{steps} state store: every champion's states over the whole history, "
            f"backfilled through the Prefect flow on {executor.name} into Delta Lake"
        )
        stored = _backfill_all(workspace, executor, orchestrator, trained, say)
    say("")
    step(
        f"== 8/{steps} validation reports from the stored states: the 1d S&P 500 model and "
        f"the synthetic {REPORT_SYNTHETIC_TIMEFRAME} model (self-contained HTML + JSON)"
    )
    reports = _reports(workspace, trained, say) if stored else {}
    say("")
    step(
        f"== 9/{steps} the live service (Ray Serve, HTTP on 127.0.0.1): a shadow beside the "
        "1h champion, the last day posted bar by bar (1m: its last two hours)"
    )
    from regimes.app.demo_service import run_service_step

    service = run_service_step(workspace, request.seed, say, progress)
    say("")
    step(
        f"== 10/{steps} rollout and drift: the 1h shadow through its gates to champion, a "
        "rollback, then a drifted market that fails the drift gate and fires the retrain "
        "triggers"
    )
    from regimes.app.demo_rollout import run_rollout_step

    rollouts = run_rollout_step(workspace, service.get("shadow", {}).get("model_id"), say)
    say("")
    step(
        f"== 11/{steps} other markets: an FX-like symbol (24x5, 1h) and a crypto-like one "
        "(24x7, 5m) through every step, composite records with ages in market time"
    )
    markets = _markets(workspace, request.seed, say)
    elapsed = time.perf_counter() - started
    ends = [at for _, at in marks[1:]] + [time.perf_counter()]
    step_seconds = {name: round(end - at, 1) for (name, at), end in zip(marks, ends, strict=True)}
    say("")
    say(
        f"== done in {elapsed:.1f}s (seconds per step: "
        + ", ".join(f"{name} {seconds}" for name, seconds in step_seconds.items())
        + "). Outputs:"
    )
    say(f"   bars, features:   {db.describe(workspace.engine)} (tables bars, computed_features)")
    say(f"   synthetic truth:  {synth.truth}")
    say(f"   generating params: {synth.params}")
    if stored:
        say(f"   state store:      {stored['store']} (Delta Lake; `regimes states` exports it)")
    plots = [r["latent_dim_plot"] for r in encode.timeframes.values() if "latent_dim_plot" in r]
    for timeframe, written in reports.items():
        say(f"   report {timeframe}:        {written['html']}")
    if plots:
        say(f"   latent-dim curves: {str(Path(plots[0]).parent)}/ ({len(plots)} PNG + CSV)")
    return DemoResult(
        {
            "command": "demo",
            "home": str(workspace.home),
            "db_url": db.describe(workspace.engine),
            "bars": {row.timeframe: int(row.bars) for row in bars_table.itertuples()},
            "gaps": {row.timeframe: int(row.gaps) for row in bars_table.itertuples()},
            "features": {row.timeframe: int(row.rows) for row in feature_table.itertuples()},
            "usable_features": {
                row.timeframe: int(row.usable) for row in feature_table.itertuples()
            },
            "feature_failures": computed.as_dict()["failed"],
            "state_vectors": {
                tf: {
                    "d": r["d"],
                    "explained_variance": r["explained_variance"],
                    "selected": r["selected"],
                }
                for tf, r in encode.timeframes.items()
            },
            "trained": trained,
            "live": live,
            "states": stored,
            "reports": reports,
            "service": service,
            "rollout": rollouts,
            "markets": markets,
            "truth": str(synth.truth),
            "bars_sha256": synth.bars_sha256,
            "seconds": round(elapsed, 3),
            "step_seconds": step_seconds,
        }
    )


def _bars_table(workspace: Workspace):
    """Stored bars per timeframe (all symbols, gap rows included)."""
    from regimes.data import sql as db

    summary = db.bars_summary(workspace.engine)
    return (
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


def _feature_table(workspace: Workspace):
    """computed_features per timeframe; usable = neither warm-up nor gap."""
    from regimes.data import sql as db

    stored = db.features_summary(workspace.engine)
    table = (
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
    table["usable"] = table["rows"] - table["warmup"] - table["gaps"]
    return table


def _encode(workspace: Workspace, say: Notify) -> features.EncodeResult:
    """The state vectors of every timeframe that can be fitted (none is not fatal here)."""
    try:
        encode = features.encode(workspace, features.EncodeRequest())
    except BadInputError as exc:
        say(f"   not fitted: {exc}")
        return features.EncodeResult(encoder="pca")
    _say_all(say, encode.summary())
    return encode


def _feature_sample(workspace: Workspace):
    import pandas as pd

    from regimes.features.store import load_features

    columns = ["rv_15", "r15", "relvol_60", "bb_width", "stoch_k"]
    rows = {}
    for timeframe in TIMEFRAMES:
        frame = load_features(workspace.engine, workspace.config, timeframe, drop_unusable=True)
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


def composite_table(composite):
    """Composite records as a table a person reads: per timeframe "state (probability)"
    or "UNKNOWN: reason"."""
    shown = composite[["symbol"]].copy()
    for timeframe in TIMEFRAMES:
        shown[timeframe] = [
            f"{int(s)} ({p:.2f})" if s >= 0 else f"UNKNOWN: {r}"
            for s, p, r in zip(
                composite[f"state_{timeframe}"],
                composite[f"prob_{timeframe}"],
                composite[f"reason_{timeframe}"],
                strict=True,
            )
        ]
    return shown


def _markets(workspace: Workspace, seed: int, say: Notify) -> dict:
    """Step 11 beside the synthetic equities (their last bar time ends the others)."""
    import pandas as pd

    from regimes.app.demo_markets import run_markets_step
    from regimes.data import sql as db

    summary = db.bars_summary(workspace.engine)
    equities = summary[summary["symbol"].str.startswith("SYN") & (summary["timeframe"] == "1m")]
    if equities.empty:
        say("   no synthetic equities to stand beside")
        return {}
    end = pd.Timestamp(equities["last_ts"].max()) + pd.Timedelta(minutes=1)
    return run_markets_step(workspace, seed, end, say)


def _ingest_sp500(workspace: Workspace, say: Notify) -> str:
    from arch.data import sp500

    raw = sp500.load()[["Open", "High", "Low", "Close", "Volume"]]
    path = workspace.home / "sp500_daily.parquet"
    raw.rename_axis("date").to_parquet(path)
    zone = workspace.config.timeframes.session.timezone
    report = data.ingest(workspace, data.IngestRequest(path, SP500_SYMBOL, "1d", tz=zone)).report
    say(
        f"   ingested {report.rows_written} daily bars of {SP500_SYMBOL} "
        f"({report.first_ts[:10]} .. {report.last_ts[:10]}) from {path}"
    )
    return SP500_SYMBOL


def _train_all(
    workspace: Workspace,
    request: DemoRequest,
    executor: Executor,
    orchestrator: Orchestrator,
    say: Notify,
    progress: Progress,
) -> list[dict]:
    import pandas as pd

    from regimes.data.synth import read_truth
    from regimes.errors import RegimesError
    from regimes.training.evaluation import accuracy_against_truth

    symbol = _ingest_sp500(workspace, say)
    daily = features.FeaturesRequest(("1d",), (symbol,))
    _say_all(say, features.features(workspace, daily, LocalExecutor(), say, progress).summary())
    truth = read_truth(workspace.synth_dir)
    rows = []
    for timeframe in TIMEFRAMES:
        train_request = training.TrainRequest(
            timeframes=(timeframe,),
            symbols=(symbol,) if timeframe == "1d" else None,
            grid=DEMO_GRID[timeframe],
            seed=request.seed,
            # The demo writes its reports from the stored states after the backfill.
            report=False,
        )
        try:
            [result] = training.train(workspace, train_request, executor, orchestrator).models
        except RegimesError as exc:
            say(f"   {timeframe}: not trained: {exc}")
            continue
        local = workspace.model_store.artifact(timeframe, result["model_id"], str(result["path"]))
        accuracy = accuracy_against_truth(workspace.engine, workspace.config, local, truth)
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
                "role": result["role"],
                "path": result["path"],
            }
        )
    if rows:
        table = pd.DataFrame(rows)
        say("trained models (validation = the last walk-forward fold):")
        say(table.drop(columns=["path"]).to_string(index=False))
        say(f"   artifacts: {workspace.models_dir}/timeframe=<tf>/model_id=<id>/")
        say(f"   registry:  {workspace.registry_root} (registered as candidates)")
        say("")
        say("each timeframe's first model made champion (`regimes promote --force`: the gates")
        say("run for later models; `regimes rollback` undoes it):")
        for row in rows:
            promoted = rollout.promote(
                workspace,
                rollout.PromoteRequest(
                    row["timeframe"],
                    row["model_id"],
                    actor="demo",
                    reason="the first model of its timeframe: nothing to compare it with yet",
                    force=True,
                ),
            )
            _say_all(say, ["   " + line for line in promoted.summary()])
            row["role"] = promoted.transition.to_role
    return rows


def _live(workspace: Workspace, trained: list[dict], say: Notify, progress: Progress) -> dict:
    """The last synthetic day through a live engine per timeframe (cold-started from the
    database), switch counts with and without anti-chatter, composite records."""
    import time as clock

    import pandas as pd

    from regimes.data import sql as db
    from regimes.live.engine import DatabaseHistory, open_engine
    from regimes.live.sync import TimeframeSynchronizer
    from regimes.timeframes import TIMEFRAME_DURATION

    paths = {row["timeframe"]: row["path"] for row in trained}
    summary = db.bars_summary(workspace.engine)
    synthetic = summary[summary["symbol"].str.startswith("SYN")]
    symbols = sorted(synthetic["symbol"].unique())
    if not symbols or not paths:
        say("   no synthetic bars or no trained model to run")
        return {}
    config = workspace.config
    zone = config.timeframes.session.timezone
    last_1m = pd.Timestamp(synthetic.loc[synthetic["timeframe"] == "1m", "last_ts"].max())
    day_start = last_1m.tz_convert(zone).normalize().tz_convert("UTC")
    sync = TimeframeSynchronizer.from_config(config)
    rows, emitted = [], []
    for timeframe in TIMEFRAMES:
        if timeframe not in paths:
            say(f"   {timeframe}: no trained model to run")
            continue
        # The champion of the timeframe, from its artifact alone; each new symbol is
        # cold-started from its stored bars.
        engine = open_engine(
            workspace.model_store,
            workspace.registry,
            timeframe,
            history=DatabaseHistory(workspace.engine, timeframe),
        )
        sync.set_champion(timeframe, engine.model_id, ttl=engine.model.state_ttl)
        # 1d: the day before as well, the last daily state final during the last day.
        start = day_start - pd.Timedelta(days=4) if timeframe == "1d" else day_start
        bars = db.read_bars(workspace.engine, timeframe, symbols, start)
        steps = [group for _, group in bars.groupby("ts", sort=True)]
        if timeframe == "1d":
            steps = steps[-2:]
        started = clock.perf_counter()
        with progress(f"live {timeframe}", len(steps)) as tick:
            answers = pd.concat(
                [engine.step(group) for group in ticking(steps, tick)], ignore_index=True
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
    session_open = day_start.tz_convert(zone) + config.timeframes.session.open_offset
    for label, at in (
        ("midday", session_open.tz_convert("UTC") + pd.Timedelta(hours=3)),
        ("close", last_1m + pd.Timedelta(minutes=1)),
    ):
        closed = int((answers["final_at"] <= at).sum())
        sync.update(answers.iloc[fed:closed])
        fed = closed
        composite = sync.composite(symbols, at)
        shown = composite_table(composite)
        say("")
        say(
            f"composite records at {label} {at.tz_convert(zone):%Y-%m-%d %H:%M %Z} "
            "(state (probability) per timeframe; TTLs from each champion's artifact):"
        )
        say(shown.to_string(index=False))
        composites[label] = json.loads(composite.to_json(orient="records", date_format="iso"))
    return {
        "day": str(day_start.tz_convert(zone).date()),
        "engines": json.loads(table.to_json(orient="records")),
        "composite": composites,
    }


def _backfill_all(
    workspace: Workspace,
    executor: Executor,
    orchestrator: Orchestrator,
    trained: list[dict],
    say: Notify,
) -> dict:
    """Every trained model's states over the stored history through the backfill flow,
    then a per-timeframe summary read back from Delta and the current_states table."""
    import math
    import os

    import pandas as pd

    from regimes.data import sql as db

    store = workspace.state_store
    rows = []
    for model in trained:
        symbols = db.list_symbols(workspace.engine, model["timeframe"])
        request = backfill_cases.BackfillRequest(
            timeframe=model["timeframe"],
            model_id=model["model_id"],
            # One unit per core: anti-chatter and OOD advance all of a unit's symbols
            # together, so a few wide units beat many narrow ones.
            symbols_per_unit=max(1, math.ceil(len(symbols) / (os.cpu_count() or 1))),
        )
        run = backfill_cases.backfill(workspace, request, executor, orchestrator)
        for result in run.failed:
            say(f"   {model['timeframe']}: FAILED {list(result.symbols)}: {result.error}")
        rows.append(
            {
                "timeframe": model["timeframe"],
                "written": run.rows_written,
                "commits": sum(r.commits for r in run.results),
                "units": len(run.results),
                "seconds": round(max((r.seconds for r in run.results), default=0.0), 1),
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
    current = db.read_current_states(workspace.engine)
    say("")
    where = db.describe(workspace.engine)
    say(f"current_states ({where}), the newest state per symbol and timeframe:")
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


REPORT_SYNTHETIC_TIMEFRAME = "1h"
"""The synthetic timeframe the demo reports on (the fewest bars: a few seconds)."""


def _reports(workspace: Workspace, trained: list[dict], say: Notify) -> dict:
    """``regimes report`` of the 1d (S&P 500) model and one synthetic timeframe: paths,
    states ordered by volatility, dwell vs implied dwell, Sharpe per strategy."""
    from regimes.errors import RegimesError

    models = {row["timeframe"]: row["model_id"] for row in trained}
    written = {}
    for timeframe in ("1d", REPORT_SYNTHETIC_TIMEFRAME):
        if timeframe not in models:
            continue
        # The 1d champion is backfilled over the synthetic daily bars too (mostly
        # UNKNOWN); its report is about the S&P 500 it was trained on.
        symbols = (SP500_SYMBOL,) if timeframe == "1d" else None
        request = report_cases.ReportRequest(timeframe, models[timeframe], symbols)
        try:
            result = report_cases.report(workspace, request)
        except RegimesError as exc:
            say(f"   {timeframe}: no report: {exc}")
            continue
        _say_all(say, result.summary())
        answer = result.as_dict()
        written[timeframe] = {k: answer[k] for k in ("html", "json", "html_bytes", "headline")}
        written[timeframe]["verdicts_passed"] = result.verdicts.passed
        written[timeframe]["seconds"] = answer["seconds"]
    return written
