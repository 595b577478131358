"""The ``drift`` use case (plan 9.2): a model's drift report between a reference window
(its training window by default) and a current window (the newest bars by default),
its gate verdicts, the HTML under ``reports/drift/`` and the summary in the
``drift_reports`` Delta table; and the shadow-agreement figures a champion promotion
is gated on.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd

from regimes.app.progress import Notify, silent
from regimes.app.workspace import Workspace
from regimes.config.gates import GateSettings, load_gates
from regimes.drift.gates import Check, drift_checks, shadow_checks
from regimes.drift.report import (
    Windows,
    binned,
    evidently_drift,
    occupancy,
    window_frames,
)
from regimes.errors import BadInputError


@dataclass(frozen=True)
class DriftRequest:
    timeframe: str
    model_id: str
    reference: tuple[str, str] | None = None  # (start, end), UTC
    current: tuple[str, str] | None = None


@dataclass(frozen=True)
class DriftRun:
    report: dict
    checks: list[Check]
    seconds: float

    @property
    def passed(self) -> bool:
        return self.report["passed"]

    @property
    def failed_checks(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    def summary(self) -> list[str]:
        s = self.report
        lines = [
            f"drift report {s['report_id']} of {s['model_id']} ({s['timeframe']}): "
            f"{'PASS' if s['passed'] else 'FAIL'}",
            f"   reference {s['windows']['reference_start']} .. {s['windows']['reference_end']} "
            f"({s['rows']['reference']} bars), current {s['windows']['current_start']} .. "
            f"{s['windows']['current_end']} ({s['rows']['current']} bars)",
        ]
        lines += ["   " + check.line() for check in self.checks]
        lines.append(f"   html: {s['html']}")
        return lines

    def as_dict(self) -> dict:
        return {
            k: v for k, v in self.report.items() if k not in ("features", "zs", "bin_edges")
        } | {"seconds": round(self.seconds, 1)}


def _utc(text: str, flag: str) -> pd.Timestamp:
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        raise BadInputError(f"{flag}: not a time: {text!r}") from None
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _model(workspace: Workspace, timeframe: str, model_id: str):
    from regimes.model.loaded import LoadedModel

    registry = workspace.registry
    role = registry.role(timeframe, model_id)
    if role is None:
        raise BadInputError(
            f"model {model_id} is not in the registry for {timeframe} (see `regimes models`)"
        )
    path = workspace.model_path(timeframe, model_id)
    return LoadedModel.load(path), role


def _windows(workspace, request: DriftRequest, model, gates: GateSettings) -> Windows:
    from regimes.data import sql as db

    if request.reference:
        reference = tuple(_utc(t, "--reference") for t in request.reference)
    else:
        window = model.metadata["training_window"]
        reference = (
            _utc(window["start"], "training window"),
            _utc(window["end"], "training window"),
        )
    if request.current:
        current = tuple(_utc(t, "--current") for t in request.current)
    else:
        times = db.distinct_bar_times(workspace.engine, request.timeframe)
        if len(times) == 0:
            raise BadInputError(f"no {request.timeframe} bars stored: nothing to compare")
        recent = times[-gates.current_bars :]
        step = pd.Timedelta(request.timeframe)
        current = (recent[0], recent[-1] + step)
    return Windows(*reference, *current).check()


def _answers(workspace, model, symbols, end):
    """The model's answers and inputs over every stored bar before ``end``."""
    from regimes.data import sql as db
    from regimes.live.engine import InferenceEngine
    from regimes.live.replay import replay_with_inputs

    bars = db.read_bars(workspace.engine, model.timeframe, symbols, end=end)
    bars = bars[bars["ts"] < end]
    return replay_with_inputs(InferenceEngine(model), bars)


def drift(workspace: Workspace, request: DriftRequest, say: Notify = silent) -> DriftRun:
    """Compute, judge, write and record one drift report."""
    return drift_with_answers(workspace, request, say)[0]


def drift_with_answers(
    workspace: Workspace, request: DriftRequest, say: Notify = silent
) -> tuple[DriftRun, pd.DataFrame, Windows]:
    """:func:`drift`, and the model's replayed answers over every stored bar before the
    current window's end with the windows it used (the monitor's triggers read them)."""
    from regimes.data import sql as db
    from regimes.storage.drift_reports import DriftReports

    started = time.perf_counter()
    model, role = _model(workspace, request.timeframe, request.model_id)
    gates = load_gates(workspace.config_dir).for_timeframe(request.timeframe)
    windows = _windows(workspace, request, model, gates)
    stored = set(db.list_symbols(workspace.engine, request.timeframe))
    universe = list(model.metadata["universe"])
    symbols = [s for s in universe if s in stored]
    if not symbols:
        raise BadInputError(
            f"none of the model's symbols {universe[:5]} has {request.timeframe} bars"
        )
    say(f"drift: replaying {len(symbols)} symbol(s) through {request.model_id}")
    answers, inputs = _answers(workspace, model, symbols, windows.current_end)
    reference, current = window_frames(answers, inputs, windows)
    created = datetime.now(UTC)
    summary: dict = {
        "timeframe": request.timeframe,
        "model_id": request.model_id,
        "role": role,
        "created_at": created.isoformat(),
        "windows": windows.as_dict(),
        "rows": {"reference": len(reference), "current": len(current)},
        "gates": gates.model_dump(),
    }
    folder = workspace.reports_dir / "drift" / request.timeframe / request.model_id
    folder.mkdir(parents=True, exist_ok=True)
    stamp = created.strftime("%Y%m%dT%H%M%S%fZ")
    digest = hashlib.sha256(request.model_id.encode()).hexdigest()[:8]
    report_id = f"drift-{request.timeframe}-{stamp}-{digest}"
    summary["report_id"] = report_id
    html = None
    if min(len(reference), len(current)) >= gates.min_rows:
        ref_bins, cur_bins, edges = binned(reference, current, gates.bins)
        html = folder / f"{report_id}.html"
        figures = evidently_drift(ref_bins, cur_bins, str(html))
        summary["features"] = _kind(figures, "feature:")
        summary["zs"] = _kind(figures, "z:")
        summary["state"] = {
            **figures["state"],
            "occupancy_reference": occupancy(reference["state"]),
            "occupancy_current": occupancy(current["state"]),
        }
        summary["loglik"] = {
            **figures["loglik"],
            "mean_reference": float(reference["loglik"].mean()),
            "mean_current": float(current["loglik"].mean()),
        }
        summary["versus_champion"] = _versus_champion(workspace, request, model, current, windows)
        summary["bin_edges"] = edges
    checks = drift_checks(summary, gates)
    summary["checks"] = [c.as_dict() for c in checks]
    summary["passed"] = all(c.passed for c in checks)
    summary["html"] = str(html) if html else None
    json_path = folder / f"{report_id}.json"
    partial = json_path.with_suffix(".json.partial")
    partial.write_text(json.dumps(summary, indent=1, default=str))
    partial.replace(json_path)
    summary["json"] = str(json_path)
    settings = workspace.settings
    DriftReports(settings.drift_reports_root, dict(settings.registry_options) or None).append(
        summary
    )
    return DriftRun(summary, checks, time.perf_counter() - started), answers, windows


