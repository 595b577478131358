"""The ``report`` use case: a model's validation report (plan 8.7) from its stored
states, written whole (HTML + JSON) under ``reports/validation/<tf>/<model_id>/``.

``report`` reads the Delta state store; ``report_trained`` (what ``train`` calls for
every model it trains) computes the same filtered states in memory with the engine's
offline path, since a model just trained has none stored yet.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from regimes.app.inputs import aware_timestamp
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError

if TYPE_CHECKING:
    import pandas as pd

    from regimes.model.loaded import LoadedModel
    from regimes.validation.verdicts import ValidationVerdicts

HTML_FILE = "report.html"
JSON_FILE = "report.json"
REPORT_MODE = 0o644


@dataclass(frozen=True)
class ReportRequest:
    timeframe: str
    model_id: str
    symbols: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None


@dataclass(frozen=True)
class ReportResult:
    """Where the report went, its headline and its verdicts (typed, for the gates)."""

    timeframe: str
    model_id: str
    html: Path
    json: Path
    html_bytes: int
    headline: dict[str, Any]
    verdicts: ValidationVerdicts
    states_from: str
    seconds: float

    def summary(self) -> list[str]:
        headline = self.headline
        order = ", ".join(
            f"{s['state']} ({s['volatility']:.3f})" for s in headline["states_by_volatility"]
        )
        dwell = ", ".join(
            f"{d['state']}: {d['mean_dwell']} vs {d['implied_dwell']}"
            for d in headline["dwell_vs_implied"]
        )
        verdicts = ", ".join(
            f"{c.name} {'n/a' if c.passed is None else 'pass' if c.passed else 'FAIL'}"
            for c in self.verdicts.checks
        )
        sharpe = ", ".join(f"{k} {v}" for k, v in headline["sharpe"].items())
        return [
            f"report: {self.model_id} ({self.timeframe}), states from {self.states_from}, "
            f"{self.seconds:.1f}s",
            f"  html: {self.html} ({self.html_bytes / 1024:.0f} KiB)",
            f"  json: {self.json}",
            f"  verdicts: {'PASS' if self.verdicts.passed else 'not passed'} ({verdicts})",
            f"  states by volatility (annualised): {order or 'too little data'}; "
            f"highest / lowest {headline['volatility_ratio_high_low']}",
            f"  mean dwell vs implied (states with >= 10% of bars): {dwell}",
            f"  Sharpe (walk-forward, after costs): {sharpe or 'too little data'}",
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "report",
            "timeframe": self.timeframe,
            "model_id": self.model_id,
            "html": str(self.html),
            "json": str(self.json),
            "html_bytes": self.html_bytes,
            "states_from": self.states_from,
            "headline": self.headline,
            "verdicts": self.verdicts.as_dict(),
            "seconds": round(self.seconds, 3),
        }


def report(workspace: Workspace, request: ReportRequest) -> ReportResult:
    """Write the validation report of ``request.model_id`` from its stored states.

    Raises
    ------
    BadInputError
        An unknown model, no state table or no stored states in the window (the
        message says to run ``regimes backfill``), a symbol without stored states.
    """
    from regimes.validation.build import STATE_COLUMNS

    started = time.perf_counter()
    model = _load_model(workspace, request.timeframe, request.model_id)
    start = aware_timestamp(request.start, "--start")
    end = aware_timestamp(request.end, "--end")
    store = workspace.state_store
    backfill = f"`regimes backfill --timeframe {request.timeframe} --model-id {request.model_id}`"
    if not store.exists():
        raise BadInputError(f"report: no state table at {store.root}; run {backfill}")
    symbols = list(dict.fromkeys(request.symbols)) if request.symbols else None
    if symbols:
        _check_bars(workspace, request.timeframe, symbols)
    states = store.read(request.timeframe, request.model_id, symbols, start, end, STATE_COLUMNS)
    if symbols:
        _check_symbols(workspace, request.timeframe, symbols, set(states["symbol"]), backfill)
    if states.empty:
        raise BadInputError(
            f"report: no stored states of {request.model_id} ({request.timeframe}) in the "
            f"window{_window_text(start, end)}; run {backfill}"
        )
    return _write(workspace, model, states, start, end, "the state store", started)


def report_trained(workspace: Workspace, timeframe: str, model_id: str) -> ReportResult:
    """Write the report of a model just trained: its filtered states over the stored
    bars of its universe, computed in memory (the backfill's path, nothing stored)."""
    from regimes.data import sql as db
    from regimes.live.engine import InferenceEngine

    started = time.perf_counter()
    model = _load_model(workspace, timeframe, model_id)
    symbols = sorted(model.metadata["universe"])
    bars = db.read_bars(workspace.engine, timeframe, symbols)
    states = InferenceEngine(model).replay_batch(bars)
    return _write(workspace, model, states, None, None, "a replay (not stored)", started)


def _window_text(start, end) -> str:
    if start is None and end is None:
        return ""
    return f" [{start.isoformat() if start is not None else '...'}, " + (
        f"{end.isoformat()})" if end is not None else "...)"
    )


def _check_bars(workspace: Workspace, timeframe: str, symbols: list[str]) -> None:
    """Refuse symbols without bars before reading any state (they cannot have any)."""
    from regimes.data import sql as db

    with_bars = set(db.list_symbols(workspace.engine, timeframe))
    never = [s for s in symbols if s not in with_bars]
    if never:
        raise BadInputError(f"report: no {timeframe} bars and no states for symbol(s) {never}")


def _check_symbols(
    workspace: Workspace, timeframe: str, symbols: list[str], stored: set, backfill: str
) -> None:
    missing = [s for s in symbols if s not in stored]
    if missing:
        raise BadInputError(f"report: no stored states for symbol(s) {missing}; run {backfill}")


def _load_model(workspace: Workspace, timeframe: str, model_id: str) -> LoadedModel:
    from regimes.model.loaded import LoadedModel
    from regimes.paths import check_model_id, check_timeframe_name

    timeframe, model_id = check_timeframe_name(timeframe), check_model_id(model_id)
    registry = workspace.registry
    if registry.role(timeframe, model_id) is None:
        raise BadInputError(
            f"report: model {model_id} ({timeframe}) is not in the registry at "
            f"{registry.root}; see `regimes models`"
        )
    try:
        path = workspace.model_path(timeframe, model_id)
    except BadInputError as exc:
        raise BadInputError(f"report: {exc}") from None
    return LoadedModel.load(path)


def periods_per_year(model: LoadedModel) -> float:
    """Bars per year of the model's timeframe: 252 sessions a year, each of the
    session's length (24 h without a session)."""
    from regimes.timeframes import TIMEFRAME_DURATION

    shapes = _year_shapes(model)
    if shapes is not None:  # market calendars: their own days and hours (mean over symbols)
        days = sum(d for d, _ in shapes) / len(shapes)
        minutes = sum(m for _, m in shapes) / len(shapes)
        if model.timeframe == "1d":
            return days
        return days * minutes / (TIMEFRAME_DURATION[model.timeframe].total_seconds() / 60)
    if model.timeframe == "1d":
        return 252.0
    minutes = model.session.minutes if model.session is not None else 24 * 60
    days = 252 if model.session is not None else 365
    return days * minutes / (TIMEFRAME_DURATION[model.timeframe].total_seconds() / 60)


def _year_shapes(model: LoadedModel) -> list[tuple[int, float]] | None:
    """(days, minutes per day) of each calendar of a model on market calendars, over the
    year its training window ends in; None for a model on the timeframes.yaml session."""
    import pandas as pd

    from regimes.config.timeframes import Session
    from regimes.data.calendars import MarketCalendar
    from regimes.data.markets import SymbolCalendars

    session = model.session
    if not isinstance(session, MarketCalendar | SymbolCalendars):
        return None
    calendars = (
        list(session.calendars.values()) if isinstance(session, SymbolCalendars) else [session]
    )
    year = pd.Timestamp(model.metadata["training_window"]["end"]).year
    shapes = []
    for calendar in calendars:
        if isinstance(calendar, MarketCalendar):
            shapes.append(calendar.year_shape(year))
        elif isinstance(calendar, Session):
            shapes.append((252, float(calendar.minutes)))
        else:
            shapes.append((365, 24.0 * 60))
    return shapes


def _write(
    workspace: Workspace,
    model: LoadedModel,
    states: pd.DataFrame,
    start,
    end,
    states_from: str,
    started: float,
) -> ReportResult:
    from regimes.data import sql as db
    from regimes.validation.build import STATE_COLUMNS, ModelFacts, build_report
    from regimes.validation.html import render_html

    window = model.metadata.get("training_window") or {}
    facts = ModelFacts(
        model.model_id,
        model.timeframe,
        model.hmm.params_.transmat,
        dict(model.labels),
        window.get("start"),
        window.get("end"),
    )
    states = states[list(STATE_COLUMNS)]
    symbols = sorted(states["symbol"].unique())
    bars = db.read_bars(workspace.engine, model.timeframe, symbols, start, end)
    built = build_report(states, bars, facts, workspace.config.validation, periods_per_year(model))
    data = built.as_dict()
    html = render_html(data)
    folder = workspace.reports_dir / "validation" / model.timeframe / model.model_id
    html_path, json_path = folder / HTML_FILE, folder / JSON_FILE
    write_whole(folder, {JSON_FILE: json.dumps(data, allow_nan=False, indent=1), HTML_FILE: html})
    return ReportResult(
        timeframe=model.timeframe,
        model_id=model.model_id,
        html=html_path,
        json=json_path,
        html_bytes=html_path.stat().st_size,
        headline=built.headline,
        verdicts=built.verdicts,
        states_from=states_from,
        seconds=time.perf_counter() - started,
    )


def write_whole(folder: Path, files: dict[str, str]) -> None:
    """Write every file to a temporary name first, then rename them into place: a
    failure while writing leaves the previous report (or none), never half of one."""
    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, Path]] = []
    try:
        for name, text in files.items():
            handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{name}.", suffix=".partial")
            written.append((name, Path(temporary)))
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                out.write(text)
            # mkstemp makes 0600; a report is for people (and a web server) to read.
            os.chmod(temporary, REPORT_MODE)
    except BaseException:
        for _, temporary in written:
            temporary.unlink(missing_ok=True)
        raise
    for name, temporary in written:
        temporary.replace(folder / name)
