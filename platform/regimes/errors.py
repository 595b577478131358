"""The few error types the platform raises on purpose.

Each subclasses a builtin so callers that only know Python's exceptions still
catch them; the CLI turns every ``RegimesError`` into a one-line message and a
non-zero exit code instead of a traceback.
"""

from __future__ import annotations


class RegimesError(Exception):
    """Base class of every error the platform raises on purpose."""


class BadInputError(RegimesError, ValueError):
    """User-supplied data or arguments are wrong: the message names the file, row or field."""


class UnsafeNameError(BadInputError):
    """A symbol, timeframe or model_id cannot be used as a path or partition value."""


class ConfigError(RegimesError, ValueError):
    """A configuration file or setting is invalid: the message names the file and field."""


class ArtifactIntegrityError(RegimesError, OSError):
    """A model artifact is missing, incomplete or does not match its checksums."""


class StoreError(RegimesError, RuntimeError):
    """The database or state store refused or failed an operation."""


class RegistryConflictError(StoreError):
    """A registry write lost a race: the registry changed since the version the write was
    made against. The message names what changed; the registry holds nothing of the write."""


class TrainingError(RegimesError, RuntimeError):
    """A fit failed for a reason in the data or the optimisation (e.g. it diverged)."""


class GateFailedError(BadInputError):
    """A promotion its gates refused; the message lists every failed check."""
