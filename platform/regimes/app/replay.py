"""The ``replay`` use case: stored bars through a model's live engine, bar by bar,
exactly as a live feed would send them; the answers go to a Parquet file."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from regimes.app.inputs import aware_timestamp
from regimes.app.output import one_line
from regimes.app.progress import Progress, items_progress, no_progress
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError, ConfigError
from regimes.paths import check_timeframe_name


@dataclass(frozen=True)
class ReplayRequest:
    timeframe: str
    out: str | Path
    model_id: str | None = None  # None: the timeframe's (pooled) champion
    symbols: tuple[str, ...] | None = None
    start: str | None = None  # first bar written (warm-up always starts at the first bar)
    end: str | None = None


@dataclass(frozen=True)
class ReplayResult:
    model_id: str
    rows: int
    symbols: int
    known: int
    unknown: dict[str, int]
    out: Path
    config_differences: list[str]

    def summary(self) -> list[str]:
        lines = [
            f"replay: {self.rows} answers for {self.symbols} symbol(s) from model "
            f"{self.model_id} -> {self.out}",
            f"  known states: {self.known}; UNKNOWN by reason: {self.unknown}",
        ]
        if self.config_differences:
            lines.append(
                "  the model answered with its own settings; today's config differs in: "
                + "; ".join(self.config_differences)
            )
        return lines

    def as_dict(self) -> dict[str, Any]:
        return {
            "command": "replay",
            "model_id": self.model_id,
            "rows": self.rows,
            "out": str(self.out),
            "unknown": self.unknown,
            "config_differences": self.config_differences,
        }


def replay(
    workspace: Workspace, request: ReplayRequest, progress: Progress = no_progress
) -> ReplayResult:
    """Replay from the first stored bar so warm-up is real; write answers from
    ``request.start`` on. The file appears whole or not at all."""
    import pandas as pd

    from regimes.data import sql as db
    from regimes.live.engine import open_engine

    timeframe = check_timeframe_name(request.timeframe)
    start = aware_timestamp(request.start, "--start")
    engine = open_engine(
        workspace.model_store, workspace.registry, timeframe, model_id=request.model_id
    )
    # The model answers with its own settings; say where today's config would differ
    # (best effort: an unreadable config never blocks replaying a self-contained model).
    try:
        differences = engine.model.differences_from(workspace.config)
    except ConfigError as exc:
        differences = [f"today's config cannot be read ({one_line(exc)})"]
    symbols = list(request.symbols) if request.symbols else None
    bars = db.read_bars(workspace.engine, timeframe, symbols, None, request.end)
    if bars.empty:
        raise BadInputError(f"replay: no {timeframe} bars stored for the request")
    steps = [group for _, group in bars.groupby("ts", sort=True)]
    answers = []
    for group in items_progress(progress, f"replay {timeframe}")(steps):
        out = engine.step(group)
        if start is None or group["ts"].iloc[0] >= start:
            answers.append(out)
    if not answers:
        raise BadInputError("replay: no bars at or after --start")
    frame = pd.concat(answers, ignore_index=True)
    out_path = Path(request.out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    frame.to_parquet(partial, index=False)
    partial.replace(out_path)
    unknown = frame["ood_reason"].value_counts().to_dict()
    return ReplayResult(
        model_id=engine.model_id,
        rows=len(frame),
        symbols=int(frame["symbol"].nunique()),
        known=int((~frame["is_unknown"]).sum()),
        unknown={str(k): int(v) for k, v in unknown.items()},
        out=out_path,
        config_differences=differences,
    )
