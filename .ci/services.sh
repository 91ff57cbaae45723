#!/usr/bin/env bash
# Backing services of fraudflow's production profile, for CI and machines without Docker:
# a throwaway PostgreSQL cluster and a Redis, both on 127.0.0.1 on free ports, all state under <dir>.
#
#   .ci/services.sh start  <dir>   # apt-installs postgresql / redis-server if missing, starts both,
#                                  # writes <dir>/services.env and prints its lines on stdout
#   .ci/services.sh stop   <dir>   # stops both (data is kept; start again reuses it)
#   .ci/services.sh status <dir>   # exit 0 only if both are up
#
# Usage:  eval "$(.ci/services.sh start /tmp/ff-services)"   (or: source /tmp/ff-services/services.env)
#   FRAUDFLOW_POSTGRES_URL=postgresql://fraudflow:fraudflow@127.0.0.1:<port>  -- append /airflow, /mlflow, /feast
#   FRAUDFLOW_REDIS_URL=redis://:fraudflow-redis@127.0.0.1:<port>  -- Redis with AUTH, as production runs it
#
# Idempotent: `start` on running services re-prints the env; on a stopped cluster it restarts it
# (same port when still free). Progress goes to stderr, the env lines alone to stdout.
# PostgreSQL refuses to run as root, so as root the cluster runs as the `postgres` system user
# (created if missing); every parent directory of <dir> must then be traversable by it.
# The cluster is tuned for tests, not durability (fsync=off, synchronous_commit=off).
set -euo pipefail

readonly DB_ROLE=fraudflow DB_PASSWORD=fraudflow
# Redis requires a password (from its config file, not the command line), so every client path
# (Celery, Feast's online store, the tests) is exercised with AUTH.
readonly REDIS_PASSWORD=fraudflow-redis
readonly DATABASES=(airflow mlflow feast)

log() { echo "services.sh: $*" >&2; }
die() { echo "services.sh: ERROR: $*" >&2; exit 1; }

usage() { echo "usage: $0 start|stop|status <dir>" >&2; exit 2; }
[[ $# -eq 2 ]] || usage
action=$1
case $action in start | stop | status) ;; *) usage ;; esac
if [[ $action != start && ! -d $2 ]]; then
    log "$2 does not exist: nothing is running there"
    [[ $action == stop ]] && exit 0 || exit 1
fi
mkdir -p "$2" || die "cannot create $2"
dir=$(cd "$2" && pwd -P)
pgdata=$dir/pg
env_file=$dir/services.env
redis_pidfile=$dir/redis.pid

# One invocation at a time per <dir> (parallel test sessions may share it). Daemons are started
# with fd 9 closed (9>&-): an inherited lock fd would keep the lock held for the daemon's lifetime.
exec 9>"$dir/.services.lock"
flock -w 300 9 || die "timed out waiting for the lock $dir/.services.lock"

find_pg_bindir() {
    local d
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x $d/postgres && -x $d/initdb && -x $d/pg_ctl ]]; then
            echo "$d"
            return 0
        fi
    done
    return 1
}

ensure_packages() {
    local missing=() sudo=()
    find_pg_bindir >/dev/null || missing+=(postgresql)
    command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ $EUID -ne 0 ]]; then
        sudo -n true 2>/dev/null || die "${missing[*]} missing and apt-get needs root: run as root, give passwordless sudo, or: sudo apt-get install -y ${missing[*]}"
        sudo=(sudo -n)
    fi
    local apt=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0
        -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    log "installing ${missing[*]} with apt-get (log: $dir/apt.log)"
    if ! "${apt[@]}" install --no-install-recommends "${missing[@]}" >"$dir/apt.log" 2>&1 9>&-; then
        log "apt-get install failed; apt-get update and retry"
        "${apt[@]}" update >>"$dir/apt.log" 2>&1 9>&- || { tail -n 20 "$dir/apt.log" >&2; die "apt-get update failed (log: $dir/apt.log)"; }
        "${apt[@]}" install --no-install-recommends "${missing[@]}" >>"$dir/apt.log" 2>&1 9>&- \
            || { tail -n 20 "$dir/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $dir/apt.log)"; }
    fi
    find_pg_bindir >/dev/null || die "postgresql installed but no server binaries under /usr/lib/postgresql/*/bin"
    command -v redis-server >/dev/null || die "redis-server installed but not on PATH"
}

# Is something listening on 127.0.0.1:$1?
port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    command -v ss >/dev/null && [[ -n $(ss -Htln "sport = :$1" 2>/dev/null) ]] && return 0
    return 1
}

