"""The demo backend's recovery written for pyinfra, so recover_bench.py can time it beside ours:
`pyinfra @local pyinfra_local_recover.py --data port=... --data app_dir=...`. One shell operation,
the fastest a pyinfra deploy of this job can be (1 s probe, TERM+CONT, KILL after 5 s, copy the
auth module, detached start, poll every 20 ms)."""

from pyinfra import host
from pyinfra.operations import server

server.shell(
    name="recover the demo backend",
    commands=[
        f"""
port={int(host.data.port)}
app_dir='{host.data.app_dir}'
curl -s -f -m 1 -o /dev/null "http://127.0.0.1:$port/health" && exit 0
pids=$(lsof -t -iTCP:$port -sTCP:LISTEN)
[ -n "$pids" ] && kill -TERM $pids && kill -CONT $pids
i=0
while lsof -t -iTCP:$port -sTCP:LISTEN >/dev/null && [ $i -lt 250 ]; do sleep 0.02; i=$((i + 1)); done
pids=$(lsof -t -iTCP:$port -sTCP:LISTEN)
[ -n "$pids" ] && kill -KILL $pids
cmp -s '{host.data.auth_src}' "$app_dir/api/auth.py" || cp '{host.data.auth_src}' "$app_dir/api/auth.py"
cd "$app_dir"
CASCADE_JWT_SECRET="$(cat '{host.data.secret_file}')" setsid '{host.data.python}' -m uvicorn main:app \\
  --host 127.0.0.1 --port $port </dev/null >>'{host.data.log}' 2>&1 &
until curl -s -f -o /dev/null -m 1 "http://127.0.0.1:$port/health"; do sleep 0.02; done
"""
    ],
)
