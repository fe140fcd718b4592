#!/usr/bin/env bash
# oslo.messaging's own benchmark, tools/simulator.py of the 18.3.1 sdist, run as upstream runs
# it (monkey-patched with eventlet, its client always green), on kombu (rabbit://) and on the
# Rust engine (rabbitrs://), one after the other on the same broker, with the RPC server on
# each executor (eventlet, threading):
#   bench/simulator.sh [seconds of sending per measurement, default 10] [rounds, default 1]
# Prints, per case, the median over the rounds of the client's successful calls a second
# (summary.round_trip.count_p_s) or, for casts and notifications, of the messages the client
# sent a second (summary.client.count_p_s: each confirmed by the broker), and the ratio
# rabbitrs / rabbit. (The server's own rate is not used: its per-second buckets come from a
# timer that a busy eventlet hub delays, which makes it read several times too high.) Needs
# the release wheel installed in the virtualenv (scripts/bench-compare builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
ensure_python_venv >/dev/null
py="$OSLO_MESSAGING_PYTHON"
seconds=${1:-10}
rounds=${2:-1}
url="${OSLO_MESSAGING_TEST_URL:-rabbit://guest:guest@127.0.0.1:5672/}"
sim_dir="${OSLO_MESSAGING_SIMULATOR:-$HOME/.cache/oslo-simulator-18.3.1}"
if [ ! -f "$sim_dir/tools/simulator.py" ]; then
    step "oslo.messaging 18.3.1 sdist (tools/simulator.py)"
    tmp="$(mktemp -d)"
    "$(dirname "$py")/pip" download -q --disable-pip-version-check --no-deps \
        --no-binary :all: oslo.messaging==18.3.1 -d "$tmp"
    mkdir -p "$sim_dir"
    tar xzf "$tmp"/oslo*messaging-18.3.1.tar.gz -C "$sim_dir" --strip-components=1
    rm -rf "$tmp"
fi
sim="$sim_dir/tools/simulator.py"
out="$(mktemp -d)"
trap 'pkill -f "$sim" 2>/dev/null || true; rm -rf "$out"' EXIT

# run <scheme> <case> <round>: one measurement; prints messages a second.
run() {
    local scheme=$1 case=$2 round=$3 u t server client
    u="$scheme://${url#*://}"
    t="sim_${case//[^a-z0-9]/_}_${scheme}_${round}_$RANDOM"
    client=(rpc-client -p 64 --timeout 30 --sync call)
    case $case in
        call-1*) client=(rpc-client -p 1 --timeout 30 --sync call) ;;
        cast*) client+=(--is-cast) ;;
    esac
    case $case in
        notify*)
            "$py" "$sim" --url "$u" -tp "$t" -l 600 notify-server \
                >"$out/server.log" 2>&1 &
            server=$!
            sleep 3
            "$py" "$sim" --url "$u" -tp "$t" -l "$seconds" -j "$out/client.json" \
                notify-client -p 64 >"$out/client.log" 2>&1
            kill -INT "$server"
            wait "$server" || true
            "$py" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["summary"]["client"]["count_p_s"]))' "$out/client.json"
            return ;;
    esac
    local executor=eventlet
    case $case in *threading*) executor=threading ;; esac
    "$py" "$sim" --url "$u" -tp "$t" -s srv rpc-server -e "$executor" \
        >"$out/server.log" 2>&1 &
    server=$!
    sleep 3
    if ! "$py" "$sim" --url "$u" -tp "$t" "--targets=$t.srv" -l "$seconds" -j "$out/client.json" \
        "${client[@]}" >"$out/client.log" 2>&1; then
        kill "$server"
        tail -n 20 "$out/client.log" >&2
        return 1
    fi
    wait "$server" || true
    case $case in
        cast*) "$py" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["summary"]["client"]["count_p_s"]))' "$out/client.json" ;;
        *) "$py" -c 'import json, sys; s = json.load(open(sys.argv[1]))["summary"]; assert s["error"]["count"] == 0, s["error"]; print(round(s["round_trip"]["count_p_s"]))' "$out/client.json" ;;
    esac
}

median() { printf '%s\n' "$@" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }

printf '| case | rabbit (kombu) | rabbitrs | rabbitrs / rabbit |\n|---|---:|---:|---:|\n'
for case in "call-1, eventlet server" "call-64, eventlet server" "call-64, threading server" \
    "cast-64, eventlet server" "cast-64, threading server" "notify-64"; do
    declare -a kombu=() rs=()
    for round in $(seq "$rounds"); do
        kombu+=("$(run rabbit "$case" "$round")")
        rs+=("$(run rabbitrs "$case" "$round")")
    done
    k=$(median "${kombu[@]}") r=$(median "${rs[@]}")
    printf '| %s | %s | %s | %s× |\n' "$case" "$k" "$r" "$(python3 -c "print(f'{$r / $k:.2f}')")"
done
