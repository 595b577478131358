"""Object-store failures become one line naming the request, the answer and what to check."""

from __future__ import annotations

import pytest

from regimes.storage._store_errors import failure_reason, object_store_hint

pytestmark = pytest.mark.unit

# How deltalake 1.x words a GET that kept getting S3's 503 (colours and XML included).
ARROW = "\x1b[31m↳\x1b[0m"
S3_503 = OSError(
    f"Generic S3 error\n          {ARROW} Error performing list request\n"
    f"           {ARROW} Error performing GET http://127.0.0.1:9/b?list-type=2 in 154ms, "
    f"after 2 retries, max_retries\n            {ARROW} 2, retry_timeout\n"
    f"             {ARROW} 5s  - Server returned non-2xx status code\n"
    f"              {ARROW} 503 Service Unavailable\n"
    f'               {ARROW} <?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown'
    "</Code><Message>Please reduce your request rate.</Message></Error>\n"
)


def test_a_chained_object_store_error_folds_into_one_line():
    assert failure_reason(S3_503) == (
        "Generic S3 error: Error performing list request: Error performing GET "
        "http://127.0.0.1:9/b?list-type=2 in 154ms, after 2 retries, max_retries: 2, "
        "retry_timeout: 5s - Server returned non-2xx status code: 503 Service Unavailable: "
        "SlowDown"
    )
    assert failure_reason(OSError()) == "OSError"


def test_the_hint_names_the_endpoint_only_for_an_object_store_failure():
    reason = failure_reason(S3_503)
    hint = object_store_hint("s3://b/states", {"AWS_ENDPOINT_URL": "http://minio:9000"}, reason)
    assert hint.startswith("; check that the object store at http://minio:9000 is up")
    assert "re-run" in hint and "\n" not in hint
    assert "(AWS S3)" in object_store_hint("s3://b/states", None, reason)
    assert object_store_hint("/data/states", None, reason) == ""  # a local disk
    assert object_store_hint("s3://b/states", None, "schema mismatch: column x") == ""
