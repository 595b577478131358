"""The one schema of a regime answer: what the engine emits for a bar, what the Delta state
store keeps, what ``current_states`` mirrors and what the HTTP API returns.

Every other description of these columns is derived from :data:`ANSWER_FIELDS`: the
engine's answer frame (:mod:`regimes.live.engine`), the Delta table's Arrow schema and
column tuples (:mod:`regimes.storage.state_store`) and the ``current_states`` table
(:mod:`regimes.data.sql`). The types are plain tags (see :data:`DTYPES`) so each layer
maps them to its own engine's types without this module importing any engine.

Examples
--------
>>> [field.name for field in answer_fields(d=1, K=2)][:6]
['symbol', 'ts', 'timeframe', 'model_id', 'z_00', 'p_00']
>>> field_named("state_id").dtype
'int64'
"""

from __future__ import annotations

from dataclasses import dataclass

UNKNOWN = -1
"""``state_id`` of a bar whose regime is not trusted (OOD, warming up, settling, stale, gap)."""

Z_WIDTH = 16
"""Latent columns a stored answer has room for, ``z_00..z_15`` (the largest d allowed)."""
P_WIDTH = 16
"""Posterior columns a stored answer has room for, ``p_00..p_15`` (the largest K allowed)."""

DTYPES = frozenset({"string", "timestamp", "int64", "float64", "bool"})
"""Type tags of :class:`AnswerField`: ``timestamp`` is a UTC-aware instant (microseconds
in storage), ``float64`` NaN and a null value mean the same "does not exist"."""


@dataclass(frozen=True, slots=True)
class AnswerField:
    """One column of a regime answer.

    Parameters
    ----------
    name : str
        Column name.
    dtype : str
        One of :data:`DTYPES`.
    nullable : bool
        Whether the value may be missing (e.g. the posterior of a bar still warming up).
    doc : str
        What the value means, in one sentence (becomes API documentation).
    stored : bool
        False for a field derived at read time from stored ones (``label``), which the
        engine's frame and the state store do not carry.
    """

    name: str
    dtype: str
    nullable: bool
    doc: str
    stored: bool = True

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise ValueError(
                f"AnswerField {self.name}: dtype {self.dtype!r} not in {sorted(DTYPES)}"
            )


def _latent(k: int) -> AnswerField:
    return AnswerField(
        f"z_{k:02d}", "float64", True, f"latent state vector z_t, component {k} (null past d)"
    )


def _posterior(k: int) -> AnswerField:
    return AnswerField(
        f"p_{k:02d}",
        "float64",
        True,
        f"filtered posterior P(state {k} | bars so far) (null past K)",
    )


KEY_FIELDS = (
    AnswerField("symbol", "string", False, "the instrument"),
    AnswerField("ts", "timestamp", False, "the bar's open time, UTC"),
    AnswerField("timeframe", "string", False, "the bar's timeframe (1m, 5m, 15m, 1h, 1d)"),
    AnswerField("model_id", "string", False, "the model that gave the answer"),
)
LATENT_FIELDS = tuple(_latent(k) for k in range(Z_WIDTH))
POSTERIOR_FIELDS = tuple(_posterior(k) for k in range(P_WIDTH))
STATE_FIELDS = (
    AnswerField(
        "state_id",
        "int64",
        False,
        f"the published regime after anti-chatter, {UNKNOWN} = UNKNOWN",
    ),
    AnswerField(
        "raw_state_id",
        "int64",
        False,
        f"argmax of the posterior before anti-chatter ({UNKNOWN}: none)",
    ),
    AnswerField("state_prob", "float64", True, "the largest posterior probability"),
    AnswerField("loglik", "float64", True, "log-likelihood of z_t given the bars before it"),
    AnswerField("entropy", "float64", True, "entropy of the posterior, in nats"),
    AnswerField("is_unknown", "bool", False, f"true exactly when state_id is {UNKNOWN}"),
    AnswerField("ood_reason", "string", True, "why the answer is UNKNOWN (null when known)"),
    AnswerField(
        "label", "string", True, "the model's name for state_id (null when UNKNOWN)", stored=False
    ),
)

ANSWER_FIELDS: tuple[AnswerField, ...] = (
    *KEY_FIELDS,
    *LATENT_FIELDS,
    *POSTERIOR_FIELDS,
    *STATE_FIELDS,
)
"""Every answer field, in column order."""

STORED_FIELDS: tuple[AnswerField, ...] = tuple(f for f in ANSWER_FIELDS if f.stored)
"""The fields of the engine's answer frame and of a stored state row."""

SCALAR_COLUMNS: tuple[str, ...] = tuple(
    f.name for f in STORED_FIELDS if f not in LATENT_FIELDS and f not in POSTERIOR_FIELDS
)
"""Stored columns besides ``z_00..`` and ``p_00..``: every answer carries all of them."""

CURRENT_STATE_COLUMNS: tuple[str, ...] = (
    "symbol",
    "timeframe",
    "model_id",
    "ts",
    "state_id",
    "state_prob",
    "is_unknown",
)
"""The answer columns ``current_states`` mirrors (newest answer per symbol and timeframe)."""

_BY_NAME = {f.name: f for f in ANSWER_FIELDS}


def field_named(name: str) -> AnswerField:
    """The :class:`AnswerField` called ``name`` (KeyError naming the known fields if none)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise KeyError(f"no answer field {name!r}; expected one of {list(_BY_NAME)}") from None


def answer_fields(d: int, K: int, *, stored_only: bool = True) -> tuple[AnswerField, ...]:
    """The fields of the answers of a model with latent dimension ``d`` and ``K`` states.

    Latent and posterior columns past ``d`` and ``K`` are left out; ``label`` only with
    ``stored_only=False``.
    """
    latent = {f.name for f in LATENT_FIELDS[d:]}
    posterior = {f.name for f in POSTERIOR_FIELDS[K:]}
    return tuple(
        f
        for f in ANSWER_FIELDS
        if f.name not in latent and f.name not in posterior and (f.stored or not stored_only)
    )
