"""The encoder contract (plan 3.2): scaled features in, latent state vectors z_t out.

Every encoder is a scikit-learn estimator: ``__init__`` stores its keyword arguments,
``fit`` validates, learns, sets attributes ending in ``_`` and returns ``self``;
``transform`` starts with ``check_is_fitted``. Input is a 2-D array of *windows*:
row i holds the ``window_length`` consecutive feature rows ending at bar i, flattened
oldest first (``window_length = 1`` is a plain feature row). :func:`make_windows` builds
them per symbol without crossing gaps. Output is ``(n, d)``.

Every fitted encoder knows the feature names it was fitted on; :meth:`Encoder.load`
refuses an artifact saved for another feature list or window, naming the difference.
"""

from __future__ import annotations

import hashlib
import pickle
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted

from regimes.config.spec import LATENT_DIM_BOUNDS
from regimes.errors import ArtifactIntegrityError, BadInputError

ARTIFACT_FORMAT = 1


def check_latent_dim(d: int, n_inputs: int, *, what: str = "d") -> int:
    """Refuse a latent dimension outside [6, 16] or above the number of inputs."""
    low, high = LATENT_DIM_BOUNDS
    if not isinstance(d, int | np.integer) or not low <= d <= high:
        raise BadInputError(f"{what}: expected an integer in [{low}, {high}], got {d!r}")
    if d > n_inputs:
        raise BadInputError(
            f"{what}: {d} exceeds the {n_inputs} input column(s) (selected features x "
            "window length); choose a smaller d or more features"
        )
    return int(d)


def check_finite(X: np.ndarray, what: str) -> np.ndarray:
    """A float64 2-D copy of ``X``; NaN/inf are refused, naming the first bad row."""
    array = np.asarray(X, dtype=np.float64)
    if array.ndim != 2:
        raise BadInputError(f"{what}: expected a 2-D array, got shape {array.shape}")
    finite = np.isfinite(array)
    if not finite.all():
        row, column = (int(v[0]) for v in np.nonzero(~finite))
        raise BadInputError(
            f"{what}: NaN or inf at row {row}, column {column} "
            f"({int((~finite).any(axis=1).sum())} row(s) affected); warm-up and gap rows "
            "must be removed (they are UNKNOWN), never encoded"
        )
    return array


