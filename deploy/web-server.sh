#!/bin/sh
# The web worker of the image: daphne (the default, as `runserver` uses) or uvicorn (faster,
# docs/performance.md), chosen by WEB_SERVER, on port 8000 behind the proxy (WEB_HOST and
# WEB_PORT change the address; the tests use them).
#
# Both trust X-Forwarded-For from the proxy only: nginx (deploy/nginx.conf.template)
# overwrites it with the address it saw, so a client cannot forge one. uvicorn needs to
# be told which peers are proxies; on the compose network only nginx reaches the workers
# (FORWARDED_ALLOW_IPS narrows it elsewhere).
#
# Not granian (measured for issue 21: docs/performance.md, "granian"): under granian 2.8.7 a
# close the server starts while Channels waits on receive() (bans 4003, drains 1012,
# credential changes 4011) does not reach the client within 15 s, so it is a benchmark
# choice only (bench/ --server granian), not a WEB_SERVER.
set -eu
host="${WEB_HOST:-0.0.0.0}"
port="${WEB_PORT:-8000}"
case "${WEB_SERVER:-daphne}" in
    daphne)
        exec daphne -b "$host" -p "$port" --proxy-headers config.asgi:application ;;
    uvicorn)
        exec uvicorn --host "$host" --port "$port" --proxy-headers --forwarded-allow-ips "${FORWARDED_ALLOW_IPS:-*}" \
            --no-access-log config.asgi:application ;;
    *)
        echo "WEB_SERVER must be daphne or uvicorn, got '${WEB_SERVER}'" >&2
        exit 2 ;;
esac
