#!/bin/sh
# Entrypoint of the lab's stand-in for the official `redis` image (tests/lab), written after the
# official docker-entrypoint.sh's documented behaviour:
#   - a first argument that is an option (-...) or a config file (*.conf) runs redis-server with it;
#   - redis-server started as root gives the working directory (/data) to the redis user and runs
#     as it (uid 999), as the official image does with gosu;
#   - a umask of 0077 unless one was set;
#   - without a config file that says otherwise, `--protected-mode no` (the container's network is
#     what protects it);
#   - anything else (redis-cli, sh, ...) runs as given.
set -e

if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' +
    exec setpriv --reuid=999 --regid=1000 --clear-groups -- "$0" "$@"
fi

um="$(umask)"
if [ "$um" = '0022' ]; then
    umask 0077
fi

if [ "$1" = 'redis-server' ]; then
    protected=1
    if [ -f "${2:-}" ] && grep -q '^protected-mode' "$2"; then
        protected=
    fi
    if [ -n "$protected" ]; then
        set -- "$@" --protected-mode no
    fi
fi

exec "$@"
