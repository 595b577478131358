"""Temporal variational autoencoder (plan 3.4): a window of scaled features -> z_t.

An MLP encoder maps a flattened window (``window_length`` rows of scaled features,
oldest first) to a diagonal Gaussian posterior q(z | window) = N(mu, diag(exp(logvar)))
over d = ``latent_dim`` dimensions; an MLP decoder reconstructs the window from a sample
of it. The state vector is the posterior mean, z_t = mu: deterministic, and the path
exported to ONNX.

The objective, per input value, is the beta-VAE loss::

    loss = MSE(window, reconstruction) + kl_weight * KL(q || N(0, I)) / n_inputs

where MSE is averaged over the n_inputs = window_length * n_features values of a window
and KL is summed over the d latent dimensions (nats per window). Dividing KL by n_inputs
makes ``kl_weight`` the beta of the textbook objective (sum of squared errors + beta * KL),
so the same beta means the same thing whatever the window width.

This is the only module of the project that imports torch (STYLE.md, rule 3). The fitted
encoder keeps its weights as NumPy arrays, so it pickles without torch objects and
:meth:`Encoder.save` / :meth:`Encoder.load` work as for every other encoder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted
from torch import nn

from regimes.errors import BadInputError, TrainingError
from regimes.model.encoders.base import Encoder

logger = logging.getLogger(__name__)

HISTORY_KEYS = (
    "epoch",
    "train_loss",
    "train_recon",
    "train_kl",
    "val_loss",
    "val_recon",
    "val_kl",
)
SCAN_COLUMNS = ("d", "val_recon_mse", "val_kl", "val_loss", "epochs", "seconds")
ONNX_OPSET = 18  # pinned so an artifact does not change with the torch version that wrote it

# exp(10) as a variance is far beyond anything scaled features need; the bound keeps one
# bad batch from overflowing exp() into inf and the loss into NaN.
_LOGVAR_BOUND = 10.0
_CHUNK_ROWS = 65_536  # rows per forward pass in transform/validation: bounded memory
_FLOAT32_MAX = float(np.finfo(np.float32).max)


class TrainingDivergedError(TrainingError):
    """Training produced a non-finite loss; the message names the epoch and batch."""


class _ReproducibleTorch:
    """Single intra-op thread and deterministic algorithms while any VAE work runs.

    One thread makes the float arithmetic (and so fits and z_t) bit-reproducible
    whatever the caller's thread setting, and keeps a fit from competing with the other
    Ray tasks on the node for cores. Both settings are process-wide in torch, so nested
    or concurrent scopes are reference counted: the first to enter saves the caller's
    settings and the last to leave restores them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: tuple[int, bool, bool] | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if self._depth == 0:
                self._saved = (
                    torch.get_num_threads(),
                    torch.are_deterministic_algorithms_enabled(),
                    torch.is_deterministic_algorithms_warn_only_enabled(),
                )
                torch.set_num_threads(1)
                torch.use_deterministic_algorithms(True)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._saved is not None:
                    threads, deterministic, warn_only = self._saved
                    torch.set_num_threads(threads)
                    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
                    self._saved = None


_reproducible_torch = _ReproducibleTorch()


