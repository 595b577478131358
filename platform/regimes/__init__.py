"""regimes: multi-timeframe latent state vectors and Gaussian-HMM regime tracking."""

__version__ = "0.1.0"