# A free port below Linux's ephemeral range (32768+), so outgoing connections cannot take it.
free_port() {
    local p i
    for i in $(seq 1 200); do
        p=$((20000 + RANDOM % 12000))
        port_in_use "$p" || { echo "$p"; return 0; }
    done
    die "no free TCP port found on 127.0.0.1"
}

# The port used last time if it is free again, else a new one.
pick_port() {
    local f=$1 p
    if [[ -s $f ]]; then
        p=$(<"$f")
        [[ $p =~ ^[0-9]+$ ]] && ! port_in_use "$p" && { echo "$p"; return 0; }
    fi
    free_port
}

# Is pid $1 a live process named $2? Zombies do not count: a container's PID 1 may be slow to (or
# never) reap daemons whose parent exited, and kill -0 / pg_ctl status succeed on a zombie.
alive() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    [[ $stat == *"($2)"* && $(awk '{print $1}' <<<"${stat##*) }") != Z ]]
}
alive_redis() { alive "$1" redis-server; }

# ---------------------------------------------------------------- PostgreSQL
if [[ $EUID -eq 0 ]]; then
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

pg_ctl_() { as_pg "$(find_pg_bindir)/pg_ctl" "$@"; }

pg_running() {
    [[ -s $pgdata/PG_VERSION && -s $pgdata/postmaster.pid ]] && alive "$(head -n 1 "$pgdata/postmaster.pid")" postgres \
        && find_pg_bindir >/dev/null && pg_ctl_ status -D "$pgdata" >/dev/null 2>&1
}

pg_port() { sed -n 4p "$pgdata/postmaster.pid"; }

pg_superuser_psql() {
    local port=$1
    shift
    PGPASSWORD=$(<"$dir/pg_superuser.pw") PGCONNECT_TIMEOUT=10 "$(find_pg_bindir)/psql" -X -q \
        -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres -d postgres "$@"
}

