"""The ``regimes`` command line.

Every command prints a human summary to stderr and, where it produces something, one
JSON object as the last line of stdout. A user mistake exits non-zero with a one-line
reason on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from regimes import __version__
from regimes.config.loading import PlatformConfig, load_config
from regimes.config.settings import Settings, resolve_settings
from regimes.errors import BadInputError, ConfigError, RegimesError
from regimes.timeframes import TIMEFRAMES

logger = logging.getLogger("regimes.app.cli")

EXIT_USER_ERROR = 2
EXIT_STORE_ERROR = 3
EXIT_PARTIAL = 4


# --------------------------------------------------------------------------- output


def say(message: str = "") -> None:
    """A line of the human summary (stderr)."""
    print(message, file=sys.stderr, flush=True)


def _no_bar() -> bool | None:
    return False if os.environ.get("REGIMES_PROGRESS") == "1" else None


def progress(items: Sequence[Any], description: str) -> Any:
    """A progress bar on stderr over ``items`` (hidden when stderr is not a terminal,
    unless ``REGIMES_PROGRESS=1``)."""
    from tqdm.auto import tqdm

    return tqdm(
        items,
        desc=description,
        file=sys.stderr,
        disable=_no_bar(),
        leave=True,
        dynamic_ncols=True,
    )


def _progress_for(description: str) -> Callable[[Sequence[Any]], Any]:
    return lambda items: progress(items, description)


def format_table(frame) -> str:
    return frame.to_string(index=False)


# --------------------------------------------------------------------------- context


class Context:
    """Resolved settings and lazily loaded config and engine for one invocation."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._config: PlatformConfig | None = None
        self._engine = None

    @property
    def config(self) -> PlatformConfig:
        if self._config is None:
            self._config = load_config(self.settings.config_dir)
        return self._config

    @property
    def engine(self):
        if self._engine is None:
            from regimes.data import sql as db

            self._engine = db.make_engine(self.settings.db_url)
            db.create_schema(self._engine)
        return self._engine


# --------------------------------------------------------------------------- commands


