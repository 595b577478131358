"""API keys of the live service: where they come from and how a request's key is checked.

Keys come from ``REGIMES_API_KEYS`` (comma-separated) and/or the file named by
``REGIMES_API_KEYS_FILE`` (one key per line, ``#`` comments). A request's
``Authorization: Bearer <key>`` is compared with every key in constant time
(:func:`hmac.compare_digest`), so the time taken says nothing about how much of a key
was right.

Examples
--------
>>> keys = load_api_keys({"REGIMES_API_KEYS": "alpha-key-0123456789, beta-key-0123456789"})
>>> check_authorization("Bearer beta-key-0123456789", keys)
'ok'
>>> check_authorization(None, keys), check_authorization("Bearer nope", keys)
('missing', 'wrong')
"""

from __future__ import annotations

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


def check_authorization(header: str | None, keys: tuple[str, ...]) -> str:
    """``ok``, ``missing`` (no bearer key) or ``wrong`` (no configured key matches)."""
    if not header or not header.startswith("Bearer "):
        return "missing"
    given = header[len("Bearer ") :].strip().encode()
    matched = False
    for key in keys:  # every key compared: no early exit that times the match
        matched |= hmac.compare_digest(given, key.encode())
    return "ok" if matched else "wrong"
