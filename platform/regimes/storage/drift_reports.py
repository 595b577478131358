"""The ``drift_reports`` Delta table: one row per drift report (its summary as JSON, the
windows, the verdict and the HTML's path), so every gate decision can point at the
report behind it and the history of a model's drift can be read back."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa

from regimes.errors import StoreError

SCHEMA = pa.schema(
    [
        ("report_id", pa.string()),
        ("timeframe", pa.string()),
        ("model_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("reference_start", pa.timestamp("us", tz="UTC")),
        ("reference_end", pa.timestamp("us", tz="UTC")),
        ("current_start", pa.timestamp("us", tz="UTC")),
        ("current_end", pa.timestamp("us", tz="UTC")),
        ("passed", pa.bool_()),
        ("summary", pa.string()),
        ("html", pa.string()),
    ]
)


class DriftReports:
    """Append and read drift report summaries at ``root`` (local path or ``s3://``)."""

    def __init__(self, root: str, storage_options: dict | None = None):
        self.root = root
        self.storage_options = storage_options or None

    def append(self, summary: dict) -> None:
        from deltalake import write_deltalake

        windows = summary["windows"]
        row = {
            "report_id": summary["report_id"],
            "timeframe": summary["timeframe"],
            "model_id": summary["model_id"],
            "created_at": pd.Timestamp(summary["created_at"]),
            **{name: pd.Timestamp(value) for name, value in windows.items()},
            "passed": bool(summary["passed"]),
            "summary": json.dumps(summary, default=str),
            "html": summary.get("html") or "",
        }
        table = pa.Table.from_pylist([row], schema=SCHEMA)
        try:
            write_deltalake(
                self.root,
                table,
                mode="append",
                partition_by=["timeframe"],
                storage_options=self.storage_options,
            )
        except Exception as exc:  # deltalake raises its own types; one line for the user
            raise StoreError(f"drift_reports at {self.root}: append failed: {exc}") from None

    def read(self, timeframe: str | None = None, model_id: str | None = None) -> pd.DataFrame:
        """The stored reports (newest last), optionally of one timeframe / model."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        try:
            frame = DeltaTable(self.root, storage_options=self.storage_options).to_pandas()
        except TableNotFoundError:
            return SCHEMA.empty_table().to_pandas()
        if timeframe is not None:
            frame = frame[frame["timeframe"] == timeframe]
        if model_id is not None:
            frame = frame[frame["model_id"] == model_id]
        return frame.sort_values("created_at", kind="stable").reset_index(drop=True)

    def get(self, report_id: str) -> dict:
        frame = self.read()
        found = frame[frame["report_id"] == report_id]
        if found.empty:
            raise StoreError(f"drift_reports at {self.root}: no report {report_id!r}")
        return json.loads(found["summary"].iloc[-1])
