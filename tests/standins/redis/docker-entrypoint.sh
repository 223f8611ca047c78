#!/bin/sh
# Minimal docker-entrypoint.sh with the upstream redis image's contract (see the Dockerfile).
set -eu
if [ "${1:-}" = redis-server ] && [ "$(id -u)" = 0 ]; then
    chown -R redis:redis /data
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi
exec "$@"
