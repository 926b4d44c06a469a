#!/usr/bin/env bash
# Start coturn with turn/turnserver.conf, filling in the shared secret from the
# environment. Usage: P2PMED_TURN_SECRET=... turn/run-coturn.sh [extra turnserver args]
# Env: P2PMED_TURN_CONF (default: turnserver.conf next to this script),
#      P2PMED_TURN_RUNDIR (default: /run/p2pmed-turn; holds the filled-in config, mode 0600),
#      P2PMED_TURN_LAB=1 (allow a config with allow-loopback-peers: turnserver-lab.conf, one
#      host only, UNSAFE FOR PRODUCTION),
#      P2PMED_TURN_SECRET_PREVIOUS (during a secret rotation: the old secret, still accepted
#      beside P2PMED_TURN_SECRET so credentials handed out before the switch keep working).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
conf="${P2PMED_TURN_CONF:-$here/turnserver.conf}"
rundir="${P2PMED_TURN_RUNDIR:-/run/p2pmed-turn}"

if [ -z "${P2PMED_TURN_SECRET:-}" ]; then
    echo "run-coturn: P2PMED_TURN_SECRET is not set (use the same value as the signaling server)" >&2
    exit 2
fi
check_secret() {  # NAME VALUE
    if [ "${#2}" -lt 24 ]; then
        echo "run-coturn: $1 is too short (need >= 24 characters)" >&2
        exit 2
    fi
    case "$2" in
        *[!A-Za-z0-9_+/=.-]*)
            echo "run-coturn: $1 may only contain [A-Za-z0-9_+/=.-]" >&2
            exit 2;;
    esac
}
check_secret P2PMED_TURN_SECRET "$P2PMED_TURN_SECRET"
previous="${P2PMED_TURN_SECRET_PREVIOUS:-}"
if [ -n "$previous" ]; then
    check_secret P2PMED_TURN_SECRET_PREVIOUS "$previous"
    if [ "$previous" = "$P2PMED_TURN_SECRET" ]; then
        echo "run-coturn: P2PMED_TURN_SECRET_PREVIOUS is the same as P2PMED_TURN_SECRET" >&2
        exit 2
    fi
fi
if [ ! -f "$conf" ]; then
    echo "run-coturn: no config at $conf" >&2
    exit 2
fi
if grep -Eq '^[[:space:]]*allow-loopback-peers' "$conf"; then
    if [ "${P2PMED_TURN_LAB:-}" != 1 ]; then
        echo "run-coturn: refusing $conf: allow-loopback-peers is for tests only" >&2
        exit 2
    fi
    echo "run-coturn: WARNING: lab mode ($conf allows loopback peers): UNSAFE FOR PRODUCTION" >&2
fi
command -v turnserver >/dev/null || { echo "run-coturn: turnserver (coturn) not installed" >&2; exit 2; }

umask 077
mkdir -p "$rundir"
runtime="$rundir/turnserver.conf"
sed "s|@P2PMED_TURN_SECRET@|$P2PMED_TURN_SECRET|" "$conf" > "$runtime"
if [ -n "$previous" ]; then
    # coturn accepts every static-auth-secret it is given
    echo "static-auth-secret=$previous" >> "$runtime"
fi
chmod 600 "$runtime"
exec turnserver -c "$runtime" --pidfile "$rundir/turnserver.pid" "$@"
