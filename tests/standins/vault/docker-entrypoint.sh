#!/usr/bin/dumb-init /bin/sh
# STAND-IN entrypoint: hashicorp/vault's .release/docker/docker-entrypoint.sh, step for step, for
# Debian's /bin/sh (dash): `${1:0:1}` becomes a case, su-exec becomes setpriv (same effect: exec
# as vault:vault with vault's groups), and the capability step is applied to the ELF file that
# runs `vault` (the interpreter named on its #! line), which upstream is the vault binary itself.
set -e

ulimit -c 0

VAULT_CONFIG_DIR=/vault/config

if [ -n "$VAULT_LOCAL_CONFIG" ]; then
    echo "$VAULT_LOCAL_CONFIG" > "$VAULT_CONFIG_DIR/local.json"
fi

case "$1" in
    -*) set -- vault "$@" ;;
esac

if [ "$1" = 'server' ]; then
    shift
    set -- vault server \
        -config="$VAULT_CONFIG_DIR" \
        -dev-root-token-id="$VAULT_DEV_ROOT_TOKEN_ID" \
        -dev-listen-address="${VAULT_DEV_LISTEN_ADDRESS:-"0.0.0.0:8200"}" \
        "$@"
elif [ "$1" = 'version' ]; then
    set -- vault "$@"
elif vault --help "$1" 2>&1 | grep -q "vault $1"; then
    set -- vault "$@"
fi

if [ "$1" = 'vault' ]; then
    if [ -z "$SKIP_CHOWN" ]; then
        if [ "$(stat -c %u /vault/config)" != "$(id -u vault)" ]; then
            chown -R vault:vault /vault/config || echo "Could not chown /vault/config (may not have appropriate permissions)"
        fi
        if [ "$(stat -c %u /vault/logs)" != "$(id -u vault)" ]; then
            chown -R vault:vault /vault/logs
        fi
        if [ "$(stat -c %u /vault/file)" != "$(id -u vault)" ]; then
            chown -R vault:vault /vault/file
        fi
    fi

    if [ -z "$SKIP_SETCAP" ]; then
        vault_elf=$(sed -n '1s/^#!//p' "$(readlink -f "$(command -v vault)")")
        setcap cap_ipc_lock=+ep "$(readlink -f "$vault_elf")"
        if ! vault -version 1>/dev/null 2>/dev/null; then
            >&2 echo "Couldn't start vault with IPC_LOCK. Disabling IPC_LOCK, please use --privileged or --cap-add IPC_LOCK"
            setcap cap_ipc_lock=-ep "$(readlink -f "$vault_elf")"
        fi
    fi

    if [ "$(id -u)" = '0' ]; then
      set -- setpriv --reuid=vault --regid=vault --init-groups "$@"
    fi
fi

exec "$@"
