"""Gate checks (plan 9.4): every figure against its limit, each check named, so a refused
promotion lists exactly what failed.

A check that has too little data to compute fails ("too little data"): a gate never
passes a model on a guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from regimes.config.gates import GateSettings


@dataclass(frozen=True)
class Check:
    """One gate check: ``value`` against ``limit`` (``<=`` unless ``at_least``)."""

    name: str
    value: float | None
    limit: float
    passed: bool
    detail: str
    at_least: bool = False

    def figure(self) -> str:
        """The value against its limit, and the detail."""
        sign = ">=" if self.at_least else "<="
        shown = "n/a" if self.value is None else f"{self.value:.4g}"
        return f"{shown} (limit {sign} {self.limit:g}) {self.detail}".rstrip()

    def line(self) -> str:
        verdict = "pass" if self.passed else "FAIL"
        return f"{verdict} {self.name}: {self.figure()}"

    def as_dict(self) -> dict:
        return asdict(self)


def _check(name, value, limit, detail="", at_least=False) -> Check:
    if value is None:
        return Check(name, None, limit, False, detail or "too little data", at_least)
    passed = value >= limit if at_least else value <= limit
    return Check(name, float(value), limit, bool(passed), detail, at_least)


def drift_checks(summary: dict, gates: GateSettings) -> list[Check]:
    """The drift gate of a report summary (:mod:`regimes.app.drift`)."""
    rows = summary["rows"]
    if min(rows["reference"], rows["current"]) < gates.min_rows:
        return [
            Check(
                "rows",
                float(min(rows["reference"], rows["current"])),
                gates.min_rows,
                False,
                f"too little data: reference {rows['reference']}, current {rows['current']} "
                f"encoded bars (need {gates.min_rows} each)",
                at_least=True,
            )
        ]
    checks = []
    for kind in ("feature", "z"):
        figures = summary[f"{kind}s"]
        drifted = [
            name
            for name, f in figures.items()
            if f["psi"] > gates.feature_psi or f["kl"] > gates.feature_kl
        ]
        share = len(drifted) / len(figures) if figures else None
        detail = f"drifted: {', '.join(drifted)}" if drifted else ""
        checks.append(_check(f"{kind}s drifted (share)", share, gates.max_drifted_share, detail))
    checks.append(_check("state occupancy PSI", summary["state"]["psi"], gates.occupancy_psi))
    checks.append(_check("log-likelihood PSI", summary["loglik"]["psi"], gates.loglik_psi))
    versus = summary.get("versus_champion")
    if versus is not None:
        checks.append(
            _check(
                "occupancy vs champion PSI",
                versus.get("psi"),
                gates.champion_occupancy_psi,
                f"champion {versus['champion']}",
            )
        )
    return checks


def shadow_checks(comparison: dict | None, gates: GateSettings) -> list[Check]:
    """The agreement gate of a shadow (:func:`regimes.live.shadow.compare_answers` over
    the stored answers of champion and shadow)."""
    if not comparison:
        return [Check("shadow bars", 0.0, gates.shadow_min_bars, False, "no shadow answers", True)]
    bars = comparison["bars_compared"]
    checks = [_check("shadow bars", bars, gates.shadow_min_bars, at_least=True)]
    if bars < gates.shadow_min_bars:
        return checks
    checks.append(
        _check("shadow agreement", comparison["agreement"], gates.shadow_agreement, at_least=True)
    )
    ood = comparison["ood_rate"]
    excess = None if None in (ood["shadow"], ood["champion"]) else ood["shadow"] - ood["champion"]
    checks.append(_check("shadow OOD rate over the champion's", excess, gates.ood_margin))
    return checks
