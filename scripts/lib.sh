# Shared by scripts/test and scripts/bench-compare: the build cache, RabbitMQ and the Python
# oslo.messaging 18.3.1 virtualenv. Source it from the repository root.

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
