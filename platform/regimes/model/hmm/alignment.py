"""Hungarian label alignment across retrains (plan 5.4).

A refit HMM numbers its states arbitrarily. :func:`align_states` matches the new model's
states to the previous model's with the Hungarian algorithm, on either

* ``emission``: the symmetric KL divergence between the states' Gaussians, in the
  (anchored) z space both models share; or
* ``co_occupancy``: how often both models' filtered posteriors put the same bar in a pair
  of states on a shared window (cost = 1 - normalised co-occupancy);

then :func:`relabel` renumbers the new model so state k means what it meant before. The
report carries the total and per-state matching cost and flags the mapping as unstable
when the mean cost exceeds a threshold (the rollout gate reads this).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

from regimes.errors import BadInputError
from regimes.model.hmm.filtering import GaussianHMMParams


@dataclass(frozen=True)
class AlignmentReport:
    method: str
    mapping: dict[int, int]
    """new state id -> old state id (unmatched new states get fresh ids >= old K)."""
    cost: float
    per_state_cost: dict[int, float]
    unstable: bool
    threshold: float

    def as_dict(self) -> dict:
        data = asdict(self)
        data["mapping"] = {str(k): v for k, v in self.mapping.items()}
        data["per_state_cost"] = {str(k): v for k, v in self.per_state_cost.items()}
        return data


def gaussian_symmetric_kl(new: GaussianHMMParams, old: GaussianHMMParams) -> np.ndarray:
    """Symmetric KL divergence between every new state's and old state's emission (K_new, K_old)."""
    if new.d != old.d:
        raise BadInputError(f"alignment: d differs ({new.d} new vs {old.d} old)")
    d = new.d
    inv_new = np.linalg.inv(new.covars)
    inv_old = np.linalg.inv(old.covars)
    cost = np.empty((new.K, old.K))
    for i in range(new.K):
        for j in range(old.K):
            diff = new.means[i] - old.means[j]
            trace = np.trace(inv_old[j] @ new.covars[i]) + np.trace(inv_new[i] @ old.covars[j])
            mahalanobis = diff @ (inv_old[j] + inv_new[i]) @ diff
            cost[i, j] = 0.5 * (trace + mahalanobis) - d
    return cost


def co_occupancy_cost(posterior_new: np.ndarray, posterior_old: np.ndarray) -> np.ndarray:
    """1 - P(old = j | new = i) from filtered posteriors on the same bars (K_new, K_old)."""
    if posterior_new.shape[0] != posterior_old.shape[0]:
        raise BadInputError("alignment: posteriors must cover the same bars")
    joint = posterior_new.T @ posterior_old
    occupancy = joint.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        conditional = np.where(occupancy > 0, joint / occupancy, 0.0)
    return 1.0 - conditional


def align_states(cost: np.ndarray, method: str, threshold: float) -> AlignmentReport:
    """Hungarian matching on a (K_new, K_old) cost matrix."""
    cost = np.asarray(cost, dtype=float)
    rows, cols = linear_sum_assignment(cost)
    mapping = {int(r): int(c) for r, c in zip(rows, cols, strict=True)}
    fresh = cost.shape[1]
    for state in range(cost.shape[0]):
        if state not in mapping:
            mapping[state] = fresh
            fresh += 1
    per_state = {int(r): float(cost[r, c]) for r, c in zip(rows, cols, strict=True)}
    mean_cost = float(np.mean(list(per_state.values())))
    return AlignmentReport(
        method=method,
        mapping=dict(sorted(mapping.items())),
        cost=mean_cost,
        per_state_cost=per_state,
        unstable=bool(mean_cost > threshold),
        threshold=float(threshold),
    )


def relabel(params: GaussianHMMParams, mapping: dict[int, int]) -> GaussianHMMParams:
    """The same model with state ``i`` renumbered ``mapping[i]`` (a permutation of 0..K-1
    when K is unchanged; fresh ids are packed after the matched ones)."""
    K = params.K
    targets = [mapping[i] for i in range(K)]
    # order[j] is the new state that becomes state j: matched states take their old ids,
    # fresh ones (K grew) follow in order.
    order = np.argsort(targets, kind="stable")
    return GaussianHMMParams(
        startprob=params.startprob[order],
        transmat=params.transmat[np.ix_(order, order)],
        means=params.means[order],
        covars=params.covars[order],
    )