def _mlp(sizes: Sequence[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ELU()]
    return layers


class _VAENetwork(nn.Module):
    """Encoder trunk, mean and log-variance heads, and decoder."""

    def __init__(self, n_inputs: int, hidden: Sequence[int], latent_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(*_mlp((n_inputs, *hidden)))
        self.mu = nn.Linear(hidden[-1], latent_dim)
        self.logvar = nn.Linear(hidden[-1], latent_dim)
        self.decoder = nn.Sequential(
            *_mlp((latent_dim, *reversed(hidden))), nn.Linear(hidden[0], n_inputs)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encoder(x)
        return self.mu(h), self.logvar(h).clamp(-_LOGVAR_BOUND, _LOGVAR_BOUND)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]


class _MeanPath(nn.Module):
    """What is exported to ONNX: window -> z_t = mu, nothing else."""

    def __init__(self, network: _VAENetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.mu(self.network.encoder(x))


def _kl_per_window(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over d, one value per row."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=1)


def _time_split(n_rows: int, validation_fraction: float, purge: int) -> tuple[int, int]:
    """``(train_end, validation_start)``: train on ``[0, train_end)``, validate on the tail.

    ``purge`` windows just before the validation block are left out of both sets: they
    share bars with the first validation windows, and training on them would leak.
    """
    n_validation = max(1, math.ceil(n_rows * validation_fraction))
    validation_start = n_rows - n_validation
    train_end = validation_start - purge
    if train_end < 1:
        raise BadInputError(
            f"TemporalVAEEncoder.fit: {n_rows} window(s) leave no training rows after the "
            f"last {n_validation} for validation (validation_fraction={validation_fraction}) "
            f"and a purge of {purge} window(s); supply more windows or lower "
            "validation_fraction"
        )
    return train_end, validation_start


class TemporalVAEEncoder(Encoder):
    """Variational autoencoder over windows of scaled features; z_t is the posterior mean.

    Parameters
    ----------
    latent_dim : int, default=8
        d, the dimension of z_t; must lie in [6, 16].
    window_length : int, default=8
        Bars per window; the input has ``window_length * n_features`` columns.
    hidden : tuple of int, default=(64, 32)
        Widths of the encoder's hidden layers (ELU activations); the decoder mirrors
        them.
    kl_weight : float, default=0.1
        beta, the weight of the KL term (see the module docstring for the scale).
    learning_rate : float, default=1e-3
        Adam step size.
    batch_size : int, default=256
        Training windows per gradient step.
    max_epochs : int, default=60
        Upper bound on passes over the training windows.
    patience : int, default=6
        Stop after this many epochs without a validation-loss improvement of more than
        ``tol``; the weights of the best epoch are kept.
    validation_fraction : float, default=0.2
        Share of windows, taken from the end of ``X``, used for early stopping. ``X``
        must be in time order (sorted by the bar each window ends at) so that the tail
        is the most recent period; the ``window_length - 1`` windows before the tail
        are used for neither set, because they share bars with it.
    tol : float, default=1e-4
        Smallest decrease of the validation loss that counts as an improvement.
    weight_decay : float, default=0.0
        L2 penalty passed to Adam.
    random_state : int, RandomState instance or None, default=0
        Seeds weight initialisation, batch order and the reparameterisation noise. With
        an int, two fits on the same data give bit-identical weights and z_t.

    Attributes
    ----------
    feature_names_in_ : tuple of str
        Feature names of one window row (set by :meth:`Encoder.fit`).
    n_features_in_ : int
        Input columns, ``window_length * len(feature_names_in_)``.
    network_state_ : dict of str to ndarray
        The fitted weights (float32), by torch parameter name.
    hidden_sizes_ : tuple of int
        The hidden widths the weights were fitted with.
    history_ : dict of str to list
        Per-epoch ``epoch``, ``train_loss``, ``train_recon``, ``train_kl``,
        ``val_loss``, ``val_recon`` and ``val_kl``. Training values average the batches
        of the epoch (with sampled z); validation values decode z = mu, so they do not
        depend on noise and measure what z_t retains. ``*_recon`` is the MSE per input
        value, ``*_kl`` is nats per window.
    best_epoch_ : int
        The (1-based) epoch whose weights were kept.
    n_epochs_ : int
        Epochs run before early stopping or ``max_epochs``.
    n_train_ : int
        Training windows (the head of ``X``).
    validation_start_ : int
        Row of ``X`` where the validation tail begins.
    fit_seconds_ : float
        Wall-clock duration of the fit.

    See Also
    --------
    vae_latent_dim_scan : fit one encoder per candidate d and compare validation losses.

    Notes
    -----
    Fitting and transforming run on one CPU thread with deterministic algorithms; the
    caller's torch settings are restored afterwards. torch's global random state is not
    touched.

    Examples
    --------
    >>> import numpy as np
    >>> from regimes.model.encoders.vae import TemporalVAEEncoder
    >>> X = np.random.default_rng(0).normal(size=(500, 4 * 3))
    >>> encoder = TemporalVAEEncoder(latent_dim=6, window_length=4, max_epochs=3)
    >>> encoder.fit(X).transform(X).shape
    (500, 6)
    """

    def __init__(
        self,
        latent_dim: int = 8,
        window_length: int = 8,
        hidden: tuple[int, ...] = (64, 32),
        kl_weight: float = 0.1,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        max_epochs: int = 60,
        patience: int = 6,
        validation_fraction: float = 0.2,
        tol: float = 1e-4,
        weight_decay: float = 0.0,
        random_state: int | np.random.RandomState | None = 0,
    ) -> None:
        self.latent_dim = latent_dim
        self.window_length = window_length
        self.hidden = hidden
        self.kl_weight = kl_weight
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.tol = tol
        self.weight_decay = weight_decay
        self.random_state = random_state

    # -- fitting

    def _check_params(self) -> tuple[int, ...]:
        """Validate the hyper-parameters (fit time, not __init__); returns ``hidden``."""
        hidden = self.hidden
        if isinstance(hidden, Integral):  # hidden=64 is a plausible slip for (64,)
            hidden = (hidden,)
        if (
            not isinstance(hidden, Sequence)
            or isinstance(hidden, str)
            or not hidden
            or not all(isinstance(h, Integral) and h >= 1 for h in hidden)
        ):
            raise BadInputError(
                f"hidden: expected a non-empty tuple of positive integers, got {self.hidden!r}"
            )
        for name in ("batch_size", "max_epochs", "patience"):
            value = getattr(self, name)
            if not isinstance(value, Integral) or value < 1:
                raise BadInputError(f"{name}: expected a positive integer, got {value!r}")
        for name in ("kl_weight", "tol", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, Real) or not 0 <= value < math.inf:
                raise BadInputError(f"{name}: expected a finite number >= 0, got {value!r}")
        rate = self.learning_rate
        if not isinstance(rate, Real) or not 0 < rate < math.inf:
            raise BadInputError(f"learning_rate: expected a finite number > 0, got {rate!r}")
        fraction = self.validation_fraction
        if not isinstance(fraction, Real) or not 0 < fraction < 1:
            raise BadInputError(
                f"validation_fraction: expected a number strictly between 0 and 1, got {fraction!r}"
            )
        return tuple(int(h) for h in hidden)

    def _fit(self, X: np.ndarray) -> None:
        hidden = self._check_params()
        started = time.perf_counter()
        n_rows, n_inputs = X.shape
        d = int(self.latent_dim)
        train_end, validation_start = _time_split(
            n_rows, float(self.validation_fraction), int(self.window_length) - 1
        )
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        kl_scale = float(self.kl_weight) / n_inputs
        batch_size = int(self.batch_size)

        with _reproducible_torch():
            # fork_rng: seed the default initialisers without moving the caller's RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                network = _VAENetwork(n_inputs, hidden, d)
            generator = torch.Generator().manual_seed(seed)
            optimizer = torch.optim.Adam(
                network.parameters(),
                lr=float(self.learning_rate),
                weight_decay=float(self.weight_decay),
            )
            values = torch.from_numpy(X.astype(np.float32))
            x_train, x_validation = values[:train_end], values[validation_start:]

            history: dict[str, list[float]] = {key: [] for key in HISTORY_KEYS}
            best_loss, best_epoch, best_state = math.inf, 0, None
            epochs_without_improvement = 0
            for epoch in range(1, int(self.max_epochs) + 1):
                network.train()
                order = torch.randperm(train_end, generator=generator)
                totals = np.zeros(3)
                for batch, start in enumerate(range(0, train_end, batch_size), start=1):
                    x = x_train[order[start : start + batch_size]]
                    mu, logvar = network.encode(x)
                    noise = torch.randn(mu.shape, generator=generator)
                    reconstruction = network.decoder(mu + torch.exp(0.5 * logvar) * noise)
                    recon = (reconstruction - x).square().mean()
                    kl = _kl_per_window(mu, logvar).mean()
                    loss = recon + kl_scale * kl
                    loss_value = loss.item()
                    if not math.isfinite(loss_value):
                        raise TrainingDivergedError(
                            f"TemporalVAEEncoder.fit: training loss became {loss_value} at "
                            f"epoch {epoch}, batch {batch}; lower learning_rate (now "
                            f"{self.learning_rate}) or check that the features are scaled"
                        )
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    totals += len(x) * np.array([loss_value, recon.item(), kl.item()])
                val_loss, val_recon, val_kl = _evaluate(network, x_validation, kl_scale)
                if not math.isfinite(val_loss):
                    raise TrainingDivergedError(
                        f"TemporalVAEEncoder.fit: validation loss became {val_loss} at epoch "
                        f"{epoch}; lower learning_rate (now {self.learning_rate}) or check "
                        "that the features are scaled"
                    )
                train_loss, train_recon, train_kl = totals / train_end
                for key, value in zip(
                    HISTORY_KEYS,
                    (epoch, train_loss, train_recon, train_kl, val_loss, val_recon, val_kl),
                    strict=True,
                ):
                    history[key].append(value)
                logger.debug(
                    "epoch %d: train loss %.5f, validation loss %.5f (recon %.5f, KL %.3f)",
                    epoch,
                    train_loss,
                    val_loss,
                    val_recon,
                    val_kl,
                )
                if val_loss < best_loss - float(self.tol):
                    best_loss, best_epoch = val_loss, epoch
                    best_state = {k: v.detach().clone() for k, v in network.state_dict().items()}
                    epochs_without_improvement = 0
                else:
                    epochs_without_improvement += 1
                    if epochs_without_improvement >= int(self.patience):
                        break
            assert best_state is not None  # epoch 1 always improves on +inf
            network.load_state_dict(best_state)
            network.eval().requires_grad_(False)

        self.network_state_ = {k: v.numpy().copy() for k, v in best_state.items()}
        self.hidden_sizes_ = hidden
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_epochs_ = epoch
        self.n_train_ = train_end
        self.validation_start_ = validation_start
        self.fit_seconds_ = time.perf_counter() - started
        self._network = network
        logger.info(
            "TemporalVAEEncoder: d=%d on %d training / %d validation windows, %d epoch(s), "
            "best %d (validation loss %.5f), %.1f s",
            d,
            train_end,
            n_rows - validation_start,
            self.n_epochs_,
            best_epoch,
            best_loss,
            self.fit_seconds_,
        )

    # -- transforming

    def _fitted_network(self) -> _VAENetwork:
        """The torch module, rebuilt from ``network_state_`` after unpickling."""
        network = getattr(self, "_network", None)
        if network is None:
            # On the meta device the layers allocate and initialise nothing (and draw
            # nothing from torch's RNG); assign=True then adopts the stored arrays.
            with torch.device("meta"):
                network = _VAENetwork(self.n_features_in_, self.hidden_sizes_, self.d)
            state = {k: torch.from_numpy(np.array(v)) for k, v in self.network_state_.items()}
            network.load_state_dict(state, assign=True)
            network.eval().requires_grad_(False)
            self._network = network
        return network

    def _transform(self, X: np.ndarray) -> np.ndarray:
        name = f"{type(self).__name__}.transform"
        too_large = np.abs(X) > _FLOAT32_MAX
        if too_large.any():
            row, column = (int(v[0]) for v in np.nonzero(too_large))
            raise BadInputError(
                f"{name}: value {X[row, column]:.3g} at row {row}, column {column} does not "
                "fit in float32; the encoder expects scaled features"
            )
        network = self._fitted_network()
        z = np.empty((len(X), self.d), dtype=np.float64)
        with _reproducible_torch(), torch.inference_mode():
            for start in range(0, len(X), _CHUNK_ROWS):
                chunk = torch.from_numpy(X[start : start + _CHUNK_ROWS].astype(np.float32))
                z[start : start + len(chunk)] = network(chunk).numpy()
        finite = np.isfinite(z).all(axis=1)
        if not finite.all():
            row = int(np.flatnonzero(~finite)[0])
            raise BadInputError(
                f"{name}: z_t is not finite for row {row} (inputs up to "
                f"{np.abs(X[row]).max():.3g} in absolute value); the encoder expects scaled "
                "features"
            )
        return z

    def __getstate__(self) -> dict[str, Any]:
        # The torch module is a cache of network_state_: pickles hold NumPy arrays only.
        state = dict(super().__getstate__())  # a copy: object.__getstate__ is __dict__
        state.pop("_network", None)
        return state

    # -- export

    def to_onnx(self, path: str | Path) -> Path:
        """Export the mean path (window -> z_t) to an ONNX file, written atomically.

        Parameters
        ----------
        path : str or Path
            Destination file; its directory is created if missing.

        Returns
        -------
        Path
            ``path``. The graph has input ``x`` of shape (batch, ``n_features_in_``) and
            output ``z`` of shape (batch, d), both float32, with a dynamic batch
            dimension; metadata props record the feature names, window length and d.
        """
        check_is_fitted(self)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        mean_path = _MeanPath(self._fitted_network()).eval()
        # Two rows: torch.export specialises a dimension whose example size is 0 or 1.
        example = torch.zeros(2, self.n_features_in_, dtype=torch.float32)
        with _reproducible_torch(), _quiet_onnx_exporter():
            program = torch.onnx.export(
                mean_path,
                (example,),
                input_names=["x"],
                output_names=["z"],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                opset_version=ONNX_OPSET,
                dynamo=True,
                external_data=False,
                verbose=False,
            )
        metadata = {
            "regimes.encoder": type(self).__qualname__,
            "regimes.feature_names": ",".join(self.feature_names_in_),
            "regimes.window_length": str(int(self.window_length)),
            "regimes.latent_dim": str(self.d),
        }
        model = program.model_proto
        for key, value in metadata.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        partial = path.with_name(path.name + ".partial")
        partial.write_bytes(model.SerializeToString())
        partial.replace(path)
        return path


def _evaluate(
    network: _VAENetwork, values: torch.Tensor, kl_scale: float
) -> tuple[float, float, float]:
    """(loss, recon MSE, KL per window) on ``values``, decoding z = mu (no noise)."""
    squared_error, kl = 0.0, 0.0
    network.eval()
    with torch.inference_mode():
        for start in range(0, len(values), _CHUNK_ROWS):
            x = values[start : start + _CHUNK_ROWS]
            mu, logvar = network.encode(x)
            squared_error += float((network.decoder(mu) - x).square().sum(dtype=torch.float64))
            kl += float(_kl_per_window(mu, logvar).sum(dtype=torch.float64))
    recon = squared_error / values.numel()
    kl /= len(values)
    return recon + kl_scale * kl, recon, kl


class _DropTorchvisionNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("torchvision is not installed")


@contextlib.contextmanager
def _quiet_onnx_exporter() -> Iterator[None]:
    """Silence the exporter's two known, harmless complaints, and nothing else.

    * torch 2.13's exporter calls its own deprecated ``isinstance(treespec, LeafSpec)``
      while flattening inputs and emits a FutureWarning about it (torch-internal; our
      code never touches pytrees).
    * Building the op registry logs a WARNING per torchvision op when torchvision is
      absent; we export no torchvision op.
    """
    registry_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    notice_filter = _DropTorchvisionNotice()
    registry_logger.addFilter(notice_filter)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore",
                message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                category=FutureWarning,
            )
            yield
    finally:
        registry_logger.removeFilter(notice_filter)


def vae_latent_dim_scan(
    X: np.ndarray,
    dims: Iterable[int],
    window_length: int,
    **params: Any,
) -> pd.DataFrame:
    """Fit one :class:`TemporalVAEEncoder` per candidate d and report its validation fit.

    Plan task 3.6 for the VAE: the reconstruction error on the (time-ordered) validation
    tail falls as d grows; pick the d where it stops paying for itself.

    Parameters
    ----------
    X : array-like of shape (n_windows, window_length * n_features)
        Flattened windows in time order, as for :meth:`TemporalVAEEncoder.fit`.
    dims : iterable of int
        Candidate latent dimensions, each in [6, 16].
    window_length : int
        Bars per window.
    **params
        Other :class:`TemporalVAEEncoder` parameters, the same for every d.

    Returns
    -------
    pandas.DataFrame
        One row per d with columns ``d``, ``val_recon_mse`` (MSE per input value with
        z = mu), ``val_kl`` (nats per window), ``val_loss``, ``epochs`` (epochs run) and
        ``seconds`` (fit time), all taken at the kept (best) epoch.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(400, 2 * 8))
    >>> table = vae_latent_dim_scan(X, [6, 8], window_length=2, max_epochs=2)
    >>> list(table["d"])
    [6, 8]
    """
    if "latent_dim" in params:
        raise BadInputError("vae_latent_dim_scan: pass candidate latent dimensions as dims")
    dims = list(dims)
    if not dims:
        raise BadInputError("vae_latent_dim_scan: dims is empty; expected candidate d values")
    rows = []
    for d in dims:
        encoder = TemporalVAEEncoder(latent_dim=d, window_length=window_length, **params).fit(X)
        best = encoder.best_epoch_ - 1
        rows.append(
            {
                "d": int(d),
                "val_recon_mse": encoder.history_["val_recon"][best],
                "val_kl": encoder.history_["val_kl"][best],
                "val_loss": encoder.history_["val_loss"][best],
                "epochs": encoder.n_epochs_,
                "seconds": encoder.fit_seconds_,
            }
        )
    return pd.DataFrame(rows, columns=list(SCAN_COLUMNS))