start_pg() {
    local bindir port
    bindir=$(find_pg_bindir)
    if [[ $EUID -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        log "creating the postgres system user"
        useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres \
            || die "could not create the postgres system user (PostgreSQL refuses to run as root)"
    fi
    if [[ ! -s $pgdata/PG_VERSION ]]; then
        if [[ -d $pgdata && -n $(ls -A "$pgdata") ]]; then
            die "$pgdata exists, is not empty and holds no cluster (an interrupted initdb?): remove it and retry"
        fi
        mkdir -p "$pgdata"
        if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$pgdata"; fi
        chmod 700 "$pgdata"
        if ! as_pg test -w "$pgdata"; then
            chmod o+x "$dir" 2>/dev/null || true
            as_pg test -w "$pgdata" || die "user postgres cannot reach $pgdata: a parent directory of $dir is not traversable by others (e.g. pytest's 0700 /tmp/pytest-of-root); chmod o+x it or pick another <dir>"
        fi
        # Superuser password for the script's own admin connections (no unix socket, see below).
        (umask 077 && head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$dir/pg_superuser.pw")
        if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$dir/pg_superuser.pw"; fi
        log "initdb $pgdata ($("$bindir/postgres" --version))"
        as_pg "$bindir/initdb" -D "$pgdata" -U postgres --pwfile="$dir/pg_superuser.pw" \
            --auth-host=scram-sha-256 --auth-local=peer --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
            || { tail -n 20 "$dir/initdb.log" >&2; die "initdb failed (log: $dir/initdb.log)"; }
        # TCP on 127.0.0.1 only; no unix socket, so no socket-path length limit and no /run/postgresql.
        cat >>"$pgdata/postgresql.conf" <<'EOF'

# --- fraudflow .ci/services.sh: throwaway test cluster ---
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 128MB
fsync = off
synchronous_commit = off
full_page_writes = off
log_min_messages = warning
EOF
    fi
    if pg_running; then
        port=$(pg_port)
        log "postgres already running on 127.0.0.1:$port"
    else
        if [[ $EUID -eq 0 ]]; then chown -R postgres:postgres "$pgdata"; fi
        rm -f "$pgdata/postmaster.pid" # stale after a crash/reboot (pg_ctl status said not running)
        touch "$dir/postgres.log"
        if [[ $EUID -eq 0 ]]; then chown postgres:postgres "$dir/postgres.log"; fi
        local attempt lines
        for attempt in 1 2 3; do
            port=$(pick_port "$dir/pg.port")
            log "starting postgres on 127.0.0.1:$port"
            lines=$(wc -l <"$dir/postgres.log")
            pg_ctl_ start -D "$pgdata" -l "$dir/postgres.log" -o "-p $port" -w -t 60 >/dev/null 9>&- && break
            # Another process may have bound the port between our check and postgres' bind.
            if [[ $attempt -lt 3 ]] && tail -n "+$((lines + 1))" "$dir/postgres.log" | grep -q "could not bind"; then
                log "port $port was taken meanwhile, retrying on another"
                rm -f "$dir/pg.port"
                continue
            fi
            tail -n 20 "$dir/postgres.log" >&2
            die "postgres did not start (log: $dir/postgres.log)"
        done
    fi
    echo "$port" >"$dir/pg.port"
    # Role and databases (idempotent).
    local db_array
    db_array=$(printf "'%s'," "${DATABASES[@]}")
    pg_superuser_psql "$port" <<EOF >/dev/null || die "could not create role $DB_ROLE / databases ${DATABASES[*]}"
SELECT format('CREATE ROLE %I LOGIN CREATEDB PASSWORD %L', '$DB_ROLE', '$DB_PASSWORD')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$DB_ROLE')\gexec
SELECT format('CREATE DATABASE %I OWNER %I', d, '$DB_ROLE')
  FROM unnest(ARRAY[${db_array%,}]) AS d
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = d)\gexec
EOF
    PG_PORT=$port
}

stop_pg() {
    if pg_running; then
        log "stopping postgres (127.0.0.1:$(pg_port))"
        pg_ctl_ stop -D "$pgdata" -m fast -w -t 60 >/dev/null || die "postgres did not stop (log: $dir/postgres.log)"
    else
        log "postgres not running"
    fi
}

# ---------------------------------------------------------------- Redis

redis_pid() {
    local pid
    [[ -s $redis_pidfile ]] || return 1
    pid=$(<"$redis_pidfile")
    [[ $pid =~ ^[0-9]+$ ]] && alive_redis "$pid" || return 1
    echo "$pid"
}

start_redis() {
    local port i
    if redis_pid >/dev/null; then
        port=$(<"$dir/redis.port")
        log "redis already running on 127.0.0.1:$port"
    else
        rm -f "$redis_pidfile"
        mkdir -p "$dir/redis"
        local attempt up=0 pid
        for attempt in 1 2 3; do
            port=$(pick_port "$dir/redis.port")
            log "starting redis on 127.0.0.1:$port"
            (umask 077 && echo "requirepass $REDIS_PASSWORD" >"$dir/redis.conf")
            redis-server "$dir/redis.conf" --bind 127.0.0.1 --port "$port" --save '' --appendonly no --daemonize yes \
                --pidfile "$redis_pidfile" --logfile "$dir/redis.log" --dir "$dir/redis" >/dev/null 9>&- \
                || die "redis-server failed to launch (log: $dir/redis.log)"
            for i in $(seq 1 100); do
                if [[ $(REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]]; then
                    up=1
                    break
                fi
                # The daemon exits at once if the port was taken between our check and its bind.
                if [[ $i -gt 10 ]] && ! redis_pid >/dev/null; then break; fi
                sleep 0.1
            done
            [[ $up -eq 1 ]] && break
            if pid=$(redis_pid); then kill -TERM "$pid"; fi
            log "redis did not come up on port $port (attempt $attempt)"
            rm -f "$dir/redis.port"
        done
        [[ $up -eq 1 ]] || { tail -n 20 "$dir/redis.log" >&2; die "redis did not answer PING (log: $dir/redis.log)"; }
        echo "$port" >"$dir/redis.port"
    fi
    REDIS_PORT=$port
}

stop_redis() {
    local pid i
    if pid=$(redis_pid); then
        log "stopping redis (pid $pid)"
        kill -TERM "$pid"
        for i in $(seq 1 100); do
            alive_redis "$pid" || break
            [[ $i -eq 100 ]] && die "redis (pid $pid) did not stop within 10 s"
            sleep 0.1
        done
        rm -f "$redis_pidfile"
    else
        log "redis not running"
    fi
}

# ---------------------------------------------------------------- main
case $action in
start)
    ensure_packages
    start_pg
    start_redis
    cat >"$env_file.tmp" <<EOF
export FRAUDFLOW_POSTGRES_URL=postgresql://$DB_ROLE:$DB_PASSWORD@127.0.0.1:$PG_PORT
export FRAUDFLOW_REDIS_URL=redis://:$REDIS_PASSWORD@127.0.0.1:$REDIS_PORT
EOF
    mv "$env_file.tmp" "$env_file"
    cat "$env_file"
    ;;
stop)
    stop_redis
    stop_pg
    ;;
status)
    ok=0
    if pg_running; then log "postgres up on 127.0.0.1:$(pg_port)"; else log "postgres down"; ok=1; fi
    if pid=$(redis_pid); then log "redis up (pid $pid, port $(<"$dir/redis.port"))"; else log "redis down"; ok=1; fi
    exit $ok
    ;;
esac
