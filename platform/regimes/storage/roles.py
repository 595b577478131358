"""The lifecycle of a model in the registry, with no I/O: roles, allowed transitions,
the registry's state replayed from its events (each scope's champion, shadows and last
good champions), transition rows and the one-line conflict messages."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from regimes.errors import BadInputError
from regimes.paths import check_model_id, check_symbol, check_timeframe_name

ROLES = ("candidate", "shadow", "champion", "retired")


ALLOWED_TRANSITIONS = frozenset(
    {
        (None, "candidate"),  # register
        ("candidate", "shadow"),  # set_role
        ("shadow", "candidate"),
        ("retired", "candidate"),
        ("candidate", "retired"),
        ("shadow", "retired"),
        ("candidate", "champion"),  # promote
        ("shadow", "champion"),
        ("champion", "retired"),  # promote (the previous champion) or rollback
        ("retired", "champion"),  # rollback (the last good champion)
    }
)
"""Every (from_role, to_role) the registry records; ``None`` is "not registered"."""


SET_ROLE_TRANSITIONS = frozenset(
    pair for pair in ALLOWED_TRANSITIONS if None not in pair and "champion" not in pair
)
"""What :meth:`Registry.set_role` may do: a champion changes only by promote or rollback."""


OPERATIONS = frozenset({"register", "set_role", "promote", "rollback"})


@dataclass(frozen=True)
class Transition:
    """One model's change of role, as committed."""

    timeframe: str
    symbol: str | None
    model_id: str
    from_role: str | None
    to_role: str
    actor: str
    reason: str
    evidence: dict[str, Any]
    event_ts: pd.Timestamp
    version: int


@dataclass
class _Scope:
    champion: str | None = None
    last_good: list[str] = field(default_factory=list)  # earlier champions, newest last


@dataclass(frozen=True)
class _Snapshot:
    """The registry at one version: its events and the state they replay to."""

    version: int | None
    events: pd.DataFrame
    models: dict[tuple[str, str], dict[str, Any]]
    scopes: dict[tuple[str, str | None], _Scope]

    @classmethod
    def replay(cls, version: int | None, events: pd.DataFrame) -> _Snapshot:
        models: dict[tuple[str, str], dict[str, Any]] = {}
        scopes: dict[tuple[str, str | None], _Scope] = {}
        for event in events.to_dict("records"):
            key = (event["timeframe"], event["model_id"])
            scope = scopes.setdefault((event["timeframe"], event["symbol"]), _Scope())
            registered = models.get(key, {}).get("artifact_path", event["artifact_path"])
            models[key] = {**event, "artifact_path": registered}
            if event["model_id"] in scope.last_good:
                scope.last_good.remove(event["model_id"])
            if event["to_role"] == "champion":
                scope.champion = event["model_id"]
            elif event["from_role"] == "champion":
                scope.champion = None
                if event["operation"] == "promote":  # a rolled-back champion is not "good"
                    scope.last_good.append(event["model_id"])
        return cls(version, events, models, scopes)

    def scope(self, timeframe: str, symbol: str | None) -> _Scope:
        return self.scopes.get((timeframe, symbol), _Scope())

    def model(self, timeframe: str, model_id: str) -> dict[str, Any] | None:
        return self.models.get((timeframe, model_id))

    def role(self, timeframe: str, model_id: str) -> str | None:
        model = self.model(timeframe, model_id)
        return None if model is None else model["to_role"]


