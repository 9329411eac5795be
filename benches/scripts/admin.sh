#!/usr/bin/env bash
# The admin endpoint under hostile clients: hello with 2 workers and --admin, driven by wrk
# (32 connections, `Connection: close`, 4 s), first alone, then while a client holds 500 idle
# connections to the admin port and sends it 1 MiB requests in a loop. Prints both rates, their
# ratio, and how long a /metrics scrape took during the attack. Loopback only; every run stops
# by itself.
#   bash benches/scripts/admin.sh > benches/results/admin/admin.txt
set -euo pipefail
cd "$(dirname "$0")/../.."
command -v wrk >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }
cargo build --release --example hello -q
port=8131 admin=9131
./target/release/examples/hello --workers 2 --port $port --admin 127.0.0.1:$admin >/dev/null 2>&1 &
hp=$!
trap 'kill -INT $hp 2>/dev/null; wait $hp 2>/dev/null || true' EXIT
sleep 1
rate() {
  wrk -t2 -c32 -d4s --timeout 2s -H "Connection: close" "http://127.0.0.1:$port/" \
    | awk '/Requests\/sec/ {print $2}'
}
steady=$(rate)
# The hostile client: 500 silent connections, and 1 MiB requests one after another, for 6 s.
python3 - "$admin" <<'PY' &
import socket, sys, time
port = int(sys.argv[1])
idle = []
for _ in range(500):
    try:
        idle.append(socket.create_connection(("127.0.0.1", port)))
    except OSError:
        pass
end = time.time() + 6
big = b"GET /metrics HTTP/1.1\r\nx: " + b"a" * (1 << 20)
while time.time() < end:
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=2)
        s.sendall(big)
        s.recv(4096)
        s.close()
    except OSError:
        pass
PY
attacker=$!
sleep 0.5
scrape_start=$(date +%s%N)
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$admin/metrics" > /tmp/admin-scrape-code || true
scrape_ms=$(( ($(date +%s%N) - scrape_start) / 1000000 ))
attacked=$(rate)
wait $attacker || true
echo "hand-off rate alone: $steady req/s"
echo "hand-off rate with 500 idle admin connections and 1 MiB requests: $attacked req/s"
awk -v a="$attacked" -v s="$steady" 'BEGIN { printf "ratio: %.2f\n", a / s }'
echo "a /metrics scrape during the attack: HTTP $(cat /tmp/admin-scrape-code) in $scrape_ms ms"
