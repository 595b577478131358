"""Probation of a newly promoted champion (plan 9.4, automatic rollback).

For its first ``bars`` answers after a promotion, a champion's health is watched from
the live engines' counters: the share of its answers that are UNKNOWN for a
model-health reason (out of range, log-likelihood below the OOD threshold, entropy
spike) must stay at most ``max_ood_rate`` once ``min_bars`` have been answered. A breach
is the signal to roll back to the last good champion; ``bars`` answers without one
end the probation.

Examples
--------
>>> settings = ProbationSettings(bars=100, min_bars=20, max_ood_rate=0.3)
>>> probation_verdict({"bars": 10, "out_of_range": 9}, settings).state
'watching'
>>> probation_verdict({"bars": 40, "loglik": 20}, settings).state
'breached'
>>> probation_verdict({"bars": 120, "loglik": 3}, settings).state
'passed'
"""

from __future__ import annotations

from dataclasses import dataclass

from regimes.live.shadow import OOD_REASONS


@dataclass(frozen=True)
class ProbationSettings:
    bars: int = 500
    min_bars: int = 50
    max_ood_rate: float = 0.3


@dataclass(frozen=True)
class Verdict:
    state: str  # watching | passed | breached
    bars: int
    ood_rate: float | None
    detail: str


def since(now: dict, baseline: dict) -> dict:
    """Counters accumulated since ``baseline`` (both from the engines' counters)."""
    return {k: now.get(k, 0) - baseline.get(k, 0) for k in now if isinstance(now.get(k), int)}


def probation_verdict(counts: dict, settings: ProbationSettings) -> Verdict:
    """The verdict on a champion's answers since its promotion (``counts``: answers
    ``bars`` and one count per UNKNOWN reason)."""
    bars = int(counts.get("bars", 0))
    if bars <= 0:
        return Verdict("watching", 0, None, "no answers yet")
    ood = sum(int(counts.get(reason, 0)) for reason in OOD_REASONS)
    rate = ood / bars
    detail = f"{ood} of {bars} answers UNKNOWN for model health ({rate:.0%})"
    if bars >= settings.min_bars and rate > settings.max_ood_rate:
        return Verdict("breached", bars, rate, detail + f", above {settings.max_ood_rate:.0%}")
    if bars >= settings.bars:
        return Verdict("passed", bars, rate, detail)
    return Verdict("watching", bars, rate, detail)
