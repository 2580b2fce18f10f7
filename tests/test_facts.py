"""Holder resolution on real sockets: both IP families, several holders, backlog."""

import socket
import sys

import pytest

from cascade_ops.agent import hostfacts, procfs, signals
from cascade_ops.model.facts import Diagnosis
from support import free_port, python_script, wait_for

LISTENER = python_script("""
    import socket, sys, time
    family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
    sock = socket.socket(family)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((sys.argv[1], int(sys.argv[2])))
    sock.listen(8)
    open(sys.argv[3], "w").write("ready")
    time.sleep(600)
""")


def _has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv4_and_ipv6_holders_are_both_listed_with_backlog(tmp_path, reaper):
    port = free_port()
    script = tmp_path / "listen.py"
    script.write_text(LISTENER)
    procs = {}
    for address in ("127.0.0.1", "::1"):
        ready = tmp_path / ("ready-" + address.replace(":", "_"))
        procs[address] = reaper.popen([sys.executable, str(script), address, str(port), str(ready)])
        wait_for(ready.exists, message="listener on %s" % address)
    # Two clients the server never accepts: the kernel queues them, the backlog shows it.
    clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
    try:
        d = Diagnosis.from_agent(hostfacts.host_facts(port, "127.0.0.1", "/health", 0.2), port)
    finally:
        for c in clients:
            c.close()
    by_pid = {h.pid: h for h in d.holders}
    assert set(by_pid) == {p.pid for p in procs.values()}
    assert [s.endpoint for s in by_pid[procs["::1"].pid].sockets] == ["[::1]:%d" % port]
    assert by_pid[procs["127.0.0.1"].pid].backlog == 2
    assert not d.healthy and d.probe.error == "timeout"
    assert "accept backlog 2" in d.verdict()


@pytest.mark.unit
def test_free_port_is_reported_without_probing(tmp_path):
    port = free_port()
    d = Diagnosis.from_agent(hostfacts.host_facts(port, "127.0.0.1", "/health", 1.0), port)
    assert d.holders == () and d.probe is None and "nothing listens" in d.verdict()


def test_terminate_never_signals_a_reused_pid(reaper):
    proc = reaper.popen([sys.executable, "-c", "import time; time.sleep(600)"])
    info = procfs.process_info(proc.pid)
    result = signals.terminate([{"pid": proc.pid, "start_ticks": info["start_ticks"] + 1}], grace=0.1)
    assert result["outcomes"] == [{"pid": proc.pid, "outcome": "already gone"}]
    assert proc.poll() is None
    result = signals.terminate([{"pid": proc.pid, "start_ticks": info["start_ticks"]}], grace=2)
    assert result["outcomes"] == [{"pid": proc.pid, "outcome": "exited on SIGTERM"}]
    assert proc.wait(timeout=5) != 0
