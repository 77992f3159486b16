#!/bin/bash
# Make the initdb template the test binaries copy: once per build, again only when
# an SQL file or this script changed. Serialized with flock, so the setup suite and
# any test binary started on its own can both call it.
#
#   mk-template.sh TEMPLATE_DIR PG_BINDIR SQLFILE...
#
# The template cluster holds database pgqd_tpl (marked IS_TEMPLATE) with every
# SQLFILE loaded in order; tests create their databases from it.
set -euo pipefail
tpl=$1 bindir=$2
shift 2
mkdir -p "$(dirname "$tpl")"
exec 9>"$tpl.lock"
flock 9

# The test servers run from a private install tree, "$tpl-pg": copies of the
# server binaries (PostgreSQL finds its share and lib directories relative to the
# resolved executable) beside a share directory of links to the system's, whose
# extension directory also holds our built extension files. CREATE EXTENSION tests
# thus never write into the system (two checkouts on one machine would overwrite
# each other's files there), and need no root.
sqldir=$(dirname "$1")
sysshare=$("$bindir/pg_config" --sharedir 2>/dev/null || pg_config --sharedir)
# the binaries' path below the prefix they share with the share directory,
# e.g. lib/postgresql/15/bin beside share/postgresql/15 under /usr
prefix=$bindir
while [ "$prefix" != / ] && [ "${sysshare#"$prefix"/}" = "$sysshare" ]; do
    prefix=$(dirname "$prefix")
done
pkglib=$("$bindir/pg_config" --pkglibdir 2>/dev/null || pg_config --pkglibdir)
pgroot="$tpl-pg"
privbin="$pgroot/${bindir#"$prefix"/}"
privshare="$pgroot/${sysshare#"$prefix"/}"
privlib="$pgroot/${pkglib#"$prefix"/}"
mkdir -p "$privbin" "$privshare/extension" "$(dirname "$privlib")"
for exe in postgres pg_ctl initdb pg_config; do
    cp -u "$bindir/$exe" "$privbin/$exe"
done
ln -sfn "$pkglib" "$privlib"
for f in "$sysshare"/*; do
    [ "$(basename "$f")" = extension ] || ln -sfn "$f" "$privshare/"
done
ours() { case "${1##*/}" in *_ev.control | *_ev--*.sql) return 0 ;; esac; return 1; }
for f in "$sysshare"/extension/*; do
    ours "$f" || ln -sfn "$f" "$privshare/extension/"
done
# real files, never written through a link into the system's directory; replaced
# by rename so a running server never reads half a file
find "$sqldir" \( -name '*_ev.control' -o -name '*_ev--*.sql' \) -print0 |
    while IFS= read -r -d '' f; do
        dst="$privshare/extension/${f##*/}"
        if [ -L "$dst" ] || ! cmp -s "$f" "$dst"; then
            cp "$f" "$dst.new" && mv -f "$dst.new" "$dst"
        fi
    done
ln -sfn "$privbin" "$pgroot/bin"

stamp="$tpl/stamp"
if [ -f "$stamp" ]; then
    fresh=1
    for f in "$0" "$@"; do
        [ "$f" -nt "$stamp" ] && fresh=0
    done
    [ $fresh = 1 ] && exit 0
fi

run_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    run_pg() { runuser -u postgres -- "$@"; }
fi

work="$tpl.new"
rm -rf "$work" "$tpl"
mkdir -p "$work/sock"
[ "$(id -u)" = 0 ] && chown -R postgres: "$work"
run_pg "$pgroot/bin/initdb" -D "$work/data" -U postgres -A trust -E UTF8 --no-locale --no-sync >"$work/initdb.log" 2>&1 ||
    { cat "$work/initdb.log" >&2; exit 1; }
cat >>"$work/data/postgresql.conf" <<CONF
# pgqd-ev test server: throwaway, fast, private
fsync = off
synchronous_commit = off
full_page_writes = off
listen_addresses = ''
unix_socket_permissions = 0777
max_wal_size = 1GB
shared_buffers = 64MB
log_min_messages = warning
log_line_prefix = '%m [%p] %q%d '
CONF
run_pg "$pgroot/bin/pg_ctl" -D "$work/data" -l "$work/start.log" -w -t 60 \
    -o "-k $work/sock -c listen_addresses=''" start >/dev/null
stop() { run_pg "$pgroot/bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop EXIT
psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$work/sock" -U postgres)
"${psql[@]}" -d postgres -c "create database pgqd_tpl"
for f in "$@"; do
    "${psql[@]}" -d pgqd_tpl -f "$f" >/dev/null || { echo "mk-template: loading $f failed" >&2; exit 1; }
done
"${psql[@]}" -d postgres -c "alter database pgqd_tpl is_template true"
stop
trap - EXIT
rm -f "$work/data/postmaster.opts" "$work/start.log" "$work/initdb.log"
mv "$work" "$tpl"
touch "$stamp"
