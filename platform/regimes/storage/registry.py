"""The model registry: each model_id's lifecycle per timeframe, a Delta table of
transition events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa

from regimes.errors import BadInputError, StoreError
from regimes.paths import check_model_id, check_timeframe_name

STATUSES = ("candidate", "shadow", "production", "retired")
ALLOWED = {
    None: {"candidate"},
    "candidate": {"shadow", "production", "retired"},
    "shadow": {"production", "retired", "candidate"},
    "production": {"retired"},
    "retired": {"candidate"},
}
REGISTRY_SCHEMA = pa.schema(
    [
        ("event_ts", pa.timestamp("us", tz="UTC")),
        ("timeframe", pa.string()),
        ("model_id", pa.string()),
        ("from_status", pa.string()),
        ("to_status", pa.string()),
        ("actor", pa.string()),
        ("reason", pa.string()),
        ("artifact_path", pa.string()),
    ]
)


@dataclass(frozen=True)
class Registry:
    """The model registry table at ``root`` (a local path or an object-store URI)."""

    root: str

    @classmethod
    def at_home(cls, home: str | Path) -> Registry:
        return cls(str(Path(home) / "registry"))

    def _exists(self) -> bool:
        from deltalake import DeltaTable

        return DeltaTable.is_deltatable(self.root)

    def events(self) -> pd.DataFrame:
        """Every transition, oldest first."""
        from deltalake import DeltaTable

        if not self._exists():
            return pd.DataFrame(columns=REGISTRY_SCHEMA.names)
        try:
            frame = DeltaTable(self.root).to_pandas()
        except Exception as exc:  # a damaged log must never read as an empty registry
            raise StoreError(f"registry at {self.root} cannot be read: {exc}") from None
        return frame.sort_values(["event_ts", "timeframe", "model_id"], kind="stable").reset_index(
            drop=True
        )

    def current(self, timeframe: str | None = None) -> pd.DataFrame:
        """The latest status of every model (one row per model_id)."""
        events = self.events()
        if timeframe is not None:
            events = events[events["timeframe"] == check_timeframe_name(timeframe)]
        latest = events.groupby(["timeframe", "model_id"], sort=False).tail(1)
        return latest.rename(columns={"to_status": "status", "event_ts": "since"}).reset_index(
            drop=True
        )

    def status(self, timeframe: str, model_id: str) -> str | None:
        current = self.current(timeframe)
        row = current[current["model_id"] == model_id]
        return None if row.empty else str(row["status"].iloc[0])

    def production(self, timeframe: str) -> str | None:
        current = self.current(timeframe)
        rows = current[current["status"] == "production"]
        return None if rows.empty else str(rows["model_id"].iloc[-1])

    def transition(
        self,
        timeframe: str,
        model_id: str,
        to_status: str,
        *,
        actor: str,
        reason: str,
        artifact_path: str = "",
    ) -> pd.DataFrame:
        """Record one transition (and, for a promotion, the retirement of the previous
        production model) in a single commit. Returns the rows written."""
        from deltalake import write_deltalake

        check_timeframe_name(timeframe)
        check_model_id(model_id)
        if to_status not in STATUSES:
            raise BadInputError(f"status: expected one of {list(STATUSES)}, got {to_status!r}")
        current = self.status(timeframe, model_id)
        if to_status not in ALLOWED[current]:
            raise BadInputError(
                f"model {model_id} ({timeframe}) is {current or 'not registered'}: cannot "
                f"become {to_status}; allowed next: {sorted(ALLOWED[current]) or 'none'}"
            )
        now = datetime.now(UTC)
        rows = []
        if to_status == "production":
            previous = self.production(timeframe)
            if previous and previous != model_id:
                rows.append(
                    (
                        now,
                        timeframe,
                        previous,
                        "production",
                        "retired",
                        actor,
                        f"replaced by {model_id}",
                        "",
                    )
                )
        rows.append((now, timeframe, model_id, current, to_status, actor, reason, artifact_path))
        table = pa.Table.from_pylist(
            [dict(zip(REGISTRY_SCHEMA.names, row, strict=True)) for row in rows],
            schema=REGISTRY_SCHEMA,
        )
        try:
            write_deltalake(self.root, table, mode="append")
        except Exception as exc:
            raise StoreError(
                f"registry at {self.root}: the transition was not recorded: {exc}"
            ) from None
        return table.to_pandas()

    def artifact_path(self, timeframe: str, model_id: str) -> str | None:
        """Where a registered model's artifact is (from its registration event)."""
        events = self.events()
        rows = events[
            (events["timeframe"] == timeframe)
            & (events["model_id"] == model_id)
            & (events["artifact_path"] != "")
        ]
        return None if rows.empty else str(rows["artifact_path"].iloc[0])

    def history(self) -> list[dict]:
        """The Delta commit log (one entry per transition commit), newest first."""
        from deltalake import DeltaTable

        if not self._exists():
            return []
        return DeltaTable(self.root).history()
