"""The resident watchdog (``watch --follow``): it stays, probes every ``--every`` seconds, and
recovers in its own process the moment a backend hangs, with no interpreter to start.

A healthy cycle is one HTTP probe, watched for acceptance (``accept_timeout``), and nothing else:
no process table, no state file, no log line. Anything else runs the very tick the cron job runs
(``watch.tick_host``): the same lock, ``fail_threshold``, restart budget, alerts, metrics, history
and incident reports; a recovery is followed by a fresh look, never a second restart on old facts.
Hosts are this machine's (``connection: local``): a fleet runs one follower per host
(``fab -H host service-install``).

Signals: SIGHUP reads the inventory again (a broken one is reported and the old one kept); SIGTERM
and SIGINT stop it between two cycles, never inside a recovery, exiting 143 / 130. Under systemd
(``Type=notify``) it says READY, and WATCHDOG from its own loop, so a follower that itself hangs
is restarted (``WatchdogSec=``).
"""

import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Dict, List, Optional

from cascade_ops.config.hostvars import Host
from cascade_ops.errors import CascadeError, ConfigError
from cascade_ops.transport import Transport, connect

HEARTBEAT_S = 60.0  # a healthy follower runs the whole tick this often: a log line, metrics, a ping


def notify(message: str) -> None:
    """sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET, when systemd gave one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(message.encode(), address)
    except OSError:
        pass  # systemd gone or not listening: nothing to tell


class Follower:
    """``load()`` gives the hosts to follow (read again on SIGHUP); ``tick(host, transport)`` is the
    cron tick for one host; ``report(line)`` says what happened, one line at a time."""

    def __init__(
        self,
        load: Callable[[], List[Host]],
        tick: Callable[[Host, Transport], Any],
        every: float,
        report: Callable[[str], None],
        cycles: Optional[int] = None,
    ):
        self.load, self.tick, self.every, self.report = load, tick, every, report
        self.cycles = cycles  # stop after this many (tests); None: until a signal
        self.stop_signal: Optional[int] = None
        self.reload = threading.Event()
        self.hosts: List[Host] = load()
        for host in self.hosts:
            if host.vars.connection != "local":
                raise ConfigError(
                    "watch --follow runs on the host itself; %s is reached over %s: install "
                    "the follower there (fab -H %s service-install)" % (host.name, host.vars.connection, host.name),
                    field="--follow",
                )
        self.transports: Dict[str, Transport] = {}
        self.unhealthy: Dict[str, bool] = {}
        self.last_heartbeat: Dict[str, float] = {}

    def _transport(self, host: Host) -> Transport:
        if host.name not in self.transports:
            self.transports[host.name] = connect(host.vars)
        return self.transports[host.name]

    def _signals(self) -> None:
        def stop(signum: int, frame: Any) -> None:  # between two cycles: a recovery is never cut short
            self.stop_signal = signum

        def hup(signum: int, frame: Any) -> None:
            self.reload.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            signal.signal(signal.SIGHUP, hup)

    def _reload(self) -> None:
        self.reload.clear()
        try:
            hosts = self.load()
        except CascadeError as exc:
            self.report("reload: kept the inventory in use: %s" % exc)
            return
        self.hosts = hosts
        self.transports.clear()
        self.report("reload: following %s" % ", ".join(h.name for h in hosts))

    def cycle(self) -> None:
        """One look at every host: a probe when it was healthy; the whole tick otherwise."""
        from cascade_ops.agent.probe import http_probe, probe_address

        now = time.monotonic()
        for host in self.hosts:
            v = host.vars
            transport = self._transport(host)
            probe = http_probe(probe_address(v.bind_host), v.port, v.health_path, v.probe_timeout, v.accept_timeout)
            quiet = probe["ok"] and not self.unhealthy.get(host.name)
            if quiet and now - self.last_heartbeat.get(host.name, 0.0) < HEARTBEAT_S:
                continue
            # A recovery may take up to host_timeout: systemd's watchdog waits that long for a tick that
            # may recover (the probe failed); a heartbeat's tick is quick and keeps the short watchdog.
            watchdog = os.environ.get("WATCHDOG_USEC") if not probe["ok"] else None
            if watchdog:
                notify("WATCHDOG=1\nWATCHDOG_USEC=%d" % max(int(watchdog), int((v.host_timeout + 30) * 1e6)))
            try:
                tick = self.tick(host, transport)  # the cron tick: streak, budget, lock, recovery, records
            finally:
                if watchdog:
                    notify("WATCHDOG=1\nWATCHDOG_USEC=%s" % watchdog)
            self.last_heartbeat[host.name] = now
            self.unhealthy[host.name] = tick.action != "none"
            if v.ping_url:  # the dead-man monitor hears from a follower at least every heartbeat
                from cascade_ops.watchdog.alerts import ping

                url = v.ping_url.rstrip("/")
                ping(url if tick.exit_code == 0 else "%s/%d" % (url, tick.exit_code))
            if not quiet:
                self.report("%s %s %s (%s)" % (host.name, tick.action, tick.outcome, tick.verdict))

    def run(self) -> int:
        self._signals()
        notify("READY=1")
        done = 0
        while self.stop_signal is None and (self.cycles is None or done < self.cycles):
            started = time.monotonic()
            if self.reload.is_set():
                self._reload()
            self.cycle()
            notify("WATCHDOG=1")
            done += 1
            if self.stop_signal is None and (self.cycles is None or done < self.cycles):
                time.sleep(max(0.0, self.every - (time.monotonic() - started)))
        notify("STOPPING=1")
        for transport in self.transports.values():
            transport.close()
        return 128 + self.stop_signal if self.stop_signal is not None else 0
