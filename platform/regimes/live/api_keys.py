"""API keys of the live service: where they come from and how a request's key is checked.

Keys come from ``REGIMES_API_KEYS`` (comma-separated) and/or the file named by
``REGIMES_API_KEYS_FILE`` (one key per line, ``#`` comments). The process that
starts the service reads them and hands the HTTP ingress their SHA-256 digests
(:func:`key_digests`), never the keys: nothing the service is given (its deployment
arguments, a replica's environment, which Ray writes to its logs) holds a key. A
request's ``Authorization: Bearer <key>`` is hashed and compared with every digest in
constant time (:func:`hmac.compare_digest`), so the time taken says nothing about how
much of a key was right.

Examples
--------
>>> keys = load_api_keys({"REGIMES_API_KEYS": "alpha-key-0123456789, beta-key-0123456789"})
>>> digests = key_digests(keys)
>>> check_authorization("Bearer beta-key-0123456789", digests)
'ok'
>>> check_authorization(None, digests), check_authorization("Bearer nope", digests)
('missing', 'wrong')
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

from regimes.errors import ConfigError

KEYS_ENV = "REGIMES_API_KEYS"
KEYS_FILE_ENV = "REGIMES_API_KEYS_FILE"
MIN_KEY_LENGTH = 16


def load_api_keys(environ: Mapping[str, str]) -> tuple[str, ...]:
    """Every configured key (none: writes are refused until one is set)."""
    keys = [k.strip() for k in environ.get(KEYS_ENV, "").split(",") if k.strip()]
    file = environ.get(KEYS_FILE_ENV)
    if file:
        path = Path(file)
        try:
            lines = path.read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"{KEYS_FILE_ENV}={file}: cannot read ({exc.strerror})") from None
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    short = [i for i, key in enumerate(keys) if len(key) < MIN_KEY_LENGTH]
    if short:
        raise ConfigError(
            f"API key #{short[0] + 1} is shorter than {MIN_KEY_LENGTH} characters; use a "
            "random key (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return tuple(dict.fromkeys(keys))


def key_digests(keys: tuple[str, ...]) -> tuple[str, ...]:
    """The SHA-256 digest (hex) of each key: what the ingress holds instead of the keys.

    >>> key_digests(("alpha-key-0123456789",))[0][:16]
    'c0dcc758f85e141d'
    """
    return tuple(_digest(key.encode()) for key in keys)


def _digest(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()


def check_authorization(header: str | None, digests: tuple[str, ...]) -> str:
    """``ok``, ``missing`` (no bearer key) or ``wrong`` (the key's digest matches none of
    ``digests``, from :func:`key_digests`)."""
    if not header or not header.startswith("Bearer "):
        return "missing"
    given = _digest(header[len("Bearer ") :].strip().encode()).encode()
    matched = False
    for digest in digests:  # every digest compared: no early exit that times the match
        matched |= hmac.compare_digest(given, digest.encode())
    return "ok" if matched else "wrong"
