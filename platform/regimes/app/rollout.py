"""Use cases that change a model's role: ``promote`` (rollback and the drift-gated
rollout join here, as request dataclasses in and results with ``as_dict()`` out).

Every change is one atomic registry commit carrying actor, reason and evidence; a
promotion that lost a race is a ``RegistryConflictError`` naming what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regimes.app.workspace import Workspace


@dataclass(frozen=True)
class PromoteRequest:
    """Make ``model_id`` (a candidate or shadow) the champion of its scope."""

    timeframe: str
    model_id: str
    actor: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PromoteResult:
    transition: Any  # regimes.storage.registry.Transition
    previous_champion: str | None

    def summary(self) -> list[str]:
        t = self.transition
        scope = t.timeframe if t.symbol is None else f"{t.timeframe} {t.symbol}"
        replaced = f", replacing {self.previous_champion}" if self.previous_champion else ""
        return [
            f"promote: {t.model_id} is the champion of {scope} (was {t.from_role}{replaced}); "
            f"registry version {t.version}"
        ]

    def as_dict(self) -> dict[str, Any]:
        t = self.transition
        return {
            "command": "promote",
            "timeframe": t.timeframe,
            "symbol": t.symbol,
            "model_id": t.model_id,
            "from_role": t.from_role,
            "previous_champion": self.previous_champion,
            "actor": t.actor,
            "reason": t.reason,
            "version": t.version,
        }


def promote(workspace: Workspace, request: PromoteRequest) -> PromoteResult:
    """Promote in one commit; the previous champion of the scope is retired and kept as
    the last good champion for a rollback."""
    registry = workspace.registry
    current = registry.current(request.timeframe)
    row = current[current["model_id"] == request.model_id]
    symbol = row["symbol"].iloc[0] if len(row) and isinstance(row["symbol"].iloc[0], str) else None
    # Read with the same registry object: if the champion changes before the commit, the
    # promotion is refused as a conflict rather than replacing a model we did not name.
    previous = registry.champion(request.timeframe, symbol)
    transition = registry.promote(
        request.timeframe,
        request.model_id,
        actor=request.actor,
        reason=request.reason,
        evidence=request.evidence or None,
    )
    return PromoteResult(transition=transition, previous_champion=previous)
