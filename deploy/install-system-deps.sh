#!/usr/bin/env bash
# Installs the system packages the tests start for themselves, when they are missing:
# redis-server (tests/support/processes.py) and Debian's chromium, which the browser tests in
# tests/pages drive through Playwright (never `playwright install`: it downloads a browser).
# The deployment tests (tests/deploy) add PostgreSQL's server and nginx, which they start
# on free ports of their own, and docker-compose, whose `config` validates docker-compose.yml;
# tests/deploy/test_readme.py runs README.md's `npx --yes wscat@6`, and make test installs the
# npm clients of package.json (tests/support/node.py runs them), hence Node and npm. Noto's
# colour emoji font draws the reaction emoji in the browser tests' screenshots.
# Debian/Ubuntu with apt; as root, or through sudo when it is there.
set -euo pipefail
needed=()
command -v redis-server >/dev/null || needed+=(redis-server)
[ -x /usr/bin/chromium ] || needed+=(chromium)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || needed+=(postgresql)
[ -x /usr/sbin/nginx ] || needed+=(nginx)
command -v docker-compose >/dev/null || needed+=(docker-compose)
command -v npx >/dev/null || needed+=(nodejs npm)
[ -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || needed+=(fonts-noto-color-emoji)
[ ${#needed[@]} -eq 0 ] && exit 0
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing ${needed[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
# Their postinst scripts would start a system PostgreSQL (port 5432) and nginx (port 80);
# nothing needs those, so unless a policy is already in place, refuse service starts
# for the length of the install (policy-rc.d exit 101, as Debian's container images do).
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | "${as_root[@]}" tee /usr/sbin/policy-rc.d >/dev/null
    "${as_root[@]}" chmod 755 /usr/sbin/policy-rc.d
    trap '"${as_root[@]}" rm -f /usr/sbin/policy-rc.d' EXIT
fi
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
