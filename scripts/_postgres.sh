# Sourced by test.sh: the tests run a real PostgreSQL server, so install it from the distribution when it is absent.
PG_LIBDIR=${PG_LIBDIR:-/usr/lib/postgresql}

postgres_present() {
  command -v initdb >/dev/null 2>&1 || compgen -G "$PG_LIBDIR/*/bin/initdb" >/dev/null
}

ensure_postgres() {
  postgres_present && return 0
  local as=()  # root installs; anyone else through sudo, where it asks no password
  [ "$(id -u)" = 0 ] || as=(sudo -n)
  if command -v apt-get >/dev/null && { [ ${#as[@]} = 0 ] || command -v sudo >/dev/null; }; then
    { "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
      "${as[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql; } >&2 || true
  fi
  postgres_present ||
    echo "PostgreSQL is missing and could not be installed: install the 'postgresql' package (initdb, pg_ctl) as root; until then the tests that need it fail" >&2
}
