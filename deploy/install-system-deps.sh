#!/usr/bin/env bash
# Installs the system packages the tests start for themselves, when they are missing.
# Debian/Ubuntu with apt; as root, or through sudo when it is there.
set -euo pipefail
needed=()
command -v redis-server >/dev/null || needed+=(redis-server)
[ ${#needed[@]} -eq 0 ] && exit 0
as_root=()
[ "$(id -u)" -eq 0 ] || as_root=(sudo)
echo "installing ${needed[*]} with apt-get"
export DEBIAN_FRONTEND=noninteractive
"${as_root[@]}" apt-get update -qq
"${as_root[@]}" apt-get install -y -qq --no-install-recommends "${needed[@]}" >/dev/null
