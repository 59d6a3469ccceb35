#!/bin/bash
# docker-entrypoint.sh of the lab's stand-in for `postgres:17-alpine` (tests/lab), written for
# the lab after the official image's documented behaviour:
#
#   POSTGRES_PASSWORD        superuser password; required to initialize, unless
#                            POSTGRES_HOST_AUTH_METHOD=trust
#   POSTGRES_USER            superuser name (default postgres)
#   POSTGRES_DB              database made at initialization (default: POSTGRES_USER)
#   POSTGRES_INITDB_ARGS     more initdb arguments (shell words, e.g. "--encoding=UTF8 --lc-collate=C")
#   POSTGRES_INITDB_WALDIR   a separate WAL directory
#   POSTGRES_HOST_AUTH_METHOD  pg_hba.conf method for network connections (default: the server's
#                            password_encryption, scram-sha-256)
#   each of the first four may come from a file instead: POSTGRES_PASSWORD_FILE, ...
#
# `postgres [ARGS]` (the default command), or just flags: initialize $PGDATA when it holds no
# database (PG_VERSION), then run the server as the postgres user (uid 70). An initialized data
# directory is used as it is: the variables above are then ignored. Anything else is run as given.
set -Eeuo pipefail

say() { printf '%s\n' "$@"; }
fail() { printf '%s\n' "$@" >&2; exit 1; }

# VAR from $VAR or from the file named by $VAR_FILE (not both), else DEFAULT; exported.
read_setting() {
    local name=$1 default=${2-} file_name="${1}_FILE"
    local value=${!name-} file=${!file_name-}
    if [[ -n $value && -n $file ]]; then
        fail "error: both $name and $file_name are set (but are exclusive)"
    fi
    if [[ -n $file ]]; then
        value=$(<"$file")
    fi
    export "$name=${value:-$default}"
    unset "$file_name"
}

wants_no_server() {  # postgres arguments that print something and exit
    local a
    for a in "$@"; do
        case $a in -'?' | --help | --describe-config | -V | --version) return 0 ;; esac
    done
    return 1
}

prepare_directories() {  # as root: the directories postgres needs, owned by it
    mkdir -p "$PGDATA" /var/run/postgresql
    chmod 0700 "$PGDATA" || true
    chmod 3775 /var/run/postgresql || true
    if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
        mkdir -p "$POSTGRES_INITDB_WALDIR"
        find "$POSTGRES_INITDB_WALDIR" ! -user postgres -exec chown postgres {} +
        chmod 0700 "$POSTGRES_INITDB_WALDIR"
    fi
    # Only the owner changes, as in the official image: a mounted folder keeps its group.
    find "$PGDATA" /var/run/postgresql ! -user postgres -exec chown postgres {} +
}

check_settings() {
    if [[ -z $POSTGRES_PASSWORD && $POSTGRES_HOST_AUTH_METHOD != trust ]]; then
        fail "Error: Database is uninitialized and superuser password is not specified." \
            "       You must specify POSTGRES_PASSWORD to a non-empty value for the" \
            "       superuser. For example, \"-e POSTGRES_PASSWORD=password\" on \"docker run\"." \
            "" \
            "       You may also use \"POSTGRES_HOST_AUTH_METHOD=trust\" to allow all" \
            "       connections without a password. This is *not* recommended." \
            "" \
            "       (matrix-installer lab stand-in for postgres:17-alpine)"
    fi
    if [[ $POSTGRES_HOST_AUTH_METHOD == trust ]]; then
        say "WARNING: POSTGRES_HOST_AUTH_METHOD has been set to \"trust\": every network" \
            "         connection is let in without a password." >&2
    fi
}

run_initdb() {
    local -a extra=()
    # The variable holds shell words (quotes allowed), as initdb would be typed.
    eval "extra=( $POSTGRES_INITDB_ARGS )"
    if [[ -n ${POSTGRES_INITDB_WALDIR:-} ]]; then
        extra+=(--waldir "$POSTGRES_INITDB_WALDIR")
    fi
    # initdb reads the password from a file; a trailing newline keeps an empty one acceptable.
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") "${extra[@]}"
}

allow_network_clients() {  # "$@": the server's arguments, which may change password_encryption
    local method=${POSTGRES_HOST_AUTH_METHOD:-}
    if [[ -z $method ]]; then
        method=$(postgres -C password_encryption "$@")
    fi
    printf '\n# matrix-installer lab image: network connections, as the official image allows them\n' \
        >>"$PGDATA/pg_hba.conf"
    printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
}

sql() {  # run SQL from stdin (or psql arguments) over the socket as the superuser
    PGHOST='' PGHOSTADDR='' psql -v ON_ERROR_STOP=1 --no-psqlrc --no-password \
        --username "$POSTGRES_USER" "$@"
}

create_database_and_run_init_files() {  # "$@": the server's arguments
    # A server on the socket only, for the set-up; no supervisor may think it is the real one.
    NOTIFY_SOCKET='' PGUSER=$POSTGRES_USER \
        pg_ctl -D "$PGDATA" -w -o "$(printf '%q ' "$@" -c "listen_addresses=" -p "${PGPORT:-5432}")" start
    export PGPASSWORD=${PGPASSWORD:-$POSTGRES_PASSWORD}
    local exists
    exists=$(sql --dbname postgres --tuples-only --set "db=$POSTGRES_DB" \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")
    if [[ -z ${exists//[[:space:]]/} ]]; then
        sql --dbname postgres --set "db=$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
    fi
    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [[ -e $f ]] || continue
        case $f in
            *.sh)
                if [[ -x $f ]]; then say "$0: running $f"; "$f"; else say "$0: sourcing $f"; . "$f"; fi ;;
            *.sql) say "$0: running $f"; sql --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) say "$0: running $f"; gunzip -c "$f" | sql --dbname "$POSTGRES_DB" ;;
            *.sql.xz) say "$0: running $f"; xzcat "$f" | sql --dbname "$POSTGRES_DB" ;;
            *) say "$0: ignoring $f" ;;
        esac
    done
    unset PGPASSWORD
    PGUSER=$POSTGRES_USER pg_ctl -D "$PGDATA" -m fast -w stop
}

main() {
    if [[ ${1:-} == -* ]]; then
        set -- postgres "$@"
    fi
    if [[ $# -eq 0 || $1 != postgres ]] || wants_no_server "$@"; then
        exec "$@"
    fi

    read_setting POSTGRES_PASSWORD
    read_setting POSTGRES_USER postgres
    read_setting POSTGRES_DB "$POSTGRES_USER"
    read_setting POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=}"

    if [[ $(id -u) == 0 ]]; then
        prepare_directories
        exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$BASH_SOURCE" "$@"
    fi
    mkdir -p "$PGDATA"
    chmod 0700 "$PGDATA" 2>/dev/null || true

    if [[ -s $PGDATA/PG_VERSION ]]; then
        say "" "PostgreSQL Database directory appears to contain a database; Skipping initialization" ""
    else
        check_settings
        ls /docker-entrypoint-initdb.d/ >/dev/null  # fail before initdb if it cannot be read
        shift  # "postgres": what follows are the server's arguments
        run_initdb
        allow_network_clients "$@"
        create_database_and_run_init_files "$@"
        set -- postgres "$@"
        say "" "PostgreSQL init process complete; ready for start up." ""
    fi
    exec "$@"
}

main "$@"
