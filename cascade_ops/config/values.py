"""How one variable's value is read: each parser takes what YAML, a --var or the environment gave
and returns the typed value, or raises ValueError saying what was expected (the caller adds the
file, line and field)."""

import math
import re
from typing import Any, Callable, Tuple

from cascade_ops.agent.owners import KINDS as OWNER_KINDS

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: Any) -> float:
    """Seconds from a number or a string like ``90``, ``1.5s``, ``15m``, ``1h``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30, 30s, 15m or 1h")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("expected a duration such as 30, 30s, 15m or 1h, got %r" % value)
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    if not math.isfinite(seconds):
        raise ValueError("expected a finite duration, got %r" % (value,))
    if seconds < 0:
        raise ValueError("must not be negative")
    return seconds


def parse_int(value: Any) -> int:
    # Digits only: " 8000" or "8000 " is a typo to report, not to tidy (a YAML 0x... stays text).
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValueError("expected a whole number, got %r" % (value,))
    return int(value)


def parse_positive_int(value: Any) -> int:
    number = parse_int(value)
    if number < 1:
        raise ValueError("must be at least 1")
    return number


def parse_port(value: Any) -> int:
    port = parse_int(value)
    if not 1 <= port <= 65535:
        raise ValueError("a port is 1-65535, got %d" % port)
    return port


def parse_positive_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number, got %r" % value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("expected a number, got %r" % (value,))
    if not math.isfinite(number):
        raise ValueError("expected a finite number, got %r" % (value,))
    if number <= 0:
        raise ValueError("must be greater than 0")
    return number


def parse_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "yes", "1", "on"):
        return True
    if lowered in ("false", "no", "0", "off"):
        return False
    raise ValueError("expected true or false, got %r" % (value,))


MAX_VALUE_CHARS = 4096  # a path, a command line, a regex or a URL: longer is a mistake or an attack


def parse_str(value: Any) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        from cascade_ops.config.yamlsrc import kind_of

        raise ValueError("expected a string, got %s" % kind_of(value))
    text = str(value)
    if len(text) > MAX_VALUE_CHARS:
        raise ValueError("%d characters: longer than the %d a value may have" % (len(text), MAX_VALUE_CHARS))
    return text


def parse_regex(value: Any) -> str:
    text = parse_str(value)
    try:
        re.compile(text)
    except re.error as exc:
        raise ValueError("not a valid regular expression: %s" % exc)
    return text


def parse_http_path(value: Any) -> str:
    text = parse_str(value)
    if not text.startswith("/") or any(c.isspace() for c in text):
        raise ValueError("expected an absolute URL path such as /health, got %r" % text)
    return text


def parse_serial(value: Any) -> str:
    """Hosts per rolling batch (Ansible's ``serial``): a count of at least 1, or a percentage of the
    hosts above 0 and at most 100 ("25%"); returned as its text."""
    text = "" if isinstance(value, bool) else str(value).strip()
    try:
        if text.endswith("%"):
            if not 0 < float(text[:-1]) <= 100:
                raise ValueError
        elif int(text) < 1:
            raise ValueError
    except ValueError:
        raise ValueError("expected a count of hosts (1, 2, ...) or a percentage (25%%), got %r" % (value,)) from None
    return text


def parse_choice(choices: Tuple[str, ...]) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = parse_str(value)
        if text not in choices:
            raise ValueError("expected %s, got %r" % (" or ".join(choices), text))
        return text

    return parse


def parse_manager(value: Any) -> str:
    """Who starts and stops the backend: ``auto``, ``detached``, or a kind of owner the agent has a
    driver for (read from its table when parsed, so a registered kind is one at once)."""
    return parse_choice(("auto", "detached", *OWNER_KINDS))(value)


def parse_unit(value: Any) -> str:
    """A systemd service name; ``web`` means ``web.service``, as systemctl reads it."""
    text = parse_str(value)
    if not re.fullmatch(r"[A-Za-z0-9:_.\\@-]+", text) or text.startswith("-"):
        raise ValueError("expected a systemd unit name such as web.service, got %r" % text)
    return text if text.endswith(".service") else text + ".service"
