"""What the watchdog tells the outside: webhook alerts (JSON, or the shape a Slack incoming webhook
takes) and dead-man pings (the healthchecks.io protocol). Best effort, bounded in time, never the
reason a tick or a recovery fails."""

import threading
import time
from typing import Any, Dict, List, Optional
from urllib.parse import urlsplit

ALERT_TIMEOUT_S = 1.0
ALERT_ATTEMPTS = 3
ALERT_BACKOFF_S = 0.2


def send_alert(
    url: str, payload: dict, timeout: float = ALERT_TIMEOUT_S, attempts: int = ALERT_ATTEMPTS
) -> Optional[str]:
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


def slack_payload(alert: Dict[str, Any]) -> Dict[str, Any]:
    """An alert as a Slack incoming webhook takes it: ``text`` (the notification) plus ``blocks``."""
    head = "cascade-ops on %s: %s" % (alert["host"], alert["outcome"])
    facts = "*problem:* %s\n*action:* %s\n*port:* %s" % (alert["problem"], alert["action"], alert["port"])
    blocks: List[Dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": "*%s*" % head}},
        {"type": "section", "text": {"type": "mrkdwn", "text": facts}},
    ]
    if alert.get("incident_report"):
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": "report: `%s`" % alert["incident_report"]}]}
        )
    return {"text": head, "blocks": blocks}


PING_TIMEOUT_S = 1.0


def ping(url: str, timeout: float = PING_TIMEOUT_S) -> Optional[str]:
    """GET a dead-man monitor's URL (``/start``, success, ``/fail``, ``/<exit code>``); None when it
    answered, else what went wrong (with the URL's token redacted)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=timeout) as response:
            if response.status < 300:
                return None
            return "ping %s: HTTP %d" % (redact(url), response.status)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return "ping %s: %s" % (redact(url), getattr(exc, "reason", exc))


class Pings:
    """One tick's pings: ``/start`` in the background (it never holds the tick up), then the outcome."""

    def __init__(self, url: Optional[str]):
        self.url = url.rstrip("/") if url else None
        self.errors = []  # type: list
        self._start: Optional[threading.Thread] = None
        if self.url:
            self._start = threading.Thread(target=self._send, args=(self.url + "/start",), daemon=True)
            self._start.start()

    def _send(self, url: str) -> None:
        error = ping(url)
        if error:
            self.errors.append(error)

    def finish(self, exit_code: int) -> Optional[str]:
        """Ping success (exit 0) or ``/<exit code>``; the errors of this tick's pings, if any."""
        if not self.url:
            return None
        self._send(self.url if exit_code == 0 else "%s/%d" % (self.url, exit_code))
        if self._start is not None:
            self._start.join(PING_TIMEOUT_S)
        return "; ".join(self.errors) or None
