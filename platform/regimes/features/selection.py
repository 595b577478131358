"""Which features a timeframe uses."""

from __future__ import annotations

from collections.abc import Sequence

from regimes.config.spec import FeatureSpec
from regimes.features.batch import _check_names
from regimes.timeframes import check_timeframe

# --------------------------------------------------------------------------- selection


def selected_features(spec: FeatureSpec, timeframe_config) -> tuple[str, ...]:
    """The features a timeframe uses (plan 2.3): its configured down-selection of the
    fixed list, in canonical order. Automated pruning within it respects the budget."""
    chosen = timeframe_config.selected_features
    _check_names(chosen)
    return tuple(name for name in spec.names if name in chosen)


def check_timeframe_features(timeframe: str, names: Sequence[str]) -> None:
    check_timeframe(timeframe)
    _check_names(names)
