"""Linear encoders: PCA on one feature row (plan 3.1) and on a window of rows (3.3).

z_t = W^T (x_t - mu), with W the top-d principal axes of the training windows. Axis
signs follow one convention (each axis's largest loading is positive) so a refit on the
same data gives the same axes; across retrains, latent anchoring aligns them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from regimes.model.encoders.base import Encoder


class PCAEncoder(Encoder):
    """PCA of scaled feature rows: z_t = W^T (x_t - mu).

    Parameters
    ----------
    latent_dim : int
        d, in [6, 16] and at most the number of input columns.
    window_length : int
        1 for plain rows; :class:`WindowPCAEncoder` sets it above 1.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 10))
    >>> Z = PCAEncoder(latent_dim=6).fit(X).transform(X)
    >>> Z.shape, bool(np.allclose(Z.mean(axis=0), 0))
    ((200, 6), True)
    """

    def __init__(self, latent_dim=8, window_length=1):
        self.latent_dim = latent_dim
        self.window_length = window_length

    def _fit(self, X: np.ndarray) -> None:
        self.mean_ = X.mean(axis=0)
        _, singular, axes = np.linalg.svd(X - self.mean_, full_matrices=False)
        # Sign convention: the largest |loading| of every axis is positive.
        signs = np.sign(axes[np.arange(len(axes)), np.argmax(np.abs(axes), axis=1)])
        signs[signs == 0] = 1.0
        axes = axes * signs[:, None]
        variance = singular**2 / max(X.shape[0] - 1, 1)
        self.components_ = axes[: self.latent_dim]
        self.explained_variance_ = variance[: self.latent_dim]
        total = variance.sum()
        self.explained_variance_ratio_all_ = variance / total if total > 0 else variance
        self.explained_variance_ratio_ = self.explained_variance_ratio_all_[: self.latent_dim]

    def _transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) @ self.components_.T

    def to_onnx(self, path: str | Path) -> Path:
        """ONNX graph ``z = (x - mu) @ W`` in float64 (input ``x``, output ``z``)."""
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        graph = helper.make_graph(
            nodes=[
                helper.make_node("Sub", ["x", "mean"], ["centered"]),
                helper.make_node("MatMul", ["centered", "projection"], ["z"]),
            ],
            name=type(self).__name__,
            inputs=[
                helper.make_tensor_value_info("x", TensorProto.DOUBLE, [None, self.n_features_in_])
            ],
            outputs=[
                helper.make_tensor_value_info("z", TensorProto.DOUBLE, [None, self.latent_dim])
            ],
            initializer=[
                numpy_helper.from_array(self.mean_.astype(np.float64), name="mean"),
                numpy_helper.from_array(
                    np.ascontiguousarray(self.components_.T.astype(np.float64)), name="projection"
                ),
            ],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8  # readable by every onnxruntime of the last years
        onnx.checker.check_model(model)
        partial = path.with_name(path.name + ".partial")
        onnx.save(model, str(partial))
        partial.replace(path)
        return path


class WindowPCAEncoder(PCAEncoder):
    """Temporal window encoder (plan 3.3): PCA of the flattened window x_{t-L+1..t}.

    Same as :class:`PCAEncoder` on windows of ``window_length`` rows (see
    :func:`regimes.model.encoders.base.make_windows`), so z_t sees the recent path, not one bar.
    """

    def __init__(self, latent_dim=8, window_length=8):
        self.latent_dim = latent_dim
        self.window_length = window_length
