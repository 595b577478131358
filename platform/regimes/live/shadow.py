"""Champion vs shadow (plan 9.3): how a candidate model would have answered the same bars.

Each engine shard keeps a bounded window of the newest answers of every model it runs
(:class:`AnswerWindow`); :func:`compare_answers` joins a champion's and a shadow's on
(symbol, ts) and says how far apart they are. State ids of two models are arbitrary
labels, so they are aligned first: the Hungarian assignment on the contingency table of
the bars where both are known maps each shadow state to the champion state it overlaps
most (states left over on the larger side stay unmatched and count as disagreement).

Figures (all over the bars both models answered):

- ``agreement``: share of bars, both known, whose aligned states agree;
- ``mean_abs_posterior_diff``: mean total-variation distance between the posteriors
  after alignment, 0.5 * sum_k |p_champion_k - p_shadow_pi(k)| (0 = identical, 1 =
  disjoint), where the mass of an unmatched state counts in full;
- ``ood_rate``: per model, the share of bars UNKNOWN for a model-health reason
  (out of range, log-likelihood, entropy spike) — warm-up, gaps and settling excluded;
- ``switches``: per model, changes of the published state between consecutive known
  answers of a symbol.
"""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
from scipy.optimize import linear_sum_assignment

from regimes.live import ood

OOD_REASONS = frozenset(ood.REASONS[1:])
"""UNKNOWN reasons that speak of the model's health (not of warm-up, gaps or settling)."""

KEEP_COLUMNS = ("symbol", "ts", "state_id", "is_unknown", "ood_reason")


class AnswerWindow:
    """The newest ``rows`` answers of one model (columns :data:`KEEP_COLUMNS` and the
    posterior ``p_..``), kept as a queue of frames and trimmed as it grows."""

    def __init__(self, rows: int):
        self.rows = int(rows)
        self._frames: deque[pd.DataFrame] = deque()
        self._count = 0

    def add(self, answers: pd.DataFrame) -> None:
        if answers.empty or self.rows <= 0:
            return
        posterior = [c for c in answers.columns if c.startswith("p_")]
        kept = answers[[*KEEP_COLUMNS, *posterior]]
        self._frames.append(kept)
        self._count += len(kept)
        while self._frames and self._count - len(self._frames[0]) >= self.rows:
            self._count -= len(self._frames.popleft())

    def frame(self) -> pd.DataFrame:
        """The kept answers, oldest first (an empty frame when none)."""
        if not self._frames:
            return pd.DataFrame(columns=list(KEEP_COLUMNS))
        return pd.concat(list(self._frames), ignore_index=True).tail(self.rows)

    def __len__(self) -> int:
        return min(self._count, self.rows)


def _posterior(frame: pd.DataFrame) -> np.ndarray:
    columns = sorted(c for c in frame.columns if c.startswith("p_"))
    return frame[columns].to_numpy(dtype=float) if columns else np.zeros((len(frame), 0))


def _switches(frame: pd.DataFrame) -> int:
    known = frame.loc[~frame["is_unknown"].astype(bool), ["symbol", "ts", "state_id"]]
    if known.empty:
        return 0
    known = known.sort_values(["symbol", "ts"], kind="stable")
    same_symbol = known["symbol"].to_numpy()[1:] == known["symbol"].to_numpy()[:-1]
    changed = known["state_id"].to_numpy()[1:] != known["state_id"].to_numpy()[:-1]
    return int((same_symbol & changed).sum())


def _ood_rate(frame: pd.DataFrame) -> float | None:
    if frame.empty:
        return None
    return float(frame["ood_reason"].isin(OOD_REASONS).mean())


