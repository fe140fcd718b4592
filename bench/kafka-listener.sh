#!/usr/bin/env bash
# What a Kafka notification listener costs, on a fresh tansu broker of its own:
#   bench/kafka-listener.sh drain <rust|python> <notifications>
#       a listener (pool "p") is started, then our notifier sends the notifications of 100 B
#       at once; prints the listener's rate first to last, its CPU per notification (from
#       /proc, including its idle second before they came) and its peak RSS.
#   bench/kafka-listener.sh soak <minutes>
#       our listener for that long, fed bursts of 20,000 every 2 s or so; prints its RSS and CPU
#       every 20 s, then what it received against what was sent.
# Needs release builds (scripts/bench-compare makes them) and tansu (scripts/test builds it).
set -euo pipefail
mode=$1
bin="${CARGO_TARGET_DIR:-$HOME/.cache/oslo-messaging-target}/release/oslo-messaging"
tansu="${OSLO_MESSAGING_TANSU:-$HOME/.cache/tansu-0.6.0-dynostore-libsql/bin/tansu}"
py="${OSLO_MESSAGING_PYTHON:-$HOME/.cache/oslo-venv-18.3.1/bin/python}"
peer="$(cd "$(dirname "$0")/.." && pwd)/interop/bench_peer.py"
work=$(mktemp -d)
port=$((19100 + RANDOM % 800)) topic="kl$RANDOM"
url="kafka://127.0.0.1:$port/"
"$tansu" broker --listener-url "tcp://127.0.0.1:$port" --advertised-listener-url "tcp://127.0.0.1:$port" \
    --storage-engine memory://tansu/ >"$work/tansu.log" 2>&1 &
broker=$!
trap 'kill $broker ${listener:-} 2>/dev/null || true; pkill -P $$ -x sleep 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "ready in" "$work/tansu.log" && break; sleep 0.1; done
for p in audit debug info warn error critical sample; do
    "$tansu" topic create "$topic.$p" --partitions 1 --broker "tcp://127.0.0.1:$port" >/dev/null
done
# waits (at most a minute) for the listener's JSON line with this event
wait_for() { for _ in $(seq 1200); do grep -q "\"event\": *\"$1\"" "$work/out" && return 0; sleep 0.05; done; echo "no $1 from the listener" >&2; exit 1; }
notify() { "$bin" --url "$url" --json bench notify-client --topic "$topic" --calls "$1" >/dev/null; }
cpu() { awk '{printf "%.2f", ($14 + $15) / 100}' "/proc/$listener/stat"; } # assumes CLK_TCK 100
rss() { awk '/VmRSS/ {print $2}' "/proc/$listener/status"; }
start_listener() { # <rust|python> <count>
    case $1 in
        rust) "$bin" --url "$url" --json bench notify-server --topic "$topic" --pool p --count "$2" >"$work/out" 2>/dev/null & ;;
        # stdin stays open (the peer stops at its end) until the trap kills the sleep.
        python) sleep 100000 2>/dev/null | "$py" "$peer" notify-server --url "$url" --topic "$topic" --pool p --count "$2" >"$work/out" 2>/dev/null & ;;
        *) echo "unknown implementation $1" >&2; exit 64 ;;
    esac
    wait_for ready
    listener=$(grep -o '"pid": *[0-9]*' "$work/out" | grep -o '[0-9]*$')
    sleep 1
}
case $mode in
    drain)
        impl=$2 n=$3
        start_listener "$impl" "$n"
        notify "$n"
        wait_for done
        used=$(cpu) peak=$(awk '/VmHWM/ {print $2}' "/proc/$listener/status")
        python3 - "$impl" "$n" "$used" "$peak" "$work/out" <<'PY'
import json, sys
impl, n, used, peak, out = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4], sys.argv[5]
done = next(json.loads(l) for l in open(out) if '"done"' in l)
rate = n / (done["last_ts"] - done["first_ts"])
print(f"{impl}: {done['received']} of {n} at {rate:.0f}/s first to last; "
      f"CPU {used:.2f} s = {used / n * 1e6:.1f} us per notification; peak RSS {peak} KiB")
PY
        ;;
    soak)
        minutes=$2
        start_listener rust 1000000000
        sent=0 end=$((SECONDS + minutes * 60)) next=$SECONDS
        echo "seconds rss_kib cpu_s sent"
        while [ $SECONDS -lt $end ]; do
            notify 20000
            sent=$((sent + 20000))
            sleep 2
            if [ $SECONDS -ge $next ]; then
                echo "$SECONDS $(rss) $(cpu) $sent"
                next=$((SECONDS + 20))
            fi
        done
        sleep 5
        echo "$SECONDS $(rss) $(cpu) $sent"
        kill -INT "$listener"
        wait_for stopped
        received=$(grep '"stopped"' "$work/out" | grep -o '"received": *[0-9]*' | grep -o '[0-9]*$')
        echo "sent $sent, received $received"
        ;;
    *) echo "usage: $0 drain <rust|python> <n> | soak <minutes>" >&2; exit 64 ;;
esac
