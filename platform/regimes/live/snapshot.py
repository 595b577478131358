"""Exact restarts of an engine: its whole state as a flat dict of arrays, written to and
read from an ``.npz`` file atomically (no pickle).

A snapshot holds the feature buffers, the filtered posterior (alpha), the encoder windows, the
anti-chatter and OOD states and the counters. It belongs to one model: restoring it
into an engine of another model_id, or with windows of other lengths, is refused, and a
snapshot that fails any check changes nothing.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from regimes.errors import BadInputError
from regimes.features.online import OnlineFeatureBuffer
from regimes.live import antichatter, ood

if TYPE_CHECKING:
    from regimes.live.engine import InferenceEngine

SNAPSHOT_VERSION = 4  # 4: the filter state is alpha in probability space (was log alpha)
# 3: the feature buffer holds only the features the model reads. A version 3 snapshot is
# restored with its log alpha turned into alpha (exp), so an upgrade restarts warm.
READABLE_VERSIONS = (3, 4)


def take_snapshot(engine: InferenceEngine) -> dict[str, np.ndarray]:
    """The whole state of ``engine`` as a flat dict of arrays (copies)."""
    state = {f"buffer/{k}": v for k, v in engine.buffer.snapshot().items()}
    state.update({f"chatter/{k}": v for k, v in engine._chatter.snapshot().items()})
    ood_state = engine._ood.snapshot()
    state.update(
        {
            "engine/version": np.array(SNAPSHOT_VERSION),
            "engine/model_id": np.array(engine.model_id),
            "engine/symbols": np.array(engine.symbols, dtype=str),
            "engine/posterior": engine._rows.posterior.copy(),
            "engine/window": engine._rows.window.copy(),
            "engine/run": engine._rows.run.copy(),
            "engine/counts": np.array(json.dumps(engine._counts)),
            "ood/entropy": ood_state["entropy"],
            "ood/states": ood_state["states"],
            "ood/seen": ood_state["seen"],
            "ood/moments": ood_state["moments"],
            "ood/counters": np.array(json.dumps(ood_state["counters"])),
        }
    )
    return state


def restore_snapshot(engine: InferenceEngine, state: dict[str, np.ndarray]) -> None:
    """Load ``state`` (from :func:`take_snapshot` of an engine of the same model) into
    ``engine``; every check runs before anything of ``engine`` changes."""
    _check_header(engine, state)

    def part(prefix: str) -> dict[str, np.ndarray]:
        return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}

    symbols = [str(s) for s in state["engine/symbols"]]
    _check_shapes(engine, state, len(symbols))
    # Everything into locals first: a snapshot that fails any check changes nothing.
    model = engine.model
    buffer = OnlineFeatureBuffer.restore(part("buffer/"), model.feature_spec, model.session)
    if list(buffer.symbols) != symbols:
        raise BadInputError("engine snapshot: feature buffer and engine symbols differ")
    if (buffer.names, buffer.selected_from) != (engine.buffer.names, engine.buffer.selected_from):
        raise BadInputError(
            f"engine snapshot: its feature buffer computes {list(buffer.names)}, this engine "
            f"{list(engine.buffer.names)}"
        )
    chatter = antichatter.AntiChatterState.restore(part("chatter/"))
    ood_state = part("ood/")
    try:
        ood_state["counters"] = json.loads(str(ood_state["counters"]))
        counts = {**engine.empty_counts(), **json.loads(str(state["engine/counts"]))}
    except json.JSONDecodeError as exc:
        raise BadInputError(f"engine snapshot: unreadable counters ({exc})") from None
    health = ood.OODState.restore(ood_state)
    if any(len(getattr(chatter, f)) != len(symbols) for f in antichatter.FIELDS):
        raise BadInputError("engine snapshot: anti-chatter arrays do not fit the symbols")
    engine.buffer = buffer
    engine._rows = type(engine._rows)(
        _posterior(state),
        np.array(state["engine/window"], dtype=float),
        np.array(state["engine/run"], dtype=np.int64),
    )
    engine._chatter = chatter
    engine._ood = health
    engine._counts = counts


def _check_header(engine: InferenceEngine, state: dict[str, np.ndarray]) -> None:
    required = ("engine/version", "engine/model_id", "engine/symbols", "engine/run")
    missing = [key for key in required if key not in state]
    if missing:
        raise BadInputError(f"engine snapshot is incomplete: no {missing}")
    if int(state["engine/version"]) not in READABLE_VERSIONS:
        raise BadInputError(
            f"engine snapshot version {int(state['engine/version'])} is not supported"
        )
    if str(state["engine/model_id"]) != engine.model_id:
        raise BadInputError(
            f"engine snapshot is of model {state['engine/model_id']}, this engine runs "
            f"{engine.model_id}"
        )


def _check_shapes(engine: InferenceEngine, state: dict[str, np.ndarray], n: int) -> None:
    W, V = engine.settings.majority_window, engine.ood_settings.window
    shapes = {
        _posterior_key(state): (n, engine.K),
        "engine/window": (n, engine.L, engine.F),
        "engine/run": (n,),
        "chatter/history": (n, W),
        "ood/entropy": (n, V),
        "ood/states": (n, V),
        "ood/seen": (n,),
    }
    for key, shape in shapes.items():
        if key not in state or np.shape(state[key]) != shape:
            got = np.shape(state[key]) if key in state else "missing"
            raise BadInputError(
                f"engine snapshot {key!r}: expected shape {shape}, got {got} (the "
                "anti-chatter and OOD windows must match the model's settings)"
            )
    for key in ("engine/counts", "ood/counters"):
        if key not in state:
            raise BadInputError(f"engine snapshot is incomplete: no {key!r}")


def write_snapshot(state: dict[str, np.ndarray], path: str | Path) -> Path:
    """Write ``state`` to an ``.npz`` file atomically (a reader never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    buffer = io.BytesIO()
    np.savez(buffer, **state)
    partial.write_bytes(buffer.getvalue())
    partial.replace(path)
    return path


def read_snapshot(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays of a snapshot file written by :func:`write_snapshot` (no pickle)."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"{path}: no engine snapshot here")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {key: data[key] for key in data.files}
    except (OSError, ValueError) as exc:
        raise BadInputError(f"{path}: not an engine snapshot ({exc})") from None


def _posterior_key(state: dict[str, np.ndarray]) -> str:
    return "engine/posterior" if int(state["engine/version"]) >= 4 else "engine/log_alpha"


def _posterior(state: dict[str, np.ndarray]) -> np.ndarray:
    """The filter state as alpha; a version 3 snapshot holds log alpha."""
    values = np.array(state[_posterior_key(state)], dtype=float)
    return values if int(state["engine/version"]) >= 4 else np.exp(values)