def align_states(champion_states: np.ndarray, shadow_states: np.ndarray) -> dict[int, int]:
    """Hungarian map shadow state -> champion state maximising the bars they share
    (inputs: the states of the same bars, both known)."""
    if len(champion_states) == 0:
        return {}
    champion_labels = np.unique(champion_states)
    shadow_labels = np.unique(shadow_states)
    table = np.zeros((len(shadow_labels), len(champion_labels)))
    np.add.at(
        table,
        (
            np.searchsorted(shadow_labels, shadow_states),
            np.searchsorted(champion_labels, champion_states),
        ),
        1,
    )
    rows, cols = linear_sum_assignment(-table)
    return {int(shadow_labels[r]): int(champion_labels[c]) for r, c in zip(rows, cols, strict=True)}


def compare_answers(champion: pd.DataFrame, shadow: pd.DataFrame) -> dict:
    """Champion vs shadow over the bars both answered (see the module docstring).

    Parameters
    ----------
    champion, shadow : pandas.DataFrame
        Answers of each model (:data:`KEEP_COLUMNS` and ``p_..``), e.g.
        :meth:`AnswerWindow.frame` pooled over shards.

    Returns
    -------
    dict
        ``bars_compared``, ``both_known``, ``agreement``, ``mean_abs_posterior_diff``,
        ``ood_rate`` and ``switches`` (each ``{"champion": .., "shadow": ..}``) and the
        ``state_map`` used (shadow state -> champion state). Figures that no bar supports
        are None.
    """
    joined = champion.merge(shadow, on=["symbol", "ts"], suffixes=("_c", "_s"))
    n = len(joined)
    result: dict = {"bars_compared": int(n)}
    both = joined[~joined["is_unknown_c"].astype(bool) & ~joined["is_unknown_s"].astype(bool)]
    state_map = align_states(
        both["state_id_c"].to_numpy(dtype=np.int64), both["state_id_s"].to_numpy(dtype=np.int64)
    )
    mapped = both["state_id_s"].map(state_map).to_numpy(dtype=float)
    result["both_known"] = int(len(both))
    result["agreement"] = (
        float((mapped == both["state_id_c"].to_numpy(dtype=float)).mean()) if len(both) else None
    )
    result["mean_abs_posterior_diff"] = _posterior_distance(joined, champion, shadow, state_map)
    mine = joined.rename(columns=lambda c: c[:-2] if c.endswith("_c") else c)
    theirs = joined.rename(columns=lambda c: c[:-2] if c.endswith("_s") else c)
    result["ood_rate"] = {"champion": _ood_rate(mine), "shadow": _ood_rate(theirs)}
    result["switches"] = {"champion": _switches(mine), "shadow": _switches(theirs)}
    result["state_map"] = {str(k): v for k, v in sorted(state_map.items())}
    return result


def _posterior_distance(joined, champion, shadow, state_map) -> float | None:
    own_c = sorted(c for c in champion.columns if c.startswith("p_"))
    own_s = sorted(c for c in shadow.columns if c.startswith("p_"))
    if not len(joined) or not own_c or not own_s:
        return None
    # merge() suffixes only the columns both frames have.
    p_c = joined[[f"{c}_c" if c in own_s else c for c in own_c]].to_numpy(float)
    p_s = joined[[f"{c}_s" if c in own_c else c for c in own_s]].to_numpy(float)
    K_c, K_s = len(own_c), len(own_s)
    usable = np.isfinite(p_c).all(axis=1) & np.isfinite(p_s).all(axis=1)
    if not usable.any():
        return None
    p_c, p_s = p_c[usable], p_s[usable]
    aligned = np.zeros_like(p_c)
    matched = np.zeros(K_s, dtype=bool)
    for shadow_state, champion_state in state_map.items():
        if shadow_state < K_s and champion_state < K_c:
            aligned[:, champion_state] = p_s[:, shadow_state]
            matched[shadow_state] = True
    unmatched_mass = p_s[:, ~matched].sum(axis=1)
    distance = 0.5 * (np.abs(p_c - aligned).sum(axis=1) + unmatched_mass)
    return float(distance.mean())
