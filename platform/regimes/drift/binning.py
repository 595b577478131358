"""Bins fitted on the reference window only, so a drift figure means the same thing
whatever the current window holds.

Evidently bins a numeric column on reference + current together, with a number of bins
that follows the data (Sturges' rule), so the PSI of a feature moves when only the
current window's size changes. Here a numeric column is cut at the reference window's
quantiles (interior edges, duplicates removed: a column with few distinct values gets
fewer bins), every value of either window is put in its bin (beyond the outer edges:
the outer bins), and Evidently is handed the bin labels as a categorical column.

Examples
--------
>>> edges = reference_edges(np.arange(100.0), bins=4)
>>> edges.tolist()
[24.75, 49.5, 74.25]
>>> bin_labels(np.array([-5.0, 30.0, 1e9]), edges).tolist()
['b00', 'b01', 'b03']
"""

from __future__ import annotations

import numpy as np

from regimes.errors import BadInputError


def reference_edges(reference: np.ndarray, bins: int = 10) -> np.ndarray:
    """Interior bin edges at the reference's quantiles 1/bins .. (bins-1)/bins."""
    values = np.asarray(reference, dtype=float)
    values = values[np.isfinite(values)]
    if bins < 2:
        raise BadInputError(f"bins: expected at least 2, got {bins}")
    if values.size == 0:
        raise BadInputError("reference window: no finite value to bin")
    quantiles = np.quantile(values, np.arange(1, bins) / bins)
    return np.unique(quantiles)


def bin_codes(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """The bin of each value (0 .. len(edges)); a value on an edge goes to the bin above."""
    return np.searchsorted(edges, np.asarray(values, dtype=float), side="right")


def bin_labels(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin labels ``b00``, ``b01``, ... of ``values`` (what Evidently sees)."""
    names = np.array([f"b{k:02d}" for k in range(len(edges) + 1)], dtype=object)
    return names[bin_codes(values, edges)]
