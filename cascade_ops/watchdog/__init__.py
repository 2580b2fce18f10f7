"""The unattended watchdog: a tick, its crontab entry or systemd timer, the resident follower,
alerts, pings and metrics."""
