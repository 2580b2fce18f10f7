"""The same recovery as cascade-ops's, written for pyinfra, so both run in one benchmark.

Used by fleet_bench.py when pyinfra is installed: `pyinfra INVENTORY pyinfra_recover.py`. One shell
operation per host, the fastest a pyinfra deploy of this job can be (1 s probe, TERM+CONT, KILL
after 5 s, detached start, poll every 20 ms).
"""

from pyinfra import host
from pyinfra.operations import server

server.shell(
    name="recover the light backend",
    commands=[
        f"""
port={int(host.data.port)}
curl -s -f -m 1 -o /dev/null "http://127.0.0.1:$port/health" && exit 0
pids=$(lsof -t -iTCP:$port -sTCP:LISTEN)
[ -n "$pids" ] && kill -TERM $pids && kill -CONT $pids
i=0
while lsof -t -iTCP:$port -sTCP:LISTEN >/dev/null && [ $i -lt 250 ]; do sleep 0.02; i=$((i + 1)); done
pids=$(lsof -t -iTCP:$port -sTCP:LISTEN)
[ -n "$pids" ] && kill -KILL $pids
setsid {host.data.python} {host.data.backend} $port </dev/null >/dev/null 2>&1 &
until curl -s -f -o /dev/null -m 1 "http://127.0.0.1:$port/health"; do sleep 0.02; done
"""
    ],
)
