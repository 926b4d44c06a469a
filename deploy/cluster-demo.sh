#!/usr/bin/env bash
# A local p2pmed cluster in one command (issue #15): Redis, three signaling servers sharing
# it, HAProxy in front (deploy/haproxy.cfg) and a demo patient node; prints the clinician
# URL (open it in a browser, or `p2pmed node --join URL`). Ctrl-C stops everything.
#
#   bash deploy/cluster-demo.sh            # HAProxy on 127.0.0.1:8080
#   P2PMED_LB_PORT=9000 bash deploy/cluster-demo.sh
#
# Needs Debian's redis-server and haproxy, and the venv (make demo sets it up). Everything
# lives in a temporary directory that is removed on exit; nothing listens beyond loopback.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PY:-$ROOT/.venv/bin/python}
LB_PORT=${P2PMED_LB_PORT:-8080}
REDIS_SERVER=$(command -v redis-server || echo /usr/bin/redis-server)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)
for bin in "$PY" "$REDIS_SERVER" "$HAPROXY"; do
    [ -x "$bin" ] || { echo "cluster-demo: missing $bin (apt-get install redis-server haproxy; make demo)" >&2; exit 2; }
done

WORK=$(mktemp -d /tmp/p2pmed-cluster.XXXXXX)
chmod 700 "$WORK"
pids=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_http() {  # url, what
    "$PY" - "$1" "$2" <<'PYEOF'
import sys, time, urllib.request
url, what = sys.argv[1], sys.argv[2]
for _ in range(300):
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            if r.status == 200:
                sys.exit(0)
    except Exception:
        time.sleep(0.1)
sys.exit(f"cluster-demo: {what} not ready at {url}")
PYEOF
}

REDIS_PORT=$(free_port)
"$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    </dev/null >"$WORK/redis.log" 2>&1 &
pids+=($!)
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
"$PY" - "$REDIS_PORT" <<'PYEOF'
import socket, sys, time
for _ in range(300):
    try:
        with socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1) as s:
            s.sendall(b"PING\r\n")
            if s.recv(16).startswith(b"+PONG"):
                sys.exit(0)
    except OSError:
        time.sleep(0.05)
sys.exit("cluster-demo: redis-server did not start")
PYEOF

# one token key for the whole cluster; `p2pmed token` mints from a data dir holding it
mkdir -m 700 "$WORK/mint"
(umask 077 && "$PY" -c 'import secrets; print(secrets.token_hex(32))' >"$WORK/mint/token-key")

ports=()
for i in 1 2 3; do
    port=$(free_port)
    ports+=("$port")
    mkdir -m 700 "$WORK/sig$i"
    P2PMED_PUBLIC_ORIGIN="http://127.0.0.1:$LB_PORT,http://localhost:$LB_PORT" \
        "$PY" -m p2pmed signaling --host 127.0.0.1 --port "$port" --data-dir "$WORK/sig$i" \
        --redis "$REDIS_URL" --token-key "$WORK/mint/token-key" --server-id "sig$i" \
        --trusted-proxy 127.0.0.1/32 --join-rate 200 --pending-per-ip 20000 --log-level warning \
        </dev/null >"$WORK/sig$i.log" 2>&1 &
    pids+=($!)
done
for i in 1 2 3; do wait_http "http://127.0.0.1:${ports[$((i - 1))]}/healthz" "signaling server sig$i"; done

P2PMED_LB_BIND="127.0.0.1:$LB_PORT" P2PMED_SIG1="127.0.0.1:${ports[0]}" \
    P2PMED_SIG2="127.0.0.1:${ports[1]}" P2PMED_SIG3="127.0.0.1:${ports[2]}" \
    "$HAPROXY" -db -f "$ROOT/deploy/haproxy.cfg" </dev/null >"$WORK/haproxy.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$LB_PORT/healthz" "HAProxy"

LB="http://127.0.0.1:$LB_PORT"
mint() { "$PY" -m p2pmed token --server "$LB" --data-dir "$WORK/mint" --session demo --role "$1" --ttl 3600; }
PATIENT_URL=$(mint patient)
CLINICIAN_URL=$(mint clinician)

"$PY" -m p2pmed node --join "$PATIENT_URL" --media none --data-dir "$WORK/patient" \
    </dev/null >"$WORK/patient.log" 2>&1 &
pids+=($!)

echo "p2pmed cluster: Redis $REDIS_URL, servers sig1..3 on ports ${ports[*]}, HAProxy on $LB"
echo "logs in $WORK (removed on exit); Ctrl-C stops everything"
echo "clinician URL: $CLINICIAN_URL"
wait -n "${pids[@]}" || true
echo "cluster-demo: a process exited; stopping" >&2
exit 1