def make_windows(
    values: np.ndarray, window_length: int, usable: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``window_length`` consecutive rows of one symbol's feature matrix.

    ``values`` is (n, F), oldest first; ``usable`` marks rows that may enter a window
    (neither warm-up nor gap). Returns the flattened windows (m, L*F) and the row index
    each window ends at. A window never spans an unusable row.
    """
    values = np.asarray(values, dtype=np.float64)
    n, width = values.shape
    L = int(window_length)
    if L < 1:
        raise BadInputError(f"window_length: expected >= 1, got {window_length}")
    ok = np.ones(n, dtype=bool) if usable is None else np.asarray(usable, dtype=bool)
    # run[i]: how many consecutive usable rows end at row i.
    last_break = np.maximum.accumulate(np.where(~ok, np.arange(n), -1))
    run = np.where(ok, np.arange(n) - last_break, 0)
    ends = np.flatnonzero(run >= L)
    if len(ends) == 0:
        return np.empty((0, L * width)), ends
    view = np.lib.stride_tricks.sliding_window_view(values, L, axis=0)  # (n-L+1, F, L)
    windows = view[ends - L + 1].transpose(0, 2, 1).reshape(len(ends), L * width)
    return np.ascontiguousarray(windows), ends


class Encoder(TransformerMixin, BaseEstimator, ABC):
    """Base class of the encoders: a fitted map from windows to z_t (see module doc).

    Subclasses implement ``_fit(X)`` and ``_transform(X)`` on validated float arrays,
    and ``to_onnx``; ``latent_dim`` and ``window_length`` are constructor parameters of
    every encoder.
    """

    latent_dim: int
    window_length: int

    def fit(self, X, y=None, feature_names: Sequence[str] | None = None):
        """Fit on windows ``X`` (n, window_length * n_features); returns ``self``."""
        X = check_finite(X, f"{type(self).__name__}.fit")
        L = int(self.window_length)
        if L < 1:
            raise BadInputError(f"window_length: expected >= 1, got {self.window_length}")
        if X.shape[1] % L:
            raise BadInputError(
                f"{type(self).__name__}.fit: {X.shape[1]} columns is not a multiple of "
                f"window_length {L}"
            )
        n_features = X.shape[1] // L
        names = (
            tuple(feature_names)
            if feature_names is not None
            else tuple(f"x{i}" for i in range(n_features))
        )
        if len(names) != n_features:
            raise BadInputError(
                f"{type(self).__name__}.fit: {len(names)} feature names for {n_features} "
                "features per window row"
            )
        d = check_latent_dim(self.latent_dim, X.shape[1], what="latent_dim")
        if X.shape[0] <= d:
            raise BadInputError(
                f"{type(self).__name__}.fit: {X.shape[0]} window(s) of length {L}; need more "
                f"than d = {d}"
            )
        constant = np.flatnonzero(np.ptp(X, axis=0) == 0)
        if len(constant) == X.shape[1]:
            raise BadInputError(f"{type(self).__name__}.fit: every input column is constant")
        self.feature_names_in_ = names
        self.n_features_in_ = X.shape[1]
        self._fit(X)
        return self

    def transform(self, X) -> np.ndarray:
        """z_t for each window: (n, d)."""
        check_is_fitted(self)
        X = check_finite(X, f"{type(self).__name__}.transform")
        if X.shape[1] != self.n_features_in_:
            raise BadInputError(
                f"{type(self).__name__}.transform: {X.shape[1]} columns, fitted on "
                f"{self.n_features_in_} ({len(self.feature_names_in_)} features x window "
                f"{self.window_length})"
            )
        Z = self._transform(X)
        rotation = getattr(self, "anchor_rotation_", None)
        return Z if rotation is None else Z @ rotation

    def transform_unanchored(self, X) -> np.ndarray:
        """z_t before any latent anchoring (what anchoring itself is fitted on)."""
        check_is_fitted(self)
        return self._transform(check_finite(X, f"{type(self).__name__}.transform"))

    def export_onnx(self, path: str | Path) -> Path:
        """:meth:`to_onnx`, with the anchoring rotation appended when there is one."""
        path = self.to_onnx(path)
        rotation = getattr(self, "anchor_rotation_", None)
        if rotation is not None:
            append_rotation(path, rotation)
        return path

    @property
    def d(self) -> int:
        return int(self.latent_dim)

    @abstractmethod
    def _fit(self, X: np.ndarray) -> None: ...

    @abstractmethod
    def _transform(self, X: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def to_onnx(self, path: str | Path) -> Path:
        """Export the fitted transform to ONNX (input ``x``: (batch, n_features_in_))."""

    # -- serialization (plan 3.5)

    def save(self, path: str | Path) -> Path:
        """Pickle the fitted encoder with what is needed to refuse a mismatched load."""
        check_is_fitted(self)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": ARTIFACT_FORMAT,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "feature_names": list(self.feature_names_in_),
            "window_length": int(self.window_length),
            "latent_dim": int(self.latent_dim),
            "encoder": self,
        }
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        partial.replace(path)
        return path

    @classmethod
    def load(
        cls,
        path: str | Path,
        feature_names: Sequence[str] | None = None,
        window_length: int | None = None,
    ) -> Encoder:
        """Load a saved encoder; refuses another class, feature list or window length."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactIntegrityError(f"{path}: encoder file not found")
        try:
            payload: dict[str, Any] = pickle.loads(path.read_bytes())
        except Exception as exc:  # a truncated or foreign file
            raise ArtifactIntegrityError(
                f"{path}: not a readable encoder artifact ({exc})"
            ) from None
        if not isinstance(payload, dict) or payload.get("format") != ARTIFACT_FORMAT:
            raise ArtifactIntegrityError(
                f"{path}: not an encoder artifact of format {ARTIFACT_FORMAT}"
            )
        encoder = payload["encoder"]
        if not isinstance(encoder, cls):
            raise ArtifactIntegrityError(
                f"{path}: holds a {payload['class']}, expected a {cls.__qualname__}"
            )
        if feature_names is not None and list(feature_names) != payload["feature_names"]:
            saved, wanted = payload["feature_names"], list(feature_names)
            missing = [n for n in saved if n not in wanted]
            extra = [n for n in wanted if n not in saved]
            detail = (
                f"missing {missing}, unexpected {extra}" if missing or extra else "another order"
            )
            raise ArtifactIntegrityError(
                f"{path}: encoder was saved for features {saved}, asked for {wanted} ({detail})"
            )
        if window_length is not None and int(window_length) != payload["window_length"]:
            raise ArtifactIntegrityError(
                f"{path}: encoder was saved for window_length {payload['window_length']}, "
                f"asked for {window_length}"
            )
        return encoder


def append_rotation(path: str | Path, rotation: np.ndarray) -> Path:
    """Append ``z <- z @ rotation`` to an ONNX model whose single output is ``z``."""
    import onnx
    from onnx import helper, numpy_helper

    path = Path(path)
    model = onnx.load(str(path))
    graph = model.graph
    output = graph.output[0]
    elem_type = output.type.tensor_type.elem_type
    dtype = np.float32 if elem_type == onnx.TensorProto.FLOAT else np.float64
    raw_name = output.name + "_unanchored"
    for node in graph.node:
        node.output[:] = [raw_name if name == output.name else name for name in node.output]
    graph.initializer.append(
        numpy_helper.from_array(np.asarray(rotation, dtype=dtype), name="anchor_rotation")
    )
    graph.node.append(helper.make_node("MatMul", [raw_name, "anchor_rotation"], [output.name]))
    onnx.checker.check_model(model)
    partial = path.with_name(path.name + ".partial")
    onnx.save(model, str(partial))
    partial.replace(path)
    return path


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
