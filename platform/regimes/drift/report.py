"""A drift report of one model (plan 9.2): reference window vs current window, per
selected feature, per z dimension, on the states and on the predictive log-likelihood;
for a candidate also its state occupancy against the champion's on the same bars.

Every column is binned on the reference window first (:mod:`regimes.drift.binning`) and
Evidently computes PSI and KL on the bin labels as categoricals, so a figure is
comparable across current windows and equals the hand computation of
:mod:`regimes.drift.statistics` on the same bins (tested). Evidently also writes the
HTML; it sees only bin labels, never raw values, which keeps the file small.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

from regimes.drift.binning import bin_codes, reference_edges
from regimes.errors import BadInputError

KINDS = ("feature", "z", "state", "loglik")


@dataclass(frozen=True)
class Windows:
    """Reference and current windows, UTC, ``[start, end)``."""

    reference_start: pd.Timestamp
    reference_end: pd.Timestamp
    current_start: pd.Timestamp
    current_end: pd.Timestamp

    def check(self) -> Windows:
        for name in ("reference", "current"):
            start, end = getattr(self, f"{name}_start"), getattr(self, f"{name}_end")
            if start.tzinfo is None or end.tzinfo is None:
                raise BadInputError(f"--{name}: times need a time zone (UTC)")
            if end <= start:
                raise BadInputError(f"--{name}: the window ends ({end}) before it starts ({start})")
        if self.current_start < self.reference_start:
            raise BadInputError(
                f"--current starts ({self.current_start}) before --reference "
                f"({self.reference_start}): the current window must come after the reference"
            )
        return self

    def as_dict(self) -> dict[str, str]:
        return {name: getattr(self, name).isoformat() for name in self.__dataclass_fields__}


def window_frames(
    answers: pd.DataFrame, inputs: pd.DataFrame, windows: Windows
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The columns a report compares, per window: ``feature:<name>``, ``z:<k>``,
    ``state`` and ``loglik``, over the bars the model encoded (warm-up and gaps left out).

    ``answers`` and ``inputs`` come from
    :func:`regimes.live.replay.replay_with_inputs` (same rows, same order).
    """
    z_columns = sorted(c for c in answers.columns if c.startswith("z_"))
    frame = pd.DataFrame({f"feature:{c}": inputs[c].to_numpy() for c in inputs.columns})
    for column in z_columns:
        frame[f"z:{int(column[2:])}"] = answers[column].to_numpy()
    frame["state"] = answers["raw_state_id"].to_numpy()
    frame["loglik"] = answers["loglik"].to_numpy()
    frame["ts"] = pd.DatetimeIndex(answers["ts"])
    frame["symbol"] = answers["symbol"].to_numpy()
    encoded = np.isfinite(answers["loglik"].to_numpy(dtype=float)) & (frame["state"] >= 0)
    frame = frame[encoded]
    reference = frame[
        (frame["ts"] >= windows.reference_start) & (frame["ts"] < windows.reference_end)
    ]
    current = frame[(frame["ts"] >= windows.current_start) & (frame["ts"] < windows.current_end)]
    return reference.reset_index(drop=True), current.reset_index(drop=True)


def binned(reference: pd.DataFrame, current: pd.DataFrame, bins: int):
    """Both windows as bin labels (numeric columns on reference quantiles; ``state`` as
    its own categories), and the edges used. Columns are pandas categoricals: Evidently
    counts them several times faster than text, with the same figures."""
    out_ref, out_cur, edges = {}, {}, {}
    for column in reference.columns:
        if column in ("ts", "symbol"):
            continue
        if column == "state":
            out_ref[column] = reference[column].astype(int).astype(str).astype("category")
            out_cur[column] = current[column].astype(int).astype(str).astype("category")
            continue
        values = reference[column].to_numpy(dtype=float)
        cut = reference_edges(values, bins)
        edges[column] = cut.tolist()
        names = [f"b{k:02d}" for k in range(len(cut) + 1)]
        out_ref[column] = pd.Categorical.from_codes(bin_codes(values, cut), categories=names)
        out_cur[column] = pd.Categorical.from_codes(
            bin_codes(current[column].to_numpy(dtype=float), cut), categories=names
        )
    return pd.DataFrame(out_ref), pd.DataFrame(out_cur), edges


def evidently_drift(
    reference: pd.DataFrame, current: pd.DataFrame, html_path: str | None = None
) -> dict[str, dict[str, float]]:
    """PSI and KL of every column (categoricals) from Evidently's ``ValueDrift``; the
    HTML written to ``html_path`` when given."""
    os.environ.setdefault("DO_NOT_TRACK", "1")  # Evidently's usage telemetry stays off
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    columns = list(reference.columns)
    definition = DataDefinition(categorical_columns=columns)
    metrics = [ValueDrift(column=c, method=m) for c in columns for m in ("psi", "kl_div")]
    snapshot = Report(metrics).run(
        current_data=Dataset.from_pandas(current, data_definition=definition),
        reference_data=Dataset.from_pandas(reference, data_definition=definition),
    )
    figures: dict[str, dict[str, float]] = {c: {} for c in columns}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        name = "psi" if config["method"] == "psi" else "kl"
        figures[config["column"]][name] = float(metric["value"])
    if html_path is not None:
        snapshot.save_html(html_path)
    return figures


def occupancy(states: pd.Series) -> dict[str, float]:
    """Share of bars per state (keys as strings, sorted by state)."""
    shares = states.astype(int).value_counts(normalize=True).sort_index()
    return {str(k): round(float(v), 6) for k, v in shares.items()}
