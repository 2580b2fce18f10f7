"""Webhook alerts: best effort, bounded in time, never the reason a recovery fails."""

import time
from typing import Optional
from urllib.parse import urlsplit

ALERT_TIMEOUT_S = 1.0
ALERT_ATTEMPTS = 3
ALERT_BACKOFF_S = 0.2


def send_alert(url: str, payload: dict, timeout: float = ALERT_TIMEOUT_S,
               attempts: int = ALERT_ATTEMPTS) -> Optional[str]:
    """POST ``payload`` as JSON; retry a few times. Returns None on success, else what went wrong."""
    import httpx
    error = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(ALERT_BACKOFF_S * attempt)
        try:
            response = httpx.post(url, json=payload, timeout=timeout, trust_env=False)
            if response.status_code < 300:
                return None
            error = "HTTP %d" % response.status_code
        except httpx.HTTPError as exc:
            error = "%s: %s" % (type(exc).__name__, exc)
    return "alert to %s failed after %d attempts (%s)" % (redact(url), attempts, error)


def redact(url: str) -> str:
    """Scheme, host and port only: a webhook's path or query often carries its token."""
    parts = urlsplit(url)
    return "%s://%s%s/..." % (parts.scheme, parts.hostname, ":%d" % parts.port if parts.port else "")
