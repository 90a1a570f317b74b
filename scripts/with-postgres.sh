#!/usr/bin/env bash
# Run a command with a throwaway PostgreSQL server on loopback, then stop and delete it.
#   scripts/with-postgres.sh pytest -q
# Exports CANNY_TEST_POSTGRES_DSN for the command. The server runs as the `postgres`
# user (initdb refuses root) in a temporary directory. If PostgreSQL is not installed,
# it is installed from Debian's packages first. Set CANNY_SKIP_POSTGRES=1 to run the
# command without a server (the PostgreSQL tests then skip, saying why).
set -euo pipefail

if [[ "${CANNY_SKIP_POSTGRES:-}" == "1" ]]; then exec "$@"; fi

find_bin() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
  done
  return 1
}

PGBIN=$(find_bin || true)
if [[ -z "$PGBIN" ]]; then
  echo "with-postgres: installing PostgreSQL from Debian's packages" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null && apt-get install -y -qq postgresql >/dev/null
  PGBIN=$(find_bin)
fi

RUN_AS=()
if [[ $(id -u) -eq 0 ]]; then
  id postgres >/dev/null 2>&1 || useradd --system --home /nonexistent --shell /usr/sbin/nologin postgres
  RUN_AS=(runuser -u postgres --)
fi

PGROOT=$(mktemp -d /tmp/canny-pg.XXXXXX)
chmod 755 "$PGROOT"
[[ ${#RUN_AS[@]} -gt 0 ]] && chown postgres "$PGROOT"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')

cleanup() {
  "${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PGROOT"
}
trap cleanup EXIT

"${RUN_AS[@]}" "$PGBIN/initdb" -D "$PGROOT/data" -U postgres -A trust --no-sync >/dev/null
"${RUN_AS[@]}" "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/log" -w -t 30 \
  -o "-c listen_addresses=127.0.0.1 -p $PORT -k $PGROOT -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
"${RUN_AS[@]}" "$PGBIN/createdb" -h 127.0.0.1 -p "$PORT" -U postgres canny_test

export CANNY_TEST_POSTGRES_DSN="postgresql://postgres@127.0.0.1:$PORT/canny_test"
echo "with-postgres: PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PORT" >&2
set +e
"$@"
status=$?
set -e
exit $status
