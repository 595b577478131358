"""One-line reasons for failures of the Delta tables' storage (local disk or object store).

deltalake reports an object-store failure as a chain of causes on several lines, coloured
with terminal escapes, with S3's XML error document inside; the first line alone says
only "Generic S3 error". :func:`failure_reason` folds the chain into one line a
:class:`~regimes.errors.StoreError` can carry, and :func:`object_store_hint` says what to
check when the store did not answer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from regimes.config.settings import OBJECT_STORE_SCHEMES

_ESCAPES = re.compile(r"\x1b\[[0-9;]*m")
_XML_ERROR = re.compile(r"<\?xml.*?<Code>([^<]*)</Code>.*?</Error>", re.S)
_STORE_FAILURE = re.compile(
    r"S3 error|Object Store error|Error performing|HTTP error|non-2xx|timed out", re.I
)


def failure_reason(exc: BaseException) -> str:
    """``exc``'s message as one line: the cause chain joined by ": ", S3's XML error
    document replaced by its code (``503 Service Unavailable: SlowDown``)."""
    text = _XML_ERROR.sub(lambda match: match.group(1), _ESCAPES.sub("", str(exc)))
    parts = (part.strip().lstrip("↳").strip() for part in text.splitlines())
    line = re.sub(r"\s+", " ", ": ".join(part for part in parts if part))
    return line or type(exc).__name__


def object_store_hint(root: str, options: Mapping[str, str] | None, reason: str) -> str:
    """What to check when a request to the object store behind ``root`` failed ("" for a
    local root or a failure that is not the store's answer)."""
    if not root.startswith(OBJECT_STORE_SCHEMES) or not _STORE_FAILURE.search(reason):
        return ""
    endpoint = (options or {}).get("AWS_ENDPOINT_URL")
    where = f"the object store at {endpoint}" if endpoint else "the object store (AWS S3)"
    return (
        f"; check that {where} is up, reachable and not throttling and that the AWS_* "
        "credentials are valid (the client retries for REGIMES_STORE_MAX_RETRIES / "
        "REGIMES_STORE_RETRY_TIMEOUT), then re-run: the table keeps its last complete commit"
    )
