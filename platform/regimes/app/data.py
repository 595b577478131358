"""Use cases that put bars into the database: ``synth``, ``ingest``, ``resample``."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

from regimes.app.progress import Progress, items_progress, no_progress
from regimes.app.workspace import Workspace
from regimes.paths import check_symbol
from regimes.timeframes import TIMEFRAMES


@dataclass(frozen=True)
class SynthRequest:
    """A synthetic market: ``symbols`` x ``days`` trading days of 1m bars."""

    symbols: int = 20
    days: int = 60
    seed: int | None = 0
    start: date = date(2024, 1, 2)
    missing_rate: float = 0.002
    market: str | None = None
    """A market of ``markets.yaml`` (default: the default market, as before markets)."""
    prefix: str = "SYN"
    """Symbol names are the prefix and a number (``SYN000``)."""
    variant: str | None = None
    """A named market of :mod:`regimes.data.synth_variants` (its regimes; its own seed
    when ``seed`` is None); default: the default market."""


@dataclass(frozen=True)
class SynthResult:
    symbols: list[str]
    days: int
    seed: int
    bars_written: int
    missing_bars: int
    bars_sha256: str
    truth: Path
    params: Path
    database: str
    seconds: float

    def summary(self) -> list[str]:
        return [
            f"synth: {len(self.symbols)} symbols x {self.days} trading days, seed {self.seed}: "
            f"{self.bars_written} one-minute bars ({self.missing_bars} dropped as missing) in "
            f"{self.seconds:.1f}s",
            f"  bars  -> {self.database} (table bars, timeframe 1m; earlier bars of these",
            "           symbols were replaced: run `regimes resample` for 5m..1d)",
            f"  truth -> {self.truth}",
            f"  params-> {self.params}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "synth",
            "symbols": self.symbols,
            "days": self.days,
            "seed": self.seed,
            "bars_written": self.bars_written,
            "missing_bars": self.missing_bars,
            "bars_sha256": self.bars_sha256,
            "truth": str(self.truth),
            "params": str(self.params),
            "seconds": round(self.seconds, 3),
        }


def synth(
    workspace: Workspace, request: SynthRequest, progress: Progress = no_progress
) -> SynthResult:
    """Generate a synthetic market, write its truth to the synth folder and its 1m bars
    to the database (replacing every earlier bar of those symbols)."""
    from regimes.data import sql as db
    from regimes.data.synth import SynthConfig, generate, write_truth
    from regimes.data.synth_variants import variant

    settings = {
        "symbols": request.symbols,
        "days": request.days,
        "start": request.start,
        "missing_rate": request.missing_rate,
        "symbol_prefix": check_symbol(request.prefix),
    }
    if request.seed is not None:
        settings["seed"] = request.seed
    if request.variant is None:
        synth_config = SynthConfig(**settings).validate()
    else:
        synth_config = replace(variant(request.variant).config, **settings).validate()
    started = time.perf_counter()
    book = workspace.markets()
    if request.market is None:
        calendar, truth_dir = workspace.config.timeframes.session, workspace.synth_dir
    else:
        calendar = book.calendar(book.config.check_market(request.market))
        truth_dir = workspace.synth_dir / request.market
    market = generate(synth_config, calendar)
    engine = workspace.engine
    # The truth first: a file-system problem then stops us before the database changes.
    truth_path, params_path = write_truth(market, truth_dir)
    frames = [group for _, group in market.bars.groupby("symbol", sort=True)]
    written = 0
    for frame in items_progress(progress, "writing 1m bars")(frames):
        # A synthetic symbol is owned by synth: its earlier bars (any seed, any
        # timeframe) are replaced in the same transaction, so nothing stale survives.
        symbol = frame["symbol"].iloc[0]
        written += db.rewrite_bars(engine, frame, [symbol], timeframes=TIMEFRAMES)
    if request.market is not None:
        symbols = market.bars["symbol"].unique().tolist()
        db.assign_markets(engine, {s: book.check_assignment(s, request.market) for s in symbols})
    return SynthResult(
        symbols=sorted(market.bars["symbol"].unique().tolist()),
        days=synth_config.days,
        seed=synth_config.seed,
        bars_written=written,
        missing_bars=int(market.truth["missing"].sum()),
        bars_sha256=market.bars_sha256(),
        truth=truth_path,
        params=params_path,
        database=db.describe(engine),
        seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True)
class IngestRequest:
    """One CSV or Parquet file of bars for one symbol and timeframe."""

    file: str | Path
    symbol: str
    timeframe: str
    drop_bad: bool = False
    tz: str = "UTC"
    ts_format: str | None = None
    market: str | None = None
    """The symbol's market (recorded); default: its mapped, recorded or default market."""


