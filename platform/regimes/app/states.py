"""Use cases over the Delta state store: export a model's history (``states``) and
compact / vacuum the table (``states --compact``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regimes.app.inputs import aware_timestamp
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError

EXPORT_FORMATS = frozenset({"csv", "parquet", "json"})


@dataclass(frozen=True)
class ExportRequest:
    timeframe: str | None
    model_id: str | None
    out: str | Path | None
    symbols: tuple[str, ...] | None = None
    start: str | None = None
    end: str | None = None
    format: str = "parquet"


@dataclass(frozen=True)
class ExportResult:
    timeframe: str
    model_id: str
    rows: int
    symbols: int
    first_ts: str | None
    last_ts: str | None
    out: Path
    format: str

    def summary(self) -> list[str]:
        return [
            f"states: {self.rows} rows of {self.model_id} ({self.timeframe}), {self.symbols} "
            f"symbol(s) -> {self.out} ({self.format})"
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "states",
            "rows": self.rows,
            "symbols": self.symbols,
            "first_ts": self.first_ts,
            "last_ts": self.last_ts,
            "out": str(self.out),
            "format": self.format,
        }


def _existing_store(workspace: Workspace):
    store = workspace.state_store
    if not store.exists():
        raise BadInputError(f"states: no state table at {store.root}; run `regimes backfill`")
    return store


def export_states(workspace: Workspace, request: ExportRequest) -> ExportResult:
    """Write one model's states (pruned by timeframe, model_id, symbol, date) to a file;
    the file appears whole or not at all."""
    import pandas as pd

    store = _existing_store(workspace)
    if not (request.timeframe and request.model_id and request.out):
        raise BadInputError("states: --timeframe, --model-id and --out are required to export")
    if request.format not in EXPORT_FORMATS:
        raise BadInputError(
            f"--format: expected one of {sorted(EXPORT_FORMATS)}, got {request.format!r}"
        )
    start = aware_timestamp(request.start, "--start")
    end = aware_timestamp(request.end, "--end")
    symbols = list(request.symbols) if request.symbols else None
    frame = store.read(request.timeframe, request.model_id, symbols, start, end)
    frame = frame.drop(columns=["date"], errors="ignore")
    out_path = Path(request.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    if request.format == "parquet":
        frame.to_parquet(partial, index=False)
    elif request.format == "csv":
        frame.to_csv(partial, index=False, date_format="%Y-%m-%dT%H:%M:%SZ")
    else:
        frame.to_json(partial, orient="records", lines=True, date_format="iso")
    partial.replace(out_path)
    first = frame["ts"].min() if len(frame) else None
    last = frame["ts"].max() if len(frame) else None
    return ExportResult(
        timeframe=request.timeframe,
        model_id=request.model_id,
        rows=len(frame),
        symbols=int(frame["symbol"].nunique()) if len(frame) else 0,
        first_ts=None if first is None or pd.isna(first) else first.isoformat(),
        last_ts=None if last is None or pd.isna(last) else last.isoformat(),
        out=out_path,
        format=request.format,
    )


@dataclass(frozen=True)
class CompactRequest:
    timeframe: str | None = None
    model_id: str | None = None
    vacuum_hours: int | None = None


@dataclass(frozen=True)
class CompactResult:
    store: str
    metrics: dict
    vacuumed: int

    def summary(self) -> list[str]:
        return [
            f"states: compacted {self.store}: {self.metrics.get('numFilesRemoved', 0)} files "
            f"into {self.metrics.get('numFilesAdded', 0)}; vacuum removed {self.vacuumed} file(s)"
        ]

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "states",
            "store": self.store,
            "compacted": {k: v for k, v in self.metrics.items() if isinstance(v, int | float)},
            "vacuumed": self.vacuumed,
        }


def compact_states(workspace: Workspace, request: CompactRequest) -> CompactResult:
    """Rewrite small files (optionally of one timeframe / model) and, with
    ``vacuum_hours``, delete files older versions no longer need."""
    store = _existing_store(workspace)
    metrics = store.compact(request.timeframe, request.model_id)
    deleted = store.vacuum(request.vacuum_hours) if request.vacuum_hours is not None else []
    return CompactResult(store=store.root, metrics=metrics, vacuumed=len(deleted))
