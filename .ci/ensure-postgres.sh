# Sourced by .ci/run: makes a PostgreSQL server answer on 127.0.0.1:5432 with a
# database `test`, and exports REGIMES_TEST_PG_URL for the test suite.
# Order: use a running server; else start an installed cluster; else install one
# from Debian's packages and start it.
pg_ready() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }

if ! command -v pg_isready >/dev/null 2>&1 || ! pg_ready; then
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    echo "no PostgreSQL cluster here: installing one from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  version="$(ls /etc/postgresql | sort -V | tail -1)"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
fi
pg_ready || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }

if [ -z "${REGIMES_TEST_PG_URL:-}" ]; then
  if psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
    pg_user_url="postgres"
  else
    # A cluster installed here uses password auth on TCP: give the postgres role one.
    su postgres -c "psql -q -c \"ALTER USER postgres PASSWORD 'regimes'\"" >/dev/null
    export PGPASSWORD=regimes
    pg_user_url="postgres:regimes"
  fi
  if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc "select 1 from pg_database where datname='test'" | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc 'create database test'
  fi
  export REGIMES_TEST_PG_URL="postgresql+psycopg://${pg_user_url}@127.0.0.1:5432/test"
fi
