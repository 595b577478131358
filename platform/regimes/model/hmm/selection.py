"""State-count and covariance selection by AIC/BIC on validation data (plan 4.4)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from regimes.errors import BadInputError, TrainingError
from regimes.model.hmm.model import RegimeHMM


def select_state_count(
    Z,
    lengths,
    Z_val,
    lengths_val,
    k_range: tuple[int, int],
    covariance_types: Sequence[str] = ("diag",),
    criterion: str = "bic",
    **hmm_params,
) -> tuple[RegimeHMM, pd.DataFrame]:
    """Fit every K in ``k_range`` x covariance type; score each on the validation data.

    Returns the model with the lowest ``criterion`` and the whole table (kept in the
    artifact's metrics). A cell that cannot be fitted is in the table with its error.
    """
    if criterion not in ("bic", "aic"):
        raise BadInputError(f"criterion: expected 'bic' or 'aic', got {criterion!r}")
    low, high = k_range
    rows, best = [], None
    for covariance_type in covariance_types:
        for K in range(low, high + 1):
            model = RegimeHMM(n_states=K, covariance_type=covariance_type, **hmm_params)
            try:
                model.fit(Z, lengths, Z_val, lengths_val)
            except (BadInputError, TrainingError) as exc:
                rows.append({"K": K, "covariance_type": covariance_type, "error": str(exc)})
                continue
            scores = model.information_criteria(Z_val, lengths_val)
            rows.append(
                {
                    "K": K,
                    "covariance_type": covariance_type,
                    **scores,
                    "fit_seconds": round(model.fit_seconds_, 3),
                }
            )
            if best is None or scores[criterion] < best[0]:
                best = (scores[criterion], model)
    table = pd.DataFrame(rows)
    if best is None:
        raise TrainingError("state-count selection: no (K, covariance) cell could be fitted")
    return best[1], table
