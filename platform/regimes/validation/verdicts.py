"""The report's verdicts: dwell, diagonal dominance, confidence.

A :class:`ValidationVerdicts` is what a promotion gate reads: ``passed`` and one
:class:`Verdict` per check, each with the figures it looked at and a reason. It is
stored in the report's JSON (``verdicts``) and read back with
:meth:`ValidationVerdicts.from_dict` (or :func:`regimes.validation.files.read_verdicts`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from regimes.config.validation import VerdictConfig

CHECKS = ("dwell", "diagonal_dominance", "confidence")


@dataclass(frozen=True)
class Verdict:
    """One check: ``passed`` is None when there was too little data to judge."""

    name: str
    passed: bool | None
    reason: str
    figures: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ValidationVerdicts:
    """Every check of one report; ``passed`` only when every check passed."""

    model_id: str
    timeframe: str
    checks: tuple[Verdict, ...]

    @property
    def passed(self) -> bool:
        return all(check.passed is True for check in self.checks)

    def check(self, name: str) -> Verdict:
        """The check called ``name`` (one of :data:`CHECKS`)."""
        for check in self.checks:
            if check.name == name:
                return check
        raise KeyError(f"no verdict {name!r}; expected one of {list(CHECKS)}")

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "timeframe": self.timeframe,
            "passed": self.passed,
            "checks": [asdict(check) for check in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationVerdicts:
        """Back from :meth:`as_dict` (e.g. the ``verdicts`` of a report's JSON)."""
        checks = tuple(Verdict(**check) for check in data["checks"])
        return cls(model_id=data["model_id"], timeframe=data["timeframe"], checks=checks)


def _judged_states(dwell: pd.DataFrame, settings: VerdictConfig) -> pd.Index:
    return dwell.index[dwell["share"] >= settings.min_share]


def dwell_verdict(dwell: pd.DataFrame, settings: VerdictConfig) -> Verdict:
    """Mean dwell within ``dwell_ratio_max`` of 1/(1-a_kk) for every state holding at
    least ``min_share`` of the bars."""
    states = _judged_states(dwell, settings)
    figures = {
        str(int(k)): {
            "share": round(float(dwell.at[k, "share"]), 4),
            "mean_dwell": _plain(dwell.at[k, "mean_dwell"]),
            "implied_dwell": _plain(dwell.at[k, "implied_dwell"]),
            "ratio": _plain(dwell.at[k, "ratio"]),
        }
        for k in states
    }
    unjudged = [int(k) for k in states if not math.isfinite(dwell.at[k, "ratio"])]
    if len(states) == 0 or unjudged:
        return Verdict("dwell", None, f"too little data for states {unjudged}", figures)
    bound = settings.dwell_ratio_max
    off = [int(k) for k in states if not 1 / bound <= dwell.at[k, "ratio"] <= bound]
    if off:
        return Verdict("dwell", False, f"states {off}: dwell off by more than {bound}x", figures)
    return Verdict(
        "dwell",
        True,
        f"every state with >= {settings.min_share:.0%} of bars "
        f"within {bound}x of its implied dwell",
        figures,
    )


def diagonal_verdict(
    transitions: pd.DataFrame, dwell: pd.DataFrame, settings: VerdictConfig
) -> Verdict:
    """a_kk >= ``min_diagonal`` and above every a_kj for the states of the dwell check."""
    states = _judged_states(dwell, settings)
    figures = {str(int(k)): round(float(transitions.at[k, "model_stay"]), 4) for k in states}
    if len(states) == 0:
        return Verdict("diagonal_dominance", None, "no state holds enough bars", figures)
    weak = [int(k) for k in states if not transitions.at[k, "diagonally_dominant"]]
    if weak:
        return Verdict(
            "diagonal_dominance", False, f"states {weak} not diagonally dominant", figures
        )
    return Verdict(
        "diagonal_dominance",
        True,
        f"a_kk >= {settings.min_diagonal} and the row's largest",
        figures,
    )


def confidence_verdict(median: float, settings: VerdictConfig) -> Verdict:
    """Median max(alpha_t) at least ``min_median_confidence``."""
    figures = {"median_max_alpha": _plain(median)}
    if not math.isfinite(median):
        return Verdict("confidence", None, "no bar with a posterior", figures)
    threshold = settings.min_median_confidence
    passed = median >= threshold
    word = ">=" if passed else "<"
    return Verdict(
        "confidence", passed, f"median max(alpha) {median:.3f} {word} {threshold}", figures
    )


def _plain(value: Any) -> float | None:
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