@dataclass(frozen=True)
class IngestResult:
    report: Any  # regimes.data.ingest.IngestReport

    def summary(self) -> list[str]:
        from regimes.data.ingest import describe_problems

        report = self.report
        lines = [
            f"ingest: {report.rows_written} of {report.rows_read} rows of {report.file} written "
            f"as {report.symbol} {report.timeframe} ({report.first_ts} .. {report.last_ts})"
        ]
        if report.reordered_rows:
            lines.append(f"  {report.reordered_rows} row(s) were out of time order and were sorted")
        if report.moved_to_session_open:
            lines.append(
                f"  {report.moved_to_session_open} daily row(s) stamped at midnight were placed "
                "at the session open (a bar's ts is its open time)"
            )
        if report.dropped:
            lines.append(
                f"  dropped {len(report.dropped)} bad row(s): {describe_problems(report.dropped)}"
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {"command": "ingest", **self.report.as_dict()}


def ingest(workspace: Workspace, request: IngestRequest) -> IngestResult:
    """Load one file of bars; a bad row refuses the file unless ``drop_bad``."""
    from regimes.data.ingest import ingest_file

    book = workspace.markets()
    if request.market is not None:
        market = book.check_assignment(check_symbol(request.symbol), request.market)
    else:
        market = book.market_of(check_symbol(request.symbol))
    report = ingest_file(
        workspace.engine,
        request.file,
        request.symbol,
        request.timeframe,
        session=book.calendar(market),
        drop_bad=request.drop_bad,
        tz=request.tz,
        ts_format=request.ts_format,
        market=request.market,
    )
    return IngestResult(report)


@dataclass(frozen=True)
class ResampleRequest:
    symbols: tuple[str, ...] | None = None
    timeframes: tuple[str, ...] = tuple(TIMEFRAMES[1:])


@dataclass(frozen=True)
class ResampleResult:
    symbols: int
    rows_written: dict[str, int]
    gap_rows_added: int
    outside_session: int
    seconds: float
    short_days: int = 0

    def summary(self) -> list[str]:
        lines = [
            f"resample: {self.symbols} symbols in {self.seconds:.1f}s; 1m gap rows marked: "
            f"{self.gap_rows_added}; 1m bars outside their market's hours (not aggregated): "
            f"{self.outside_session}"
        ]
        lines += [
            f"  {timeframe:>4}: {rows} bars written"
            for timeframe, rows in self.rows_written.items()
            if timeframe != "1m"
        ]
        if self.short_days:
            lines.append(
                f"  early closes (short days, not gaps) aligned: {self.short_days} symbol-days"
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "resample",
            "symbols": self.symbols,
            "rows_written": self.rows_written,
            "gap_rows_added": self.gap_rows_added,
            "outside_session": self.outside_session,
            **({"short_days": self.short_days} if self.short_days else {}),
            "seconds": round(self.seconds, 3),
        }


def resample(
    workspace: Workspace, request: ResampleRequest, progress: Progress = no_progress
) -> ResampleResult:
    """Align stored 1m bars to the session (gaps marked) and build higher timeframes."""
    from regimes.data.bars import resample_symbols

    started = time.perf_counter()
    timeframes = workspace.config.timeframes
    report = resample_symbols(
        workspace.engine,
        timeframes.session,
        timeframes.gaps.max_missing_fraction,
        symbols=list(request.symbols) if request.symbols else None,
        timeframes=list(request.timeframes),
        progress=items_progress(progress, "resampling"),
        markets=workspace.markets(),
    )
    return ResampleResult(
        symbols=report.symbols,
        rows_written=report.rows_written,
        gap_rows_added=report.gap_rows_added,
        outside_session=report.outside_session,
        seconds=time.perf_counter() - started,
        short_days=report.short_days,
    )