def cmd_synth(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.data import sql as db
    from regimes.data.synth import SynthConfig, generate, write_truth

    synth_config = SynthConfig(
        symbols=args.symbols,
        days=args.days,
        seed=args.seed,
        start=args.start,
        missing_rate=args.missing_rate,
    ).validate()
    started = time.perf_counter()
    market = generate(synth_config, ctx.config.timeframes.session)
    engine = ctx.engine
    # The truth first: a file-system problem then stops us before the database changes.
    truth_path, params_path = write_truth(market, ctx.settings.synth_dir)
    frames = [group for _, group in market.bars.groupby("symbol", sort=True)]
    written = 0
    for frame in progress(frames, "writing 1m bars"):
        # A synthetic symbol is owned by synth: its earlier bars (any seed, any
        # timeframe) are replaced in the same transaction, so nothing stale survives.
        symbol = frame["symbol"].iloc[0]
        written += db.rewrite_bars(engine, frame, [symbol], timeframes=TIMEFRAMES)
    digest = market.bars_sha256()
    elapsed = time.perf_counter() - started
    say(
        f"synth: {synth_config.symbols} symbols x {synth_config.days} trading days, seed "
        f"{synth_config.seed}: {written} one-minute bars "
        f"({int(market.truth['missing'].sum())} dropped as missing) in {elapsed:.1f}s"
    )
    say(f"  bars  -> {db.describe(engine)} (table bars, timeframe 1m; earlier bars of these")
    say("           symbols were replaced: run `regimes resample` for 5m..1d)")
    say(f"  truth -> {truth_path}")
    say(f"  params-> {params_path}")
    return {
        "command": "synth",
        "symbols": sorted(market.bars["symbol"].unique().tolist()),
        "days": synth_config.days,
        "seed": synth_config.seed,
        "bars_written": written,
        "missing_bars": int(market.truth["missing"].sum()),
        "bars_sha256": digest,
        "truth": str(truth_path),
        "params": str(params_path),
        "seconds": round(elapsed, 3),
    }


def cmd_ingest(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.data.ingest import describe_problems, ingest_file

    report = ingest_file(
        ctx.engine,
        args.file,
        args.symbol,
        args.timeframe,
        session=ctx.config.timeframes.session,
        drop_bad=args.drop_bad,
        tz=args.tz,
        ts_format=args.ts_format,
    )
    say(
        f"ingest: {report.rows_written} of {report.rows_read} rows of {report.file} written as "
        f"{report.symbol} {report.timeframe} ({report.first_ts} .. {report.last_ts})"
    )
    if report.reordered_rows:
        say(f"  {report.reordered_rows} row(s) were out of time order and were sorted")
    if report.moved_to_session_open:
        say(
            f"  {report.moved_to_session_open} daily row(s) stamped at midnight were placed "
            "at the session open (a bar's ts is its open time)"
        )
    if report.dropped:
        say(f"  dropped {len(report.dropped)} bad row(s): {describe_problems(report.dropped)}")
    return {"command": "ingest", **report.as_dict()}


def cmd_resample(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.data.bars import resample_symbols

    started = time.perf_counter()
    report = resample_symbols(
        ctx.engine,
        ctx.config.timeframes.session,
        ctx.config.timeframes.gaps.max_missing_fraction,
        symbols=args.symbols,
        timeframes=args.timeframes,
        progress=_progress_for("resampling"),
    )
    elapsed = time.perf_counter() - started
    say(
        f"resample: {report.symbols} symbols in {elapsed:.1f}s; 1m gap rows marked: "
        f"{report.gap_rows_added}; 1m bars outside the session (not aggregated): "
        f"{report.outside_session}"
    )
    for timeframe, rows in report.rows_written.items():
        if timeframe != "1m":
            say(f"  {timeframe:>4}: {rows} bars written")
    return {
        "command": "resample",
        "symbols": report.symbols,
        "rows_written": report.rows_written,
        "gap_rows_added": report.gap_rows_added,
        "outside_session": report.outside_session,
        "seconds": round(elapsed, 3),
    }


def engine_layer(module: str):
    """Import an engines-layer module (``regimes.jobs.*``, ``regimes.flows.*``) at run time.

    The core never imports Ray or Prefect at import time (a test checks the import
    graph); commands that fan work out reach the thin engine layers through here.
    """
    import importlib

    return importlib.import_module(module)


def cmd_features(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.features.store import plan_units, run_features, summarize

    started = time.perf_counter()
    units = plan_units(ctx.engine, args.timeframe, args.symbols)
    if args.executor == "ray":
        from tqdm.auto import tqdm

        jobs = engine_layer("regimes.jobs.features")
        where = engine_layer("regimes.jobs.runtime").ensure_ray()
        say(f"features: {len(units)} (symbol, timeframe) units as Ray tasks on {where}")
        with tqdm(total=len(units), desc="features", file=sys.stderr, disable=_no_bar()) as bar:
            results = jobs.run_features_on_ray(
                ctx.settings.db_url, ctx.config, units, progress=bar.update
            )
    else:
        say(f"features: {len(units)} (symbol, timeframe) units in this process")
        results = run_features(ctx.engine, ctx.config, units, progress=_progress_for("features"))
    elapsed = time.perf_counter() - started
    table = summarize(results)
    say(f"features: spec version {ctx.config.features.version}, {elapsed:.1f}s")
    say(format_table(table))
    failed = [r for r in results if r.error]
    for result in failed:
        say(f"  FAILED {result.symbol} {result.timeframe}: {result.error}")
    payload = {
        "command": "features",
        "executor": args.executor,
        "units": len(results),
        "failed": [
            {"symbol": r.symbol, "timeframe": r.timeframe, "error": r.error} for r in failed
        ],
        "rows_written": {row.timeframe: int(row.rows_written) for row in table.itertuples()},
        "feature_spec_version": ctx.config.features.version,
        "seconds": round(elapsed, 3),
    }
    if failed:
        payload["_exit"] = EXIT_PARTIAL
    return payload


def cmd_encode(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.model.pipeline import fit_first_fold

    reports_dir = ctx.settings.home / "reports" / "state_vectors"
    results, failures, rows = {}, {}, []
    for timeframe in args.timeframe or list(TIMEFRAMES):
        try:
            _, _, report = fit_first_fold(
                ctx.engine, ctx.config, timeframe, args.encoder, reports_dir=reports_dir
            )
        except BadInputError as exc:
            failures[timeframe] = _one_line(exc)
            continue
        results[timeframe] = report
        rows.append(
            {
                "timeframe": timeframe,
                "encoder": report["encoder"],
                "d": report["d"],
                "L": report["window_length"],
                "explained_var": None
                if report["explained_variance"] is None
                else round(report["explained_variance"], 3),
                "features": len(report["selected"]),
                "dropped": len(report["dropped"]),
                "train_windows": report["train_windows"],
                "val_encoded": report["validation_encoded"],
            }
        )
    import pandas as pd

    if rows:
        say(
            "state vectors fitted on each timeframe's first walk-forward training window "
            "(leakage guard passed for every stage):"
        )
        say(format_table(pd.DataFrame(rows)))
        for timeframe, report in results.items():
            dropped = ", ".join(f"{d['feature']} ({d['reason']})" for d in report["dropped"])
            say(f"  {timeframe} selected: {', '.join(report['selected'])}")
            if dropped:
                say(f"  {timeframe} dropped:  {dropped}")
            if "latent_dim_plot" in report:
                say(f"  {timeframe} latent-dimension curve: {report['latent_dim_plot']}")
    for timeframe, reason in failures.items():
        say(f"  {timeframe}: not fitted: {reason}")
    payload = {
        "command": "encode",
        "encoder": args.encoder,
        "timeframes": results,
        "not_fitted": failures,
    }
    if not results:
        raise BadInputError(
            "encode: no timeframe could be fitted: "
            + "; ".join(f"{tf}: {r}" for tf, r in failures.items())
        )
    return payload


def _parse_grid(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        grid = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInputError(
            f"--grid: not valid JSON ({exc.msg}); e.g. '{{\"K\": [4, 6]}}'"
        ) from None
    if not isinstance(grid, dict):
        raise BadInputError('--grid: expected a JSON object such as {"K": [4, 6], "d": [6]}')
    return grid


def cmd_train(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.storage.registry import Registry
    from regimes.training.grid import expand_grid

    grid = _parse_grid(args.grid)
    timeframes = args.timeframe or list(TIMEFRAMES)
    for timeframe in timeframes:
        expand_grid(ctx.config, timeframe, grid)  # refuse a bad grid before anything runs
    started = time.perf_counter()
    common = dict(
        home=str(ctx.settings.home),
        db_url=ctx.settings.db_url,
        config_dir=str(ctx.settings.config_dir),
        symbols=args.symbols,
        grid=grid,
        seed=args.seed,
        executor=args.executor,
    )
    from regimes.training.units import scope_units

    units = scope_units(ctx.engine, timeframes, args.symbols, args.scope)
    if args.orchestrator == "prefect":
        server = engine_layer("regimes.flows.server").ensure_prefect_server(ctx.settings.home)
        say(f"train: Prefect flow 'train' on {server.api_url}, grid on {args.executor}")
        try:
            results = engine_layer("regimes.flows.train").train(
                timeframes=timeframes, scope=args.scope, **common
            )
        finally:
            server.stop()
    else:
        results = [
            _train_direct(ctx, tf, **{**common, "symbols": unit_symbols})
            for tf, unit_symbols in units
        ]
    elapsed = time.perf_counter() - started
    import pandas as pd

    table = pd.DataFrame(results)
    say(f"train: {len(results)} model(s) in {elapsed:.1f}s")
    columns = [
        "timeframe",
        "model_id",
        "K",
        "d",
        "covariance",
        "val_loglik_per_bar",
        "val_bic",
        "status",
    ]
    say(format_table(table[[c for c in columns if c in table.columns]]))
    for row in results:
        say(f"  {row['timeframe']}: {row['path']}")
    registry = Registry.at_home(ctx.settings.home)
    return {
        "command": "train",
        "models": results,
        "registry": registry.root,
        "seconds": round(elapsed, 3),
    }


def _train_direct(ctx, timeframe, *, home, db_url, config_dir, symbols, grid, seed, executor):
    from regimes.training.units import train_and_register

    runner = engine_layer("regimes.jobs.training").ray_runner() if executor == "ray" else None
    return train_and_register(
        ctx.engine,
        ctx.config,
        ctx.settings.home,
        ctx.settings.models_dir,
        timeframe,
        symbols=symbols,
        grid=grid,
        seed=seed,
        runner=runner,
        actor="cli:train",
    )


def cmd_models(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.storage.registry import Registry

    registry = Registry.at_home(ctx.settings.home)
    current = registry.current(args.timeframe)
    if current.empty:
        say(f"models: the registry at {registry.root} is empty; run `regimes train`")
    else:
        say(format_table(current[["timeframe", "model_id", "status", "since", "reason"]]))
    rows = json.loads(current.to_json(orient="records", date_format="iso")) if len(current) else []
    return {"command": "models", "registry": registry.root, "models": rows}


def cmd_replay(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from regimes.data import sql as db
    from regimes.live.engine import open_engine
    from regimes.storage.registry import Registry

    timeframe = args.timeframe
    registry = Registry.at_home(ctx.settings.home)
    engine = open_engine(
        ctx.config, ctx.settings.models_dir, registry, timeframe, model_id=args.model_id
    )
    model_id = engine.model_id
    # From the first stored bar: the engine warms up exactly as a live one would have.
    bars = db.read_bars(ctx.engine, timeframe, args.symbols, None, args.end)
    if bars.empty:
        raise BadInputError(f"replay: no {timeframe} bars stored for the request")
    start = _aware(args.start, "--start")
    steps = [group for _, group in bars.groupby("ts", sort=True)]
    answers = []
    for group in progress(steps, f"replay {timeframe}"):
        out = engine.step(group)
        if start is None or group["ts"].iloc[0] >= start:
            answers.append(out)
    if not answers:
        raise BadInputError("replay: no bars at or after --start")
    frame = pd.concat(answers, ignore_index=True)
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    frame.to_parquet(partial, index=False)
    partial.replace(out_path)
    unknown = frame["ood_reason"].value_counts().to_dict()
    say(
        f"replay: {len(frame)} answers for {frame['symbol'].nunique()} symbol(s) from model "
        f"{model_id} -> {out_path}"
    )
    say(f"  known states: {int((~frame['is_unknown']).sum())}; UNKNOWN by reason: {unknown}")
    return {
        "command": "replay",
        "model_id": model_id,
        "rows": len(frame),
        "out": str(out_path),
        "unknown": {str(k): int(v) for k, v in unknown.items()},
    }


def cmd_backfill(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.storage.backfill import plan_backfill, run_backfill
    from regimes.storage.registry import Registry
    from regimes.storage.state_store import StateStore

    started = time.perf_counter()
    for name in ("rows_per_commit", "symbols_per_unit"):
        if getattr(args, name) < 1:
            flag = "--" + name.replace("_", "-")
            raise BadInputError(f"{flag}: expected >= 1, got {getattr(args, name)}")
    registry = Registry.at_home(ctx.settings.home)
    store = StateStore.from_env(ctx.settings.home)
    units = plan_backfill(
        ctx.engine,
        registry,
        ctx.settings.models_dir,
        args.timeframe,
        args.model_id,
        args.symbols,
        args.symbols_per_unit,
    )
    if args.orchestrator == "prefect":
        from regimes.storage.backfill import BackfillResult

        server = engine_layer("regimes.flows.server").ensure_prefect_server(ctx.settings.home)
        say(
            f"backfill: Prefect flow 'backfill' on {server.api_url}, {len(units)} unit(s) on "
            f"{args.executor}"
        )
        try:
            rows = engine_layer("regimes.flows.backfill").backfill(
                timeframe=args.timeframe,
                model_id=args.model_id,
                home=str(ctx.settings.home),
                db_url=ctx.settings.db_url,
                config_dir=str(ctx.settings.config_dir),
                symbols=args.symbols,
                symbols_per_unit=args.symbols_per_unit,
                rows_per_commit=args.rows_per_commit,
                executor=args.executor,
            )
        finally:
            server.stop()
        results = [BackfillResult.from_dict(row) for row in rows]
    elif args.executor == "ray":
        from tqdm.auto import tqdm

        jobs = engine_layer("regimes.jobs.backfill")
        where = engine_layer("regimes.jobs.runtime").ensure_ray()
        say(f"backfill: {len(units)} unit(s) of {args.model_id} as Ray tasks on {where}")
        with tqdm(total=len(units), desc="backfill", file=sys.stderr, disable=_no_bar()) as bar:
            results = jobs.run_backfill_on_ray(
                ctx.settings.db_url,
                ctx.config,
                store,
                registry,
                units,
                args.rows_per_commit,
                progress=bar.update,
            )
    else:
        say(f"backfill: {len(units)} unit(s) of {args.model_id} in this process")
        results = run_backfill(
            ctx.engine,
            ctx.config,
            store,
            registry,
            units,
            args.rows_per_commit,
            progress=_progress_for("backfill"),
        )
    elapsed = time.perf_counter() - started
    failed = [r for r in results if r.error]
    written = sum(r.rows_written for r in results)
    kept = sum(r.rows_already_stored for r in results)
    say(
        f"backfill: {written} state rows written to {store.root} in "
        f"{sum(r.commits for r in results)} commit(s), {kept} already stored, {elapsed:.1f}s"
    )
    for result in failed:
        say(f"  FAILED {', '.join(result.symbols)}: {result.error}")
    payload = {
        "command": "backfill",
        "timeframe": args.timeframe,
        "model_id": args.model_id,
        "store": store.root,
        "units": len(results),
        "rows_written": written,
        "rows_already_stored": kept,
        "failed": [{"symbols": list(r.symbols), "error": r.error} for r in failed],
        "seconds": round(elapsed, 3),
    }
    if failed:
        payload["_exit"] = EXIT_PARTIAL
    return payload


def cmd_states(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    import pandas as pd

    from regimes.storage.state_store import StateStore

    store = StateStore.from_env(ctx.settings.home)
    if not store.exists():
        raise BadInputError(f"states: no state table at {store.root}; run `regimes backfill`")
    if args.compact:
        metrics = store.compact(args.timeframe, args.model_id)
        deleted = store.vacuum(args.vacuum_hours) if args.vacuum_hours is not None else []
        say(
            f"states: compacted {store.root}: {metrics.get('numFilesRemoved', 0)} files into "
            f"{metrics.get('numFilesAdded', 0)}; vacuum removed {len(deleted)} file(s)"
        )
        return {
            "command": "states",
            "store": store.root,
            "compacted": {k: v for k, v in metrics.items() if isinstance(v, int | float)},
            "vacuumed": len(deleted),
        }
    if not (args.timeframe and args.model_id and args.out):
        raise BadInputError("states: --timeframe, --model-id and --out are required to export")
    start, end = (_aware(args.start, "--start"), _aware(args.end, "--end"))
    frame = store.read(args.timeframe, args.model_id, args.symbols, start, end)
    frame = frame.drop(columns=["date"], errors="ignore")
    out_path = Path(args.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    if args.format == "parquet":
        frame.to_parquet(partial, index=False)
    elif args.format == "csv":
        frame.to_csv(partial, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        frame.to_json(partial, orient="records", lines=True, date_format="iso")
    partial.replace(out_path)
    symbols = frame["symbol"].nunique() if len(frame) else 0
    say(
        f"states: {len(frame)} rows of {args.model_id} ({args.timeframe}), {symbols} symbol(s) "
        f"-> {out_path} ({args.format})"
    )
    first = frame["ts"].min() if len(frame) else None
    last = frame["ts"].max() if len(frame) else None
    return {
        "command": "states",
        "rows": len(frame),
        "symbols": int(symbols),
        "first_ts": None if first is None or pd.isna(first) else first.isoformat(),
        "last_ts": None if last is None or pd.isna(last) else last.isoformat(),
        "out": str(out_path),
        "format": args.format,
    }


def _aware(value: str | None, what: str):
    import pandas as pd

    if value is None:
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        raise BadInputError(f"{what}: expected an ISO timestamp, got {value!r}") from None
    if stamp.tzinfo is None:
        raise BadInputError(f"{what}: expected a timezone-aware timestamp, got {value!r}")
    return stamp


def cmd_demo(ctx: Context, args: argparse.Namespace) -> dict[str, Any]:
    from regimes.app.demo import run_demo

    return run_demo(ctx, args, say=say, progress=_progress_for)


COMMANDS: dict[str, Callable[[Context, argparse.Namespace], dict[str, Any]]] = {
    "synth": cmd_synth,
    "ingest": cmd_ingest,
    "resample": cmd_resample,
    "features": cmd_features,
    "encode": cmd_encode,
    "train": cmd_train,
    "models": cmd_models,
    "replay": cmd_replay,
    "backfill": cmd_backfill,
    "states": cmd_states,
    "demo": cmd_demo,
}


# --------------------------------------------------------------------------- parser


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def _timeframe(text: str) -> str:
    if text not in TIMEFRAMES:
        raise argparse.ArgumentTypeError(
            f"unknown timeframe {text!r}; expected one of {', '.join(TIMEFRAMES)}"
        )
    return text


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump: the user asked for --help
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="regimes",
        description=(
            "Multi-timeframe market regimes: latent state vectors z_t and a Gaussian HMM per "
            "timeframe. Human summaries go to stderr; where a command produces something, "
            "the last line of stdout is one JSON object."
        ),
        epilog=(
            "Precedence of settings: CLI option > environment variable > config file > "
            "default. Environment: REGIMES_HOME, REGIMES_DB_URL, REGIMES_CONFIG_DIR."
        ),
    )
    parser.add_argument("--version", action="version", version=f"regimes {__version__}")
    parser.add_argument(
        "--home",
        help="where outputs go (database, models/, states/, synth/); "
        "env REGIMES_HOME; default: the current directory",
    )
    parser.add_argument(
        "--db-url",
        help="SQLAlchemy database URL; env REGIMES_DB_URL; default sqlite:///<home>/regimes.db",
    )
    parser.add_argument(
        "--config-dir",
        help="directory with features.yaml and timeframes.yaml; env REGIMES_CONFIG_DIR; "
        "default <home>/config if present, else the project's config/",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    synth = sub.add_parser(
        "synth",
        help="generate a synthetic 1m market with known regimes",
        description="Generate multi-symbol 1-minute OHLCV with known slow and fast regimes; "
        "write the bars to the database and the truth to <home>/synth/.",
    )
    synth.add_argument("--symbols", type=int, default=20, help="number of symbols (default 20)")
    synth.add_argument("--days", type=int, default=60, help="trading days (default 60)")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--start",
        type=_date,
        default=date(2024, 1, 2),
        help="first calendar day, YYYY-MM-DD (default 2024-01-02)",
    )
    synth.add_argument(
        "--missing-rate",
        type=float,
        default=0.002,
        help="fraction of 1m bars dropped as missing (default 0.002)",
    )

    ingest = sub.add_parser(
        "ingest",
        help="load OHLCV bars from a CSV or Parquet file",
        description="Load bars (columns ts, open, high, low, close, volume) for one symbol and "
        "timeframe. Any bad row refuses the whole file unless --drop-bad is given.",
    )
    ingest.add_argument("file", help="a .csv or .parquet file")
    ingest.add_argument("--symbol", required=True, help="symbol name, e.g. SPX")
    ingest.add_argument(
        "--timeframe", required=True, help=f"timeframe of the bars: {', '.join(TIMEFRAMES)}"
    )
    ingest.add_argument(
        "--drop-bad",
        action="store_true",
        help="write the good rows and report the bad ones instead of refusing",
    )
    ingest.add_argument(
        "--tz", default="UTC", help="time zone of timestamps without an offset (default UTC)"
    )
    ingest.add_argument(
        "--ts-format",
        help="strftime format of the ts column, e.g. '%%d/%%m/%%Y %%H:%%M' (default: ISO 8601, "
        "or one format inferred from the first row and applied to all)",
    )

    resample = sub.add_parser(
        "resample",
        help="align 1m bars to the session, mark gaps, build higher timeframes",
        description="Align stored 1m bars to the session grid (missing minutes become gap "
        "rows) and resample them into higher timeframes anchored at the session open.",
    )
    resample.add_argument("--symbols", nargs="+", help="symbols (default: all with 1m bars)")
    resample.add_argument(
        "--timeframes",
        nargs="+",
        type=_timeframe,
        default=list(TIMEFRAMES[1:]),
        help="target timeframes (default: 5m 15m 1h 1d)",
    )

    features = sub.add_parser(
        "features",
        help="compute the 21 features from stored bars into computed_features",
        description="Compute each timeframe's selected features for every stored (symbol, "
        "timeframe) and replace their rows in computed_features (idempotent). Units run as "
        "Ray tasks (local Ray, or the cluster at RAY_ADDRESS) or in this process. A failed "
        f"unit is reported by name, the others are kept, and the exit code is {EXIT_PARTIAL}.",
    )
    features.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    features.add_argument("--symbols", nargs="+", help="symbols (default: all with bars)")
    features.add_argument(
        "--executor", choices=("ray", "local"), default="ray", help="where units run (default ray)"
    )

    encode = sub.add_parser(
        "encode",
        help="fit selection + scaling + encoder per timeframe and report the state vectors",
        description="Per timeframe: load stored features, take the first walk-forward fold, "
        "fit feature selection, stationarity, robust+Yeo-Johnson scaling and the encoder on "
        "its training window only (leakage guard checked), choose d from the explained-"
        "variance curve, and report d, explained variance and the selected features. "
        "Curves go to <home>/reports/state_vectors/.",
    )
    encode.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    encode.add_argument(
        "--encoder", choices=("pca", "window", "vae"), default="pca", help="encoder (default pca)"
    )

    train = sub.add_parser(
        "train",
        help="train each timeframe's regime model: walk-forward grid, winner, artifact",
        description="Per timeframe: a grid of encoder x d x K x covariance over walk-forward "
        "folds (cells fan out on Ray), the winner by the documented selection rule refitted "
        "and packaged into models/timeframe=TF/model_id=ID/ and registered as a candidate. "
        "Runs as the Prefect flow 'train' (a local Prefect server is started when "
        "PREFECT_API_URL is unset).",
    )
    train.add_argument(
        "--timeframe",
        "--timeframes",
        nargs="+",
        type=_timeframe,
        help="timeframes (default: all five)",
    )
    train.add_argument("--symbols", nargs="+", help="the universe (default: all with features)")
    train.add_argument(
        "--grid",
        help='JSON, e.g. \'{"K": [4, 6], "d": [6, 8], '
        '"covariance": ["diag"], "encoder": ["pca"]}\' (default: pca, the lowest '
        "d, K at the bottom, middle and top of the range)",
    )
    train.add_argument("--seed", type=int, default=0, help="the one seed of the run (default 0)")
    train.add_argument(
        "--scope",
        choices=("pooled", "symbol"),
        default="pooled",
        help="one model per timeframe over all symbols (default) or one per (timeframe, symbol)",
    )
    train.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="where grid cells run (default ray)",
    )
    train.add_argument(
        "--orchestrator",
        choices=("prefect", "direct"),
        default="prefect",
        help="run through the Prefect flow (default) or directly",
    )

    models = sub.add_parser("models", help="list the model registry (lifecycle per timeframe)")
    models.add_argument("--timeframe", type=_timeframe, help="one timeframe only")

    replay = sub.add_parser(
        "replay",
        help="push stored bars through the live engine bar by bar; write its answers",
        description="Replays stored bars through the inference engine of a model (the "
        "production model by default) exactly as a live feed would, from the first stored "
        "bar so warm-up is real, and writes the answers from --start on to Parquet.",
    )
    replay.add_argument("--timeframe", required=True, type=_timeframe)
    replay.add_argument("--model-id", help="default: the timeframe's production model")
    replay.add_argument("--symbols", nargs="+")
    replay.add_argument("--start", help="first bar to write (UTC, e.g. 2024-03-01T00:00Z)")
    replay.add_argument("--end", help="bars before this time only")
    replay.add_argument("--out", required=True, help="the Parquet file to write")

    backfill = sub.add_parser(
        "backfill",
        help="a registered model's states over the stored history, into the Delta store",
        description="Computes the states of --model-id for every stored bar of its "
        "timeframe (the engine's offline path, equal to a live replay), units of symbols "
        "fanned out on Ray, merged into the Delta state table (<home>/states or "
        "REGIMES_STATES_URI) with the newest state per symbol mirrored to current_states. "
        "Resumable: running it again writes only what is missing.",
    )
    backfill.add_argument("--timeframe", required=True, type=_timeframe)
    backfill.add_argument("--model-id", required=True)
    backfill.add_argument("--symbols", nargs="+", help="default: every symbol with bars")
    backfill.add_argument(
        "--symbols-per-unit", type=int, default=1, help="symbols per Ray task (default 1)"
    )
    backfill.add_argument(
        "--rows-per-commit",
        type=int,
        default=50_000,
        help="most rows per Delta commit, whole UTC days (default 50000)",
    )
    backfill.add_argument(
        "--executor", choices=("ray", "local"), default="ray", help="where units run"
    )
    backfill.add_argument(
        "--orchestrator",
        choices=("prefect", "direct"),
        default="prefect",
        help="run through the Prefect flow 'backfill' (default; PREFECT_API_URL or a "
        "local server under <home>/prefect) or call the units directly",
    )

    states = sub.add_parser(
        "states",
        help="export state history from the Delta store (or --compact it)",
        description="Reads the states of one model (partition pruning on timeframe, "
        "model_id, symbol and date) and writes them with the state-store columns as "
        "csv, parquet or json lines. With --compact, rewrites small files "
        "(optionally of one --timeframe / --model-id) and, with --vacuum-hours, deletes "
        "files older versions no longer need.",
    )
    states.add_argument("--timeframe", type=_timeframe)
    states.add_argument("--model-id")
    states.add_argument("--symbols", nargs="+")
    states.add_argument("--start", help="first ts (inclusive, timezone-aware)")
    states.add_argument("--end", help="last ts (exclusive, timezone-aware)")
    states.add_argument("--format", choices=("csv", "parquet", "json"), default="parquet")
    states.add_argument("--out", help="the file to write")
    states.add_argument("--compact", action="store_true", help="compact instead of export")
    states.add_argument(
        "--vacuum-hours", type=int, help="with --compact: vacuum files older than this"
    )

    demo = sub.add_parser(
        "demo",
        help="run everything that exists end to end on the home directory",
        description="synth -> resample -> features -> state vectors -> training (Prefect "
        "flow, Ray grid; 1d on S&P 500) -> the last day through the live engine of every "
        "timeframe -> backfill of every model into the Delta state store; prints tables "
        "read back from the database and Delta and where every output went.",
    )
    demo.add_argument("--symbols", type=int, default=6, help="synthetic symbols (default 6)")
    demo.add_argument("--days", type=int, default=100, help="trading days (default 100)")
    demo.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    demo.add_argument(
        "--executor",
        choices=("ray", "local"),
        default="ray",
        help="where fan-out work runs (default ray)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return _run(args)
    finally:
        # Arrow / Delta objects freed now, while their native thread pools are alive:
        # freed during interpreter teardown they can abort the process
        # ("terminate called without an active exception", apache/arrow#34314).
        gc.collect()


def _run(args: argparse.Namespace) -> int:
    command = COMMANDS[args.command]
    try:
        settings = resolve_settings(args.home, args.db_url, args.config_dir)
        result = command(Context(settings), args)
    except (BadInputError, ConfigError) as exc:
        say(f"regimes {args.command}: error: {_one_line(exc)}")
        return EXIT_USER_ERROR
    except RegimesError as exc:
        say(f"regimes {args.command}: error: {_one_line(exc)}")
        return EXIT_STORE_ERROR
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) else ""
        say(f"regimes {args.command}: error: {exc.strerror or exc}{where}")
        return EXIT_STORE_ERROR
    except KeyboardInterrupt:
        say(f"regimes {args.command}: interrupted")
        return 130
    code = result.pop("_exit", 0) if result is not None else 0
    if result is not None:
        print(json.dumps(result, default=str), flush=True)
    return code


def _one_line(exc: BaseException) -> str:
    return " | ".join(line.strip() for line in str(exc).splitlines() if line.strip())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
