#!/usr/bin/env bash
# CPU time per operation of client, server and broker for one workload: where the time goes.
#   bench/cpu-per-op.sh <rust|raw-ours|raw-amqprs|python|python-rs> <operations> <in flight>
#                       <payload bytes> [--cast] [--eventlet]
# Reads utime+stime of the server and of RabbitMQ's beam.smp from /proc before and after, and
# the client's with /usr/bin/time. Needs release builds (scripts/bench-compare makes them).
# python: both sides are interop/bench_peer.py on oslo.messaging's kombu driver; python-rs:
# the same on the Rust engine (rabbitrs://; the wheel installed in the virtualenv). --eventlet
# (Python only) runs both monkey-patched.
set -euo pipefail
impl=$1 n=$2 c=$3 b=$4
shift 4
bin="${CARGO_TARGET_DIR:-$HOME/.cache/oslo-messaging-target}/release"
url="${OSLO_MESSAGING_TEST_URL:-rabbit://guest:guest@127.0.0.1:5672/}"
t="cpu_${RANDOM}"
py="${OSLO_MESSAGING_PYTHON:-$HOME/.cache/oslo-venv-18.3.1/bin/python}"
peer="$(dirname "$0")/../interop/bench_peer.py"
pyurl=$url
[ "$impl" = python-rs ] && pyurl="rabbitrs://${url#*://}"
green=()
for a in "$@"; do [ "$a" = --eventlet ] && green=(--eventlet); done
set -- $(printf '%s\n' "$@" | grep -vx -- --eventlet || true)
case $impl in
    rust) "$bin/oslo-messaging" --url "$url" --exchange "$t" --json bench rpc-server --topic "$t" >/dev/null & ;;
    raw-*) "$bin/raw-amqp" --url "$url" --client "${impl#raw-}" --exchange "$t" rpc-server --topic "$t" >/dev/null & ;;
    # stdin stays open (the peer stops at its end) until the trap below kills the sleep.
    python*) sleep 100000 2>/dev/null | "$py" "$peer" rpc-server --url "$pyurl" --exchange "$t" --topic "$t" "${green[@]}" >/dev/null & ;;
    *) echo "unknown implementation $impl" >&2; exit 64 ;;
esac
server=$!
trap 'kill $server 2>/dev/null || true; pkill -P $$ -x sleep 2>/dev/null || true' EXIT
sleep 0.5
case $impl in python*) sleep 3 ;; esac  # the interpreter and oslo take a while to import
broker=$(pgrep -o beam.smp)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
s0=$(ticks "$server") b0=$(ticks "$broker")
case $impl in
    rust) out=$({ /usr/bin/time -f "%U %S" "$bin/oslo-messaging" --url "$url" --exchange "$t" --json bench rpc-client --topic "$t" --calls "$n" -c "$c" --payload-size "$b" "$@"; } 2>&1) ;;
    raw-*) out=$({ /usr/bin/time -f "%U %S" "$bin/raw-amqp" --url "$url" --client "${impl#raw-}" --exchange "$t" rpc-client --topic "$t" --calls "$n" -c "$c" --payload-size "$b" "$@"; } 2>&1) ;;
    python*) out=$({ /usr/bin/time -f "%U %S" "$py" "$peer" rpc-client --url "$pyurl" --exchange "$t" --topic "$t" --calls "$n" --concurrency "$c" --payload-size "$b" "${green[@]}" "$@"; } 2>&1) ;;
esac
s1=$(ticks "$server") b1=$(ticks "$broker")
hz=$(getconf CLK_TCK)
rate=$(echo "$out" | grep '"mode"' | python3 -c 'import json, sys; print(round(json.load(sys.stdin)["throughput"]))')
client=$(echo "$out" | tail -1 | awk '{print $1 + $2}')
python3 - "$impl" "$n" "$c" "$b" "$rate" "$client" "$((s1 - s0))" "$((b1 - b0))" "$hz" "${green[*]} $*" <<'PY'
import sys
impl, n, c, b, rate, client, server, broker, hz, extra = sys.argv[1:]
n, hz = int(n), int(hz)
us = lambda seconds: float(seconds) * 1e6 / n
print(f"{impl} {extra or 'call'} c={c} b={b}: {rate}/s; CPU per op: client {us(client):.0f} us, "
      f"server {us(int(server) / hz):.0f} us, broker {us(int(broker) / hz):.0f} us")
PY
