"""Named variants of the synthetic market: how many regimes, how long they last, and in
what they differ, each with its own seed.

The default market (:data:`regimes.data.synth.SLOW_REGIMES` and ``FAST_REGIMES``, the
demo's) has regimes at two speeds. Every other variant has one level of regimes (in the
``slow_regime`` column of the truth; its fast level is a single neutral regime), so what a
model should find is unambiguous. Dwell is given in minutes of the generator and reads in
bars of each timeframe: a regime of 3 sessions (1,170 minutes) lasts 234 bars of 5m and
about 20 of 1h.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from regimes.data.synth import RegimeSpec, SynthConfig
from regimes.errors import BadInputError

NEUTRAL = (RegimeSpec("neutral", drift=0.0, vol=1.0, volume=1.0),)
"""A fast level with one regime: no fast regimes at all."""


@dataclass(frozen=True)
class SynthVariant:
    """A synthetic market and what to score on it.

    Attributes
    ----------
    name : str
    description : str
    config : SynthConfig
        The generator's settings, seed included (symbols and days are the benchmark's).
    targets : tuple of (timeframe, level)
        Which timeframes are scored against which truth column.
    """

    name: str
    description: str
    config: SynthConfig
    targets: tuple[tuple[str, str], ...]

    def with_size(self, symbols: int, days: int) -> SynthVariant:
        return replace(self, config=replace(self.config, symbols=symbols, days=days))

    def regime_count(self, level: str) -> int:
        regimes = self.config.slow_regimes if level == "slow_regime" else self.config.fast_regimes
        return len(regimes)


def _one_level(seed: int, regimes, mean_minutes: float, min_minutes: int, **kw) -> SynthConfig:
    return SynthConfig(
        seed=seed,
        slow_regimes=tuple(regimes),
        fast_regimes=NEUTRAL,
        slow_mean_bars=mean_minutes,
        slow_min_bars=min_minutes,
        **kw,
    )


VARIANTS: dict[str, SynthVariant] = {
    v.name: v
    for v in (
        SynthVariant(
            "default",
            "the demo's market: 3 slow regimes (about 5 sessions) and 4 fast ones (about "
            "40 minutes) at once",
            SynthConfig(symbols=4, days=60, seed=11),
            (("5m", "fast_regime"), ("1h", "slow_regime")),
        ),
        SynthVariant(
            "k2-vol",
            "2 regimes that differ in volatility only (12% vs 35% a year), about 3 sessions",
            _one_level(
                21,
                (
                    RegimeSpec("low_vol", drift=0.0, vol=0.12, volume=1.0),
                    RegimeSpec("high_vol", drift=0.0, vol=0.35, volume=1.0),
                ),
                3 * 390.0,
                60,
            ),
            (("5m", "slow_regime"), ("1h", "slow_regime")),
        ),
        SynthVariant(
            "k3-short",
            "3 regimes (drift, volatility and volume together) of about 60 minutes",
            _one_level(
                22,
                (
                    RegimeSpec("calm_bull", drift=2.0, vol=0.12, volume=0.8),
                    RegimeSpec("neutral", drift=0.0, vol=0.22, volume=1.0),
                    RegimeSpec("stress_bear", drift=-4.0, vol=0.45, volume=1.6),
                ),
                60.0,
                15,
            ),
            (("5m", "slow_regime"),),
        ),
        SynthVariant(
            "k5",
            "5 regimes from calm to crisis (volatility 10%..70%, volume 0.7..2.2, drift) of "
            "about 2 sessions",
            _one_level(
                23,
                (
                    RegimeSpec("calm", drift=0.5, vol=0.10, volume=0.7),
                    RegimeSpec("steady", drift=0.2, vol=0.18, volume=0.9),
                    RegimeSpec("choppy", drift=0.0, vol=0.30, volume=1.2),
                    RegimeSpec("stress", drift=-1.0, vol=0.45, volume=1.6),
                    RegimeSpec("crisis", drift=-2.0, vol=0.70, volume=2.2),
                ),
                2 * 390.0,
                120,
            ),
            (("5m", "slow_regime"), ("1h", "slow_regime")),
        ),
        SynthVariant(
            "drift-only",
            "2 regimes that differ in drift only (trend days up and down, 0.25 sigma per 5m "
            "bar), about 1 session",
            _one_level(
                24,
                (
                    RegimeSpec("up", drift=7.0, vol=0.20, volume=1.0),
                    RegimeSpec("down", drift=-7.0, vol=0.20, volume=1.0),
                ),
                390.0,
                60,
            ),
            (("5m", "slow_regime"),),
        ),
        SynthVariant(
            "volume-range",
            "2 regimes that differ in volume and bar range only (same drift and close-to-"
            "close volatility), about 1 session",
            _one_level(
                25,
                (
                    RegimeSpec("thin", drift=0.0, vol=0.20, volume=0.6, wick=0.5),
                    RegimeSpec("busy", drift=0.0, vol=0.20, volume=1.6, wick=2.0),
                ),
                390.0,
                60,
            ),
            (("5m", "slow_regime"),),
        ),
    )
}


def variant(name: str) -> SynthVariant:
    """The variant called ``name``; refused with the known names otherwise."""
    try:
        return VARIANTS[name]
    except KeyError:
        raise BadInputError(f"synth variant {name!r}: expected one of {sorted(VARIANTS)}") from None
