#!/usr/bin/env bash
# Idempotent setup: system packages (as root, when missing) and the repo's .venv.
set -euo pipefail
cd "$(dirname "$0")/.."
want_apt="${1:-runtime}"

need=()
if [ "$want_apt" = "test" ]; then
    command -v chromium >/dev/null || need+=(chromium)
    command -v turnserver >/dev/null || need+=(coturn)
    command -v nft >/dev/null || need+=(nftables)
    command -v ip >/dev/null || need+=(iproute2)
    command -v npm >/dev/null || need+=(npm)
    command -v certutil >/dev/null || need+=(libnss3-tools)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v haproxy >/dev/null || need+=(haproxy)
    command -v strace >/dev/null || need+=(strace)
fi
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing system packages: ${need[*]} (run as root or install them)" >&2
        exit 1
    fi
    echo "setup: installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
stamp=".venv/.installed-$want_apt"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/pip install -q --upgrade pip
    if [ "$want_apt" = "test" ]; then
        .venv/bin/pip install -q -e '.[test]'
    else
        .venv/bin/pip install -q -e .
    fi
    touch "$stamp"
fi

if [ "$want_apt" = "test" ] && [ ! -f tests/web/axe/node_modules/axe-core/axe.min.js ]; then
    (cd tests/web/axe && npm ci --no-audit --no-fund --silent)
fi
