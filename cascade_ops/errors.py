"""Exceptions, and the exit code each one means (documented in README.md)."""

from typing import Iterable, Optional

EXIT_OK = 0
EXIT_FAILED = 2
EXIT_UNREACHABLE = 3
EXIT_INVALID = 4
EXIT_LOCKED = 5
EXIT_BUDGET = 6
EXIT_UNHEALTHY = 7  # diagnose: a host answered, and it is not healthy

EXIT_SIGHUP, EXIT_SIGINT, EXIT_SIGTERM = 129, 130, 143  # interrupted: 128 + the signal

# When hosts end differently the worst wins (README: exit codes); an interrupted run says so first.
SEVERITY = (
    EXIT_OK,
    EXIT_UNHEALTHY,
    EXIT_LOCKED,
    EXIT_BUDGET,
    EXIT_UNREACHABLE,
    EXIT_FAILED,
    EXIT_SIGHUP,
    EXIT_SIGTERM,
    EXIT_SIGINT,
)


def worst_exit_code(codes: Iterable[int]) -> int:
    return max(codes, key=SEVERITY.index, default=EXIT_OK)


class CascadeError(Exception):
    """Base of every error cascade-ops raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(CascadeError):
    """Invalid inventory, playbook, variable or argument. Raised before any host is touched."""

    exit_code = EXIT_INVALID

    def __init__(
        self, message: str, file: Optional[str] = None, line: Optional[int] = None, field: Optional[str] = None
    ):
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = "%s: " % where if where else ""
        subject = "%s: " % field if field else ""
        super().__init__(prefix + subject + message)


class HostCommandError(CascadeError):
    """A host-side operation failed or was refused; the message says which and why."""

    def __init__(self, host: str, command: str, message: str):
        self.host, self.command = host, command
        super().__init__("%s: %s: %s" % (host, command, message))


class HostUnreachable(CascadeError):
    """The host could not be reached or refused us (connection, timeout, authentication, host key)."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, host: str, message: str):
        self.host = host
        super().__init__("%s: unreachable: %s" % (host, message))


class HostCutOff(CascadeError):
    """A host overran its ``host_timeout`` after connecting: it was cut off mid-run."""

    def __init__(self, host: str, timeout: float):
        self.host = host
        super().__init__("%s: cut off after host_timeout %.0fs (mid-run)" % (host, timeout))


class LockHeld(CascadeError):
    """Another cascade-ops run is acting on the same host and app right now."""

    exit_code = EXIT_LOCKED

    def __init__(self, host: str, path: str):
        self.host, self.path = host, path
        super().__init__("%s: another cascade-ops run holds %s; not acting at the same time" % (host, path))
