"""Use cases that change a model's role: ``promote`` (to shadow or champion) and
``rollback`` (the drift-gated rollout joins here: request dataclasses in, results with
``as_dict()`` out).

Every change is one atomic registry commit carrying actor, reason and evidence; a
promotion that lost a race is a ``RegistryConflictError`` naming what changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from regimes.app.progress import silent
from regimes.app.workspace import Workspace
from regimes.errors import BadInputError
from regimes.errors import GateFailedError as PromotionRefusedError

PROMOTION_TARGETS = frozenset({"shadow", "champion"})


@dataclass(frozen=True)
class PromoteRequest:
    """Make ``model_id`` the champion of its scope (from candidate or shadow), or a shadow
    that runs beside the champion (from candidate)."""

    timeframe: str
    model_id: str
    actor: str
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)
    to: str = "champion"
    force: bool = False  # skip the gates (recorded as such in the transition's evidence)


@dataclass(frozen=True)
class PromoteResult:
    transition: Any  # regimes.storage.roles.Transition
    previous_champion: str | None

    def summary(self) -> list[str]:
        t = self.transition
        scope = t.timeframe if t.symbol is None else f"{t.timeframe} {t.symbol}"
        replaced = (
            f", replacing {self.previous_champion}"
            if self.previous_champion and t.to_role == "champion"
            else ""
        )
        return [
            f"promote: {t.model_id} is {'the champion' if t.to_role == 'champion' else 'a shadow'}"
            f" of {scope} (was {t.from_role}{replaced}); registry version {t.version}"
        ]

    def as_dict(self) -> dict[str, Any]:
        t = self.transition
        return {
            "command": "promote",
            "timeframe": t.timeframe,
            "symbol": t.symbol,
            "model_id": t.model_id,
            "from_role": t.from_role,
            "to_role": t.to_role,
            "previous_champion": self.previous_champion,
            "actor": t.actor,
            "reason": t.reason,
            "version": t.version,
        }


def _gate(workspace: Workspace, request: PromoteRequest, say) -> dict[str, Any]:
    """Run the gates of the promotion; refuse it (nothing changed) when one fails."""
    from regimes.app.drift import promotion_checks

    registry = workspace.registry
    role = registry.role(request.timeframe, request.model_id)
    if role is None:
        raise BadInputError(
            f"model {request.model_id} is not in the registry for {request.timeframe}"
        )
    if request.to == "shadow" and role != "candidate":
        raise BadInputError(f"{request.model_id} is {role}: only a candidate can become a shadow")
    if role not in ("candidate", "shadow"):
        raise BadInputError(
            f"{request.model_id} is {role}: only a candidate or shadow can be promoted"
        )
    checks, report_id = promotion_checks(
        workspace, request.timeframe, request.model_id, request.to, say
    )
    failed = [c for c in checks if not c.passed]
    if failed:
        raise PromotionRefusedError(
            f"promotion of {request.model_id} to {request.to} refused by "
            f"{len(failed)} gate check(s): "
            + "; ".join(c.line() for c in failed)
            + f" (drift report {report_id}; --force --reason overrides)"
        )
    return {"drift_report": report_id, "checks": [c.as_dict() for c in checks]}


def promote(workspace: Workspace, request: PromoteRequest, say=silent) -> PromoteResult:
    """Promote in one commit. To champion: the previous champion of the scope is retired
    and kept as the last good champion for a rollback. To shadow: the model runs beside
    the champion (the live service's shadows) until it is promoted or retired."""

    if request.to not in PROMOTION_TARGETS:
        raise BadInputError(
            f"--to: expected one of {sorted(PROMOTION_TARGETS)}, got {request.to!r}"
        )
    evidence = dict(request.evidence)
    if request.force:
        evidence["forced"] = True
        evidence["gates"] = "skipped: --force"
    else:
        evidence.update(_gate(workspace, request, say))
    registry = workspace.registry
    current = registry.current(request.timeframe)
    row = current[current["model_id"] == request.model_id]
    symbol = row["symbol"].iloc[0] if len(row) and isinstance(row["symbol"].iloc[0], str) else None
    # Read with the same registry object: if the champion changes before the commit, the
    # promotion is refused as a conflict rather than replacing a model we did not name.
    previous = registry.champion(request.timeframe, symbol)
    if request.to == "shadow":
        transition = registry.set_role(
            request.timeframe,
            request.model_id,
            "shadow",
            actor=request.actor,
            reason=request.reason,
            evidence=evidence or None,
        )
    else:
        transition = registry.promote(
            request.timeframe,
            request.model_id,
            actor=request.actor,
            reason=request.reason,
            evidence=evidence or None,
        )
        _publish(workspace, transition)
    return PromoteResult(transition=transition, previous_champion=previous)


def _publish(workspace: Workspace, transition) -> None:
    """current_states follows the registry: the new champion's newest stored states
    replace the retired one's (which would otherwise stay until the next bar)."""
    from regimes.storage.recording import publish_champion

    publish_champion(
        workspace.state_store,
        workspace.engine,
        workspace.registry,
        transition.timeframe,
        transition.symbol,
    )


@dataclass(frozen=True)
class RollbackRequest:
    """Retire the champion of a scope and bring back the last good champion."""

    timeframe: str
    actor: str
    reason: str
    symbol: str | None = None
    evidence: dict[str, Any] = field(default_factory=dict)
    to: str | None = None  # an earlier good champion; default the newest


@dataclass(frozen=True)
class RollbackResult:
    transition: Any  # the restored champion's transition
    retired: str

    def summary(self) -> list[str]:
        t = self.transition
        scope = t.timeframe if t.symbol is None else f"{t.timeframe} {t.symbol}"
        return [
            f"rollback: {t.model_id} is the champion of {scope} again; {self.retired} retired "
            f"(registry version {t.version})"
        ]

    def as_dict(self) -> dict[str, Any]:
        t = self.transition
        return {
            "command": "rollback",
            "timeframe": t.timeframe,
            "symbol": t.symbol,
            "champion": t.model_id,
            "retired": self.retired,
            "actor": t.actor,
            "reason": t.reason,
            "version": t.version,
        }


def rollback(workspace: Workspace, request: RollbackRequest) -> RollbackResult:
    """One commit: the champion becomes retired, the last good champion champion again;
    a scope without an earlier champion is refused with one line."""
    registry = workspace.registry
    retired = registry.champion(request.timeframe, request.symbol)
    transition = registry.rollback(
        request.timeframe,
        actor=request.actor,
        reason=request.reason,
        symbol=request.symbol,
        evidence=request.evidence or None,
        to=request.to,
    )
    _publish(workspace, transition)
    return RollbackResult(transition=transition, retired=str(retired))