def _kind(figures: dict, prefix: str) -> dict:
    return {name[len(prefix) :]: f for name, f in figures.items() if name.startswith(prefix)}


def _versus_champion(workspace, request, model, current, windows) -> dict | None:
    """A candidate's states, aligned to the champion's, vs the champion's on the same bars."""
    from regimes.live.shadow import align_states
    from regimes.model.loaded import LoadedModel

    registry = workspace.registry
    champion = registry.champion(request.timeframe)
    if champion is None or champion == request.model_id:
        return None
    path = workspace.model_path(request.timeframe, champion)
    champion_model = LoadedModel.load(path)
    symbols = sorted(set(current["symbol"]))
    answers, inputs = _answers(workspace, champion_model, symbols, windows.current_end)
    _, theirs = window_frames(answers, inputs, windows)
    joined = current[["symbol", "ts", "state"]].merge(
        theirs[["symbol", "ts", "state"]], on=["symbol", "ts"], suffixes=("", "_champion")
    )
    if joined.empty:
        return {"champion": champion, "psi": None, "kl": None, "bars": 0}
    mapping = align_states(joined["state_champion"].to_numpy(), joined["state"].to_numpy())
    mine = joined["state"].map(mapping).fillna(-2).astype(int).astype(str)
    figures = evidently_drift(
        pd.DataFrame({"state": joined["state_champion"].astype(str).to_numpy(dtype=object)}),
        pd.DataFrame({"state": mine.to_numpy(dtype=object)}),
    )["state"]
    return {"champion": champion, "bars": len(joined), **figures}


def shadow_comparison(
    workspace: Workspace, timeframe: str, model_id: str, bars: int
) -> dict | None:
    """Champion vs ``model_id`` over their newest stored answers on the same bars (the
    live service records both under their model_ids): the figures of
    :func:`regimes.live.shadow.compare_answers`, None when either has none."""
    from regimes.live.shadow import compare_answers

    champion = workspace.registry.champion(timeframe)
    store = workspace.state_store
    if champion is None or not store.exists():
        return None
    mine = store.read(timeframe, model_id)
    if mine.empty:
        return None
    theirs = store.read(timeframe, champion, start=mine["ts"].min())
    if theirs.empty:
        return None
    joined_ts = sorted(set(mine["ts"]) & set(theirs["ts"]))[-bars:]
    if not joined_ts:
        return None
    keep = set(joined_ts)
    return compare_answers(theirs[theirs["ts"].isin(keep)], mine[mine["ts"].isin(keep)])


def promotion_checks(
    workspace: Workspace, timeframe: str, model_id: str, to: str, say: Notify = silent
) -> tuple[list[Check], str | None]:
    """The gates a promotion to ``to`` must pass, and the drift report id behind them."""
    gates = load_gates(workspace.config_dir).for_timeframe(timeframe)
    run = drift(workspace, DriftRequest(timeframe, model_id), say)
    checks = list(run.checks) + validation_checks(workspace, timeframe, model_id)
    if to == "champion" and workspace.registry.champion(timeframe) not in (None, model_id):
        checks += shadow_checks(
            shadow_comparison(workspace, timeframe, model_id, 10 * gates.shadow_min_bars), gates
        )
    return checks, run.report["report_id"]


def validation_checks(workspace: Workspace, timeframe: str, model_id: str) -> list[Check]:
    """The verdicts of the model's validation report (``regimes report``; training writes
    one), where it exists: one check each; a verdict without enough data fails."""
    from regimes.validation.verdicts import ValidationVerdicts

    path = workspace.reports_dir / "validation" / timeframe / model_id / "report.json"
    if not path.is_file():
        return []
    try:
        verdicts = ValidationVerdicts.from_dict(json.loads(path.read_text())["verdicts"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInputError(f"{path}: unreadable validation verdicts ({exc})") from None
    return [
        Check(
            f"validation {verdict.name}",
            None if verdict.passed is None else float(verdict.passed),
            1.0,
            verdict.passed is True,
            verdict.reason if verdict.passed is not None else "too little data",
            at_least=True,
        )
        for verdict in verdicts.checks
    ]
