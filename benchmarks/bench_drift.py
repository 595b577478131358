"""The drift report's statistics at scale: Evidently against plain numpy on the same bins.

* data: ROWS rows x FEATURES numeric columns plus a state column, reference and current
  windows of ROWS rows each (the current one shifted and widened, so some columns
  drift); every numeric column cut at the reference's deciles
  (:func:`regimes.drift.binning.reference_edges`), as the drift report does.
* Evidently: ``regimes.drift.report.evidently_drift`` (``ValueDrift`` PSI and KL per
  column on the bin labels), with the HTML written, and its size.
* anchor: :func:`regimes.drift.statistics.bin_shares`, ``psi`` and ``kl_div`` on the bin
  codes (numpy), same columns; the figures are asserted equal.
* binning itself (quantiles + labels) is timed apart: both paths need it.

Goal (issue 14): the whole gate (binning + Evidently + HTML) within a minute at 1,000,000
rows x 16 features.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import table  # noqa: E402

ROWS, FEATURES, BINS, K = 1_000_000, 16, 10, 6
GOAL_SECONDS = 60.0


def _data(rng):
    reference = rng.normal(0, 1, (ROWS, FEATURES))
    current = rng.normal(0, 1, (ROWS, FEATURES))
    current[:, : FEATURES // 4] = current[:, : FEATURES // 4] * 1.5 + 0.3  # some drift
    states = (rng.integers(0, K, ROWS), rng.integers(0, K, ROWS))
    return reference, current, states


def measure() -> dict:
    from regimes.drift.binning import bin_codes, reference_edges
    from regimes.drift.report import evidently_drift
    from regimes.drift.statistics import bin_shares, kl_div, psi

    rng = np.random.default_rng(5)
    reference, current, states = _data(rng)
    started = time.perf_counter()
    codes = {}
    for j in range(FEATURES):
        edges = reference_edges(reference[:, j], BINS)
        codes[f"f{j:02d}"] = (bin_codes(reference[:, j], edges), bin_codes(current[:, j], edges))
    codes["state"] = states
    binning = time.perf_counter() - started
    labels = [f"b{k:02d}" for k in range(BINS + 1)]
    # Categoricals, as the drift report hands them to Evidently.
    ref_frame = pd.DataFrame(
        {c: pd.Categorical.from_codes(r, categories=labels) for c, (r, _) in codes.items()}
    )
    cur_frame = pd.DataFrame(
        {c: pd.Categorical.from_codes(k, categories=labels) for c, (_, k) in codes.items()}
    )
    labelling = time.perf_counter() - started - binning

    started = time.perf_counter()
    numpy_figures = {}
    for column, (r, c) in codes.items():
        shares = bin_shares(r, c)
        numpy_figures[column] = {"psi": psi(*shares), "kl": kl_div(*shares)}
    numpy_seconds = time.perf_counter() - started

    evidently_drift(ref_frame.head(1000), cur_frame.head(1000))  # import and warm once
    with tempfile.TemporaryDirectory() as folder:
        html = os.path.join(folder, "drift.html")
        started = time.perf_counter()
        figures = evidently_drift(ref_frame, cur_frame, html)
        evidently_seconds = time.perf_counter() - started
        html_bytes = os.path.getsize(html)
    for column, values in numpy_figures.items():
        for name in ("psi", "kl"):
            assert abs(figures[column][name] - values[name]) <= 1e-9 * max(1, abs(values[name]))
    return {
        "binning": binning,
        "labelling": labelling,
        "numpy": numpy_seconds,
        "evidently": evidently_seconds,
        "html_mb": html_bytes / 1e6,
        "gate": binning + labelling + evidently_seconds,
    }


def section(r: dict) -> str:
    rows = [
        ["reference-quantile binning (both paths)", f"{r['binning']:.2f}", "-"],
        ["bin labels for Evidently", f"{r['labelling']:.2f}", "-"],
        ["PSI + KL, numpy (anchor)", f"{r['numpy']:.2f}", "1.0"],
        [
            "PSI + KL, Evidently + HTML",
            f"{r['evidently']:.2f}",
            f"{r['evidently'] / r['numpy']:.0f}",
        ],
    ]
    verdict = "met" if r["gate"] <= GOAL_SECONDS else "NOT met"
    return "\n".join(
        [
            "## drift: PSI/KL at scale (issue 14)",
            "",
            f"{ROWS:,} reference + {ROWS:,} current rows x {FEATURES} features + a state "
            f"column, {BINS} reference-quantile bins; Evidently's figures asserted equal "
            "to numpy's on the same bins.",
            "",
            table(rows, ["stage", "seconds", "x numpy"]),
            "",
            f"- HTML: {r['html_mb']:.1f} MB",
            f"- goal: the gate (binning + labels + Evidently + HTML) within {GOAL_SECONDS:.0f} s: "
            f"{verdict} ({r['gate']:.1f} s)",
        ]
    )


def run() -> str:
    return section(measure())


if __name__ == "__main__":
    print(run())
