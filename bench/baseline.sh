#!/usr/bin/env bash
# The hand-written runbook, as fast as bash makes it: the baseline cascade-ops is measured against.
# Usage: baseline.sh PORT APP_DIR AUTH_SRC PYTHON SECRET_FILE LOG
set -u
port=$1 app_dir=$2 auth_src=$3 python=$4 secret_file=$5 log=$6
curl -s -f -m 1 -o /dev/null "http://127.0.0.1:$port/health" && exit 0
pids=$(lsof -t -iTCP:"$port" -sTCP:LISTEN)
[ -n "$pids" ] && kill -9 $pids
cmp -s "$auth_src" "$app_dir/api/auth.py" || cp "$auth_src" "$app_dir/api/auth.py"
cd "$app_dir" || exit 1
CASCADE_JWT_SECRET="$(cat "$secret_file")" setsid "$python" -m uvicorn main:app --host 127.0.0.1 --port "$port" \
  </dev/null >>"$log" 2>&1 &
until curl -s -f -o /dev/null -m 1 "http://127.0.0.1:$port/health"; do sleep 0.02; done
