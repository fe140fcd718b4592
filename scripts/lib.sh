# Shared by scripts/test and scripts/bench-compare: the build cache, RabbitMQ, the tansu Kafka
# broker and the Python oslo.messaging 18.3.1 virtualenv. Source it from the repository root.

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/oslo-messaging-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

step() { printf '\n==> %s\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

require_cargo() {
    if ! command -v cargo >/dev/null; then
        echo "cargo is required: install Rust from https://rustup.rs" >&2
        exit 1
    fi
}

# The broker the tests use. When it is the default local one, install and start RabbitMQ if
# needed (a fresh Debian machine has none). Tests that need faults start nodes of their own.
ensure_rabbitmq() {
    export OSLO_MESSAGING_TEST_URL="${OSLO_MESSAGING_TEST_URL:-rabbit://guest:guest@127.0.0.1:5672/}"
    [ "$OSLO_MESSAGING_TEST_URL" = "rabbit://guest:guest@127.0.0.1:5672/" ] || return 0
    step "RabbitMQ"
    if ! command -v rabbitmqctl >/dev/null && [ ! -x /usr/sbin/rabbitmqctl ]; then
        as_root apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q rabbitmq-server
    fi
    export PATH="$PATH:/usr/sbin"
    broker_up() { timeout 60 rabbitmqctl -q status >/dev/null 2>&1; }
    if ! broker_up; then
        as_root rabbitmq-server -detached || true
        for _ in $(seq 1 60); do
            broker_up && break
            sleep 2
        done
    fi
    broker_up || { echo "RabbitMQ did not start" >&2; exit 1; }
    rabbitmqctl -q status | grep -m1 -i 'RabbitMQ version' || true
}

# The Kafka-protocol broker of the Kafka driver's tests and benchmarks: tansu, built once from
# crates.io into a cache (about 9 minutes); exports OSLO_MESSAGING_TANSU. Each test starts its
# own broker on a free port, in memory, or in an SQLite file (libsql) when a test restarts it or
# needs users that outlive the start that enables authentication.
TANSU_VERSION=0.6.0
TANSU_FEATURES=dynostore,libsql
ensure_tansu() {
    step "tansu $TANSU_VERSION (a Kafka-protocol broker)"
    local root="$HOME/.cache/tansu-$TANSU_VERSION-${TANSU_FEATURES//,/-}"
    if [ ! -x "$root/bin/tansu" ]; then
        CARGO_TARGET_DIR="$HOME/.cache/tansu-build" cargo install --locked tansu \
            --version "$TANSU_VERSION" --features "$TANSU_FEATURES" --root "$root"
        rm -rf "$HOME/.cache/tansu-build"
    fi
    export OSLO_MESSAGING_TANSU="$root/bin/tansu"
    "$OSLO_MESSAGING_TANSU" --version
}

# Python oslo.messaging 18.3.1 in a cached virtualenv, rebuilt when interop/requirements.txt
# changes; exports OSLO_MESSAGING_PYTHON.
ensure_python_venv() {
    step "Python oslo.messaging 18.3.1"
    local venv="${OSLO_MESSAGING_VENV:-$HOME/.cache/oslo-venv-18.3.1}"
    local stamp
    stamp="$(sha256sum interop/requirements.txt | cut -d' ' -f1)"
    if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$stamp" ]; then
        rm -rf "$venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --disable-pip-version-check -r interop/requirements.txt
        echo "$stamp" > "$venv/.requirements.sha256"
    fi
    "$venv/bin/python" -c 'import importlib.metadata as m; v = m.version("oslo.messaging"); assert v == "18.3.1", v; print("oslo.messaging", v)'
    export OSLO_MESSAGING_PYTHON="$venv/bin/python"
}

# The Python driver (oslo-messaging-py): builds its wheel with maturin (from the virtualenv of
# ensure_python_venv, which must run first) and installs it there; exports
# OSLO_MESSAGING_RS_WHEEL. Extra arguments go to maturin (--release for benchmarks).
ensure_python_driver() {
    step "Python driver wheel (oslo-messaging-rs)"
    local bin out wheel
    bin="$(dirname "$OSLO_MESSAGING_PYTHON")"
    out="$CARGO_TARGET_DIR/wheels"
    rm -f "$out"/oslo_messaging_rs-*.whl
    "$bin/maturin" build --locked -m oslo-messaging-py/Cargo.toml -o "$out" "$@"
    wheel="$(ls "$out"/oslo_messaging_rs-*.whl)"
    "$bin/pip" install -q --disable-pip-version-check --no-deps --force-reinstall "$wheel"
    export OSLO_MESSAGING_RS_WHEEL="$wheel"
}

# A throw-away copy of the virtualenv where the Python driver is registered as `rabbit` (and
# oslo.messaging's own rabbit and kombu drivers are not), for the functional tests that only
# run on a `rabbit://` URL. Prints the copy's python.
rabbit_as_rs_python() {
    local venv copy site
    venv="$(dirname "$(dirname "$OSLO_MESSAGING_PYTHON")")"
    copy="${TMPDIR:-/tmp}/oslo-venv-rabbit-as-rs"
    rm -rf "$copy"
    cp -a "$venv" "$copy"
    site="$(echo "$copy"/lib/python3*/site-packages)"
    sed -i '/^\(rabbit\|kombu\) *= */d' "$site"/oslo_messaging-*.dist-info/entry_points.txt
    sed -i 's/^rabbitrs *= *\(.*\)$/rabbitrs = \1\nrabbit = \1/' \
        "$site"/oslo_messaging_rs-*.dist-info/entry_points.txt
    echo "$copy/bin/python"
}
