#!/usr/bin/env bash
# Install everything the tests need, then run them: the README's test command and what CI runs.
#   pip packages (requirements-dev.txt), Debian's chromium and postgresql when missing (as root),
#   a throwaway PostgreSQL cluster on a free local port for the store tests, then pytest.
# Extra arguments go to pytest (e.g. scripts/test.sh -k store). Tests run in $SPINE_TEST_WORKERS processes
# (default 2, one per core; 0 runs them in this process), a whole test file per process (--dist loadfile): a
# module's fixtures, such as its one app server, are made once.
set -euo pipefail
cd "$(dirname "$0")/.."

python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-lifelines.txt

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ]; then
    echo "installing ${missing[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them with apt-get (the browser and PostgreSQL tests will fail)" >&2
  fi
fi

# A throwaway PostgreSQL cluster, stopped whatever happens; no waiting for the disk (fsync off: it is thrown away).
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
if [ -n "$pg_bin" ]; then
  pg_dir=$(mktemp -d /tmp/spine-pg.XXXXXX)
  pg_port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_pg=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$pg_dir"; as_pg=(su postgres -s /bin/sh -c); fi
  run_pg() { if ((${#as_pg[@]})); then "${as_pg[@]}" "$*"; else sh -c "$*"; fi; }
  run_pg "$pg_bin/initdb -D $pg_dir/data -U postgres --auth=trust -E UTF8 >/dev/null"
  run_pg "$pg_bin/pg_ctl -D $pg_dir/data -l $pg_dir/log -w -o '-p $pg_port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off' start >/dev/null"
  trap 'run_pg "$pg_bin/pg_ctl -D $pg_dir/data -m fast stop >/dev/null" || true; rm -rf "$pg_dir"' EXIT
  run_pg "$pg_bin/createdb -h 127.0.0.1 -p $pg_port -U postgres spine_test"
  export SPINE_TEST_POSTGRES_URL="postgresql+psycopg://postgres@127.0.0.1:$pg_port/spine_test"
  echo "PostgreSQL test cluster on port $pg_port"
fi

python -m pytest -n "${SPINE_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@"
