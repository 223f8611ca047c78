#!/bin/sh
# The upstream image's entrypoint, same behaviour: options alone run traefik with them; a traefik
# subcommand (`version`, `healthcheck`) runs through traefik; anything else is executed as given.
set -e

if [ "${1#-}" != "$1" ]; then
    set -- traefik "$@"
fi

if traefik "$1" --help >/dev/null 2>&1; then
    set -- traefik "$@"
else
    echo "= '$1' is not a Traefik command: assuming shell execution." 1>&2
fi

exec "$@"
