"""How often the watchdog ticks, as cron and systemd's calendar each spell it, from one rule: a
period that divides an hour (1 to 30 minutes) or a day (1 to 24 hours) evenly, so every tick is
the same distance from the last, across the hour and across midnight."""

from dataclasses import dataclass

from cascade_ops.config.values import parse_duration
from cascade_ops.errors import ConfigError


@dataclass(frozen=True)
class Period:
    seconds: float
    minutes: int  # every this many minutes (under an hour), or 0
    hours: int  # every this many hours, or 0

    @property
    def cron(self) -> str:
        """5m -> */5 * * * *, 1h -> 0 * * * *, 2h -> 0 */2 * * *, 24h -> 0 0 * * *."""
        if self.minutes:
            return "* * * * *" if self.minutes == 1 else "*/%d * * * *" % self.minutes
        return "0 * * * *" if self.hours == 1 else "0 0 * * *" if self.hours == 24 else "0 */%d * * *" % self.hours

    @property
    def on_calendar(self) -> str:
        """systemd's ``OnCalendar=``: 5m -> *:0/5, 2h -> 0/2:00, 24h -> daily."""
        if self.minutes:
            return "*:*" if self.minutes == 1 else "*:0/%d" % self.minutes
        return "daily" if self.hours == 24 else "0/%d:00" % self.hours


def period(every: str, who: str) -> Period:
    """``--every`` as a Period; ``who`` (cron, a timer) is named when it cannot run that evenly."""
    try:
        seconds = parse_duration(every)
    except ValueError as exc:
        raise ConfigError(str(exc), field="--every") from None
    minutes, hours = seconds / 60, seconds / 3600
    if minutes == int(minutes) and 1 <= minutes < 60 and 60 % minutes == 0:
        return Period(seconds, int(minutes), 0)
    if hours == int(hours) and 1 <= hours <= 24 and 24 % hours == 0:
        return Period(seconds, 0, int(hours))
    raise ConfigError(
        "%s cannot run every %r evenly; use 1m-30m dividing an hour, or 1h-24h dividing a day" % (who, every),
        field="--every",
    )
