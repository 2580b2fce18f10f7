"""Exceptions, and the exit code each one means (documented in README.md)."""

EXIT_OK = 0
EXIT_FAILED = 2
EXIT_UNREACHABLE = 3
EXIT_INVALID = 4
EXIT_LOCKED = 5
EXIT_BUDGET = 6


class CascadeError(Exception):
    """Base of every error cascade-ops raises on purpose."""

    exit_code = EXIT_FAILED


class ConfigError(CascadeError):
    """Invalid inventory, playbook, variable or argument. Raised before any host is touched."""

    exit_code = EXIT_INVALID

    def __init__(self, message, file=None, line=None, field=None):
        self.file, self.line, self.field = file, line, field
        where = ":".join(str(p) for p in (file, line) if p is not None)
        prefix = "%s: " % where if where else ""
        subject = "%s: " % field if field else ""
        super().__init__(prefix + subject + message)


class HostCommandError(CascadeError):
    """A host-side operation failed or was refused; the message says which and why."""

    def __init__(self, host, command, message):
        self.host, self.command = host, command
        super().__init__("%s: %s: %s" % (host, command, message))


class HostUnreachable(CascadeError):
    """The host could not be reached or refused us (connection, timeout, authentication, host key)."""

    exit_code = EXIT_UNREACHABLE

    def __init__(self, host, message):
        self.host = host
        super().__init__("%s: unreachable: %s" % (host, message))


class LockHeld(CascadeError):
    """Another cascade-ops run is acting on the same host and app right now."""

    exit_code = EXIT_LOCKED

    def __init__(self, host, path):
        self.host, self.path = host, path
        super().__init__("%s: another cascade-ops run holds %s; not acting at the same time" % (host, path))
