#!/usr/bin/env bash
# System packages the test suite needs (Debian/Ubuntu): PostgreSQL server binaries for the
# throwaway test cluster (tests/pgserver.py) and Chromium for the Playwright browser tests.
# Idempotent and quiet when everything is present; runs `apt-get update` at most once.
# Needs root (or passwordless sudo) only when something is missing.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
chromium_path="${CHROMIUM_PATH:-/usr/bin/chromium}"

need_pg=0
need_chromium=0
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || need_pg=1
[ -x "$chromium_path" ] || need_chromium=1
need_font=0
[ -e /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc ] || need_font=1

if [ "$need_pg" = 0 ] && [ "$need_chromium" = 0 ] && [ "$need_font" = 0 ]; then
    echo "system deps: PostgreSQL and Chromium present"
    exit 0
fi

SUDO=()
if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        SUDO=(sudo -n)
    else
        echo "install-system-deps: need root to apt-get install" \
             "$([ "$need_pg" = 1 ] && echo 'postgresql postgresql-contrib') $([ "$need_chromium" = 1 ] && echo chromium)" >&2
        exit 1
    fi
fi

if ! command -v apt-get >/dev/null; then
    echo "install-system-deps: no apt-get; install PostgreSQL server binaries and Chromium" \
         "yourself (set PG_BINDIR / CHROMIUM_PATH if they are not in the Debian locations)" >&2
    exit 1
fi

"${SUDO[@]}" apt-get update
if [ "$need_pg" = 1 ]; then
    "${SUDO[@]}" apt-get install -y --no-install-recommends postgresql postgresql-contrib
fi
if [ "$need_chromium" = 1 ]; then
    "${SUDO[@]}" apt-get install -y chromium
fi
if [ "$need_font" = 1 ]; then
    # Screenshots of the (Chinese) UI need a CJK font; it is small and only read by Chromium.
    "${SUDO[@]}" apt-get install -y --no-install-recommends fonts-wqy-zenhei
fi