@dataclass(frozen=True)
class _Note:
    """Who writes what and why: checked once, stamped on every row of the commit."""

    operation: str
    actor: str
    reason: str
    evidence: Mapping[str, Any] | None
    event_ts: datetime = field(default_factory=lambda: datetime.now(UTC))
    evidence_json: str = field(init=False)

    def __post_init__(self) -> None:
        for name in ("actor", "reason"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise BadInputError(f"{name}: expected a non-empty string, got {value!r}")
        # frozen: the checked JSON is set once, here
        object.__setattr__(self, "evidence_json", _evidence_json(self.evidence))

    def row(
        self,
        timeframe: str,
        symbol: str | None,
        model_id: str,
        from_role: str | None,
        to_role: str,
        artifact_path: str | None = None,
    ) -> dict[str, Any]:
        return {
            "version": -1,  # set when the commit version is known
            "event_ts": self.event_ts,
            "timeframe": timeframe,
            "symbol": symbol,
            "model_id": model_id,
            "operation": self.operation,
            "from_role": from_role,
            "to_role": to_role,
            "actor": self.actor,
            "reason": self.reason,
            "evidence": self.evidence_json,
            "artifact_path": artifact_path,
        }


def _evidence_json(evidence: Mapping[str, Any] | None) -> str:
    if evidence is None:
        return "{}"
    if not isinstance(evidence, Mapping):
        raise BadInputError(
            f"evidence: expected a JSON-serialisable dict, got {type(evidence).__name__}"
        )
    try:
        return json.dumps(dict(evidence), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"evidence: not JSON-serialisable: {exc}") from None


def _transition(row: dict[str, Any]) -> Transition:
    return Transition(
        timeframe=row["timeframe"],
        symbol=row["symbol"],
        model_id=row["model_id"],
        from_role=row["from_role"],
        to_role=row["to_role"],
        actor=row["actor"],
        reason=row["reason"],
        evidence=json.loads(row["evidence"]),
        event_ts=pd.Timestamp(row["event_ts"]),
        version=row["version"],
    )


def _check_scope(timeframe: str, symbol: str | None) -> tuple[str, str | None]:
    return check_timeframe_name(timeframe), None if symbol is None else check_symbol(symbol)


def _scope_name(timeframe: str, symbol: str | None) -> str:
    return timeframe if symbol is None else f"{timeframe}/{symbol}"


def _seen_role(view: _Snapshot, latest: _Snapshot, timeframe: str, model_id: str) -> str | None:
    """The model's role in ``view``; a model ``view`` does not know (registered elsewhere
    since, e.g. by a training worker) was not seen, so its newest role stands."""
    if view.model(timeframe, model_id) is None:
        return latest.role(timeframe, model_id)
    return view.role(timeframe, model_id)


def _registered(snapshot: _Snapshot, timeframe: str, model_id: str, root: str) -> dict[str, Any]:
    model = snapshot.model(timeframe, check_model_id(model_id))
    if model is None:
        raise BadInputError(
            f"model {model_id} ({timeframe}) is not in the registry at {root}; register it first"
        )
    return model


_VERBS = {
    "register": "registered",
    "set_role": "set",
    "promote": "promoted",
    "rollback": "rolled back",
}


def _conflict(
    root: str,
    base: _Snapshot,
    now: _Snapshot,
    model: tuple[str, str] | None,
    scope: tuple[str, str | None] | None,
) -> str:
    """One line naming the newest change, since ``base``, to the model or its scope."""
    if scope is None and model is not None:
        registered = now.model(*model)
        scope = (model[0], None if registered is None else registered["symbol"])
    since = -1 if base.version is None else base.version
    events = now.events[now.events["version"] > since]
    in_scope = (events["timeframe"] == scope[0]) & (events["symbol"].fillna("") == (scope[1] or ""))
    if model is not None:
        in_scope |= (events["timeframe"] == model[0]) & (events["model_id"] == model[1])
    changed = events[in_scope]
    name = _scope_name(*scope)
    if changed.empty:  # cannot happen: a watched value moved, so an event in scope did
        what = f"{name} changed"
    else:
        event = changed.iloc[-1]
        champion = now.scope(*scope).champion
        if champion is not None and changed["to_role"].eq("champion").any():
            last = changed[changed["to_role"] == "champion"].iloc[-1]
            what = f"{name} champion is now {champion}"
            event = last
        else:
            what = f"{name} model {event['model_id']} is now {event['to_role']}"
        what += (
            f" ({_VERBS[event['operation']]} by {_one_line(event['actor'])} in version "
            f"{event['version']}: {_one_line(event['reason'])})"
        )
    base_name = "no registry" if base.version is None else f"version {base.version}"
    return (
        f"registry at {root} changed since {base_name}: {what}; nothing was written, "
        "re-read and retry"
    )


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())
