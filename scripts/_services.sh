# Sourced by scripts/test and .ci/run: install the system programs the tests start their own
# copies of (they never use the machine's running services), from Debian, when missing.
# Usage: install_services [extra Debian packages...]. Without root or sudo it only says what
# is missing: the tests that need a missing program are skipped with the reason.
install_services() {
    local missing=("$@")
    command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    command -v mosquitto_pub >/dev/null 2>&1 || missing+=(mosquitto-clients)
    # The multi-host tests (tests/deploy) make network namespaces with ip(8).
    command -v ip >/dev/null 2>&1 || missing+=(iproute2)
    # The PostgreSQL store's tests start their own cluster with Debian's initdb and pg_ctl.
    compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
    # The NATS cluster tests (tests/support/nats.py) start three nats-server nodes of their own.
    command -v nats-server >/dev/null 2>&1 || [[ -x /usr/sbin/nats-server ]] || missing+=(nats-server)
    ((${#missing[@]})) || return 0
    local sudo=""
    if [[ $(id -u) -ne 0 ]]; then
        if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
            echo "not installed (no root): ${missing[*]}; tests that need them are skipped" >&2
            return 0
        fi
        sudo="sudo -n"
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "not installed (no apt-get): ${missing[*]}; tests that need them are skipped" >&2
        return 0
    fi
    echo "installing ${missing[*]}" >&2
    DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}
