#!/bin/bash
# The Debian packages as an operator and a developer get them: scripts/package
# builds them (and lintian finds no error or warning), every .deb (but the -dbgsym ones) is unpacked into a throwaway
# root (dpkg-deb -x: nothing is installed on this system), and from that root:
# pgqd-ev --version and --check of the packaged conffile, the packaged unit
# through systemd-analyze verify, the symbols file against libpgqev.map, a
# consumer built with pkg-config --cflags --libs libpgqev, and per packaged
# PostgreSQL major a private server whose extension directory holds the
# packaged files: CREATE EXTENSION, pgqctl version, and the consumer receiving
# an event the packaged pgqd-ev ticked. TAP output.
#
#   check-package.sh SRCDIR VERSION
set -u
src=$1 version=$2
t=$(mktemp -d)
pids=()
as_pg() { "$@"; }
if [ "$(id -u)" = 0 ]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql --shell /bin/bash postgres
    as_pg() { runuser -u postgres -- "$@"; }
fi
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; for d in "$t"/data*; do [ -d "$d" ] && as_pg "$t/pg$(basename "$d" | tr -dc 0-9)/bin/pg_ctl" -D "$d" -m immediate stop >/dev/null 2>&1; done; rm -rf "$t"' EXIT
chmod 755 "$t"

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
    n=$((n + 1)) failed=$((failed + 1))
    echo "not ok $n - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | tail -n 30 | sed 's/^/# /'
    return 0
}
missing() {
    # what a skip would hide fails where the tests must run (CI)
    if [ -n "${CI:-}${PGQD_TEST_REQUIRE_PG:-}" ]; then
        echo "1..1"; echo "not ok 1 - $1"; exit 1
    fi
    echo "1..0 # SKIP $1"; exit 0
}
for tool in dpkg-buildpackage dh pg_buildext cc pkg-config; do
    command -v "$tool" >/dev/null || missing "no $tool (scripts/packages.txt, section [package])"
done
versions=$(cd "$src" && pg_buildext supported-versions 2>/dev/null | tr '\n' ' ')
[ -n "$versions" ] || missing "no PostgreSQL server-dev package of a supported major"
nv=$(echo $versions | wc -w)
echo "1..$((8 + 4 * nv))"

# 1: the packages build (PGQD_TEST_PACKAGES=DIR: test those built by
# scripts/package instead, while working on this test)
if [ -n "${PGQD_TEST_PACKAGES:-}" ]; then
    mkdir "$t/pkgs" && cp "$PGQD_TEST_PACKAGES"/*.deb "$t/pkgs/" && ok "packages from $PGQD_TEST_PACKAGES"
elif out=$("$src/scripts/package" --out "$t/pkgs" 2>&1); then
    ok "scripts/package built the packages for PostgreSQL $versions; $(grep '^lintian:' <<<"$out")"
else
    notok "scripts/package" "$out"; echo "Bail out! no packages"; exit 1
fi
want="pgqd-ev pgqctl libpgqev2 libpgqev-dev"
for v in $versions; do want="$want postgresql-$v-pgq-ev"; done
got=$(for d in "$t"/pkgs/*.deb; do dpkg-deb -f "$d" Package; done | grep -v -- -dbgsym | sort | tr '\n' ' ')
if [ "$got" = "$(echo $want | tr ' ' '\n' | sort | tr '\n' ' ')" ]; then
    ok "the package set: $got"
else
    notok "the package set" "want: $want
got:  $got"
fi

root=$t/root
mkdir -p "$root"
for d in "$t"/pkgs/*.deb; do
    case "$d" in *-dbgsym_*) ;; *) dpkg-deb -x "$d" "$root" ;; esac
done

# 3: the conffile the unit names, the account, and what the daemon says of it
deb=$(ls "$t"/pkgs/pgqd-ev_*.deb)
dpkg-deb -e "$deb" "$t/ctl"
unit=$root/lib/systemd/system/pgqd-ev.service
exec_start=$(sed -n 's/^ExecStart=//p' "$unit")
cfg=${exec_start#* }
bin=${exec_start%% *}
ver=$("$root$bin" --version 2>&1)
chk=$("$root$bin" --check "$root$cfg" 2>&1)
if [ "$exec_start" = "/usr/bin/pgqd-ev /etc/pgqd-ev/pgqd-ev.ini" ] &&
    grep -qx /etc/pgqd-ev/pgqd-ev.ini "$t/ctl/conffiles" &&
    grep -q 'systemd-sysusers .*pgqd-ev.conf' "$t/ctl/postinst" &&
    grep -q '^u pgqd-ev ' "$root/usr/lib/sysusers.d/pgqd-ev.conf" &&
    [ "$ver" = "pgqd-ev version $version" ] && echo "$chk" | grep -q 'configuration OK'; then
    ok "$ver; ExecStart=$exec_start, a conffile that --check accepts; sysusers in postinst"
else
    notok "daemon, unit and conffile" "ExecStart=$exec_start
conffiles: $(cat "$t/ctl/conffiles" 2>&1)
--version: $ver
--check: $chk"
fi

# 4: the installed unit passes systemd-analyze verify (ExecStart pointed into
# the root: verify insists that the command exists)
if ! command -v systemd-analyze >/dev/null; then
    notok "systemd-analyze verify: no systemd-analyze"
else
    mkdir "$t/units"
    for u in pgqd-ev.service pgqd-ev@.service; do
        sed "s|^ExecStart=$bin |ExecStart=$root$bin |" "$root/lib/systemd/system/$u" >"$t/units/$u"
    done
    cp "$t/units/pgqd-ev@.service" "$t/units/pgqd-ev@main.service"
    if out=$(systemd-analyze verify --man=no "$t/units/pgqd-ev.service" "$t/units/pgqd-ev@main.service" 2>&1) &&
        [ -z "$out" ]; then
        ok "systemd-analyze verify of the packaged pgqd-ev.service and pgqd-ev@main.service"
    else
        notok "systemd-analyze verify" "$out"
    fi
fi

# 5: the ABI the packages track is the one the library exports
lib=$(ls "$root"/usr/lib/*/libpgqev.so.2)
map_syms=$(grep -o '^ *[a-z_0-9]*;' "$src/src/consumer/libpgqev.map" | tr -d ' ;' | sort)
sym_syms=$(sed -n 's/^ \([a-z_0-9]*\)@PGQEV_2 .*/\1/p' "$src/debian/libpgqev2.symbols" | sort)
dyn_syms=$(nm -D --defined-only "$lib" | awk '$2 == "T" {sub(/@.*/, "", $3); print $3}' | sort)
if [ -n "$map_syms" ] && [ "$map_syms" = "$sym_syms" ] && [ "$map_syms" = "$dyn_syms" ]; then
    ok "debian/libpgqev2.symbols = libpgqev.map = the exports of the packaged libpgqev.so.2 ($(echo "$map_syms" | wc -l) functions)"
else
    notok "symbols (regenerate debian/libpgqev2.symbols as debian/README.source says)" \
        "map vs symbols file: $(diff <(echo "$map_syms") <(echo "$sym_syms") | grep '^[<>]' | tr '\n' ' ')
map vs library: $(diff <(echo "$map_syms") <(echo "$dyn_syms") | grep '^[<>]' | tr '\n' ' ')"
fi

# 6: a consumer built with pkg-config against the unpacked -dev package. The .pc
# says prefix=/usr; unpacked elsewhere, only its prefix is moved to the root.
pc=$(ls "$root"/usr/lib/*/pkgconfig/libpgqev.pc)
mkdir "$t/pc"
sed "s|^prefix=/usr\$|prefix=$root/usr|" "$pc" >"$t/pc/libpgqev.pc"
flags=$(PKG_CONFIG_PATH=$t/pc pkg-config --cflags --libs libpgqev 2>&1)
libdir=$(dirname "$lib")
if out=$(cc -Wall -Werror -o "$t/consumer" "$src/tests/package/consumer.c" $flags -Wl,-rpath,"$libdir" 2>&1) &&
    ldd "$t/consumer" | grep -q "libpgqev.so.2 => $libdir/libpgqev.so.2" &&
    echo "$flags" | grep -q -- "-I$root/usr/include" && [ -f "$root/usr/include/pgqd-ev/pgqev_consumer.h" ]; then
    ok "consumer built with pkg-config --cflags --libs libpgqev: $flags"
else
    notok "consumer build" "flags: $flags
$out
$(ldd "$t/consumer" 2>&1 | grep pgqev)"
fi

# 7: man pages, completion, SQL scripts and docs where the packages promise them
files="usr/share/man/man8/pgqd-ev.8.gz usr/share/man/man1/pgqctl.1.gz usr/share/man/man3/libpgqev.3.gz
usr/share/bash-completion/completions/pgqctl usr/share/pgqd-ev/sql/pgq_ev.sql
usr/share/doc/pgqd-ev/sql-api.md.gz usr/share/doc/pgqd-ev/consumer.md.gz usr/share/doc/pgqd-ev/examples/pgqd-ev.ini"
absent=""
for f in $files; do [ -e "$root/$f" ] || absent="$absent $f"; done
if [ -z "$absent" ] && out=$(zcat "$root/usr/share/man/man8/pgqd-ev.8.gz" | groff -man -ww -z 2>&1) && [ -z "$out" ]; then
    ok "man pages, completion, SQL scripts and docs in place"
else
    notok "files" "missing:$absent $out"
fi

# 8: pgqctl's version from the root
if out=$("$root/usr/bin/pgqctl" --version 2>&1) && [ "$out" = "pgqctl $version" ]; then
    ok "$out"
else
    notok "pgqctl --version" "$out"
fi

# per PostgreSQL major: a private server from a private install tree (as in
# tests/mk-template.sh) whose extension directory holds the packaged files
for v in $versions; do
    sysbin=/usr/lib/postgresql/$v/bin sysshare=/usr/share/postgresql/$v
    pg=$t/pg$v
    if [ ! -x "$sysbin/postgres" ]; then
        for i in 1 2 3 4; do notok "PostgreSQL $v: no server at $sysbin (postgresql-$v)"; done
        continue
    fi
    mkdir -p "$pg/lib/postgresql/$v/bin" "$pg/share/postgresql/$v/extension" "$t/sock$v"
    for exe in postgres pg_ctl initdb; do cp "$sysbin/$exe" "$pg/lib/postgresql/$v/bin/"; done
    ln -s "/usr/lib/postgresql/$v/lib" "$pg/lib/postgresql/$v/lib"
    ln -s "lib/postgresql/$v/bin" "$pg/bin"
    for f in "$sysshare"/*; do [ "${f##*/}" = extension ] || ln -s "$f" "$pg/share/postgresql/$v/"; done
    for f in "$sysshare"/extension/*; do
        case "${f##*/}" in *_ev.control | *_ev--*.sql) ;; *) ln -s "$f" "$pg/share/postgresql/$v/extension/" ;; esac
    done
    cp "$root/usr/share/postgresql/$v/extension/"* "$pg/share/postgresql/$v/extension/"
    [ "$(id -u)" = 0 ] && chown postgres: "$t/sock$v"
    data=$t/data$v
    mkdir -m 700 "$data"
    [ "$(id -u)" = 0 ] && chown postgres: "$data"
    if ! out=$(as_pg "$pg/bin/initdb" -D "$data" -U postgres -A trust -E UTF8 --no-locale --no-sync 2>&1) ||
        ! out=$(as_pg "$pg/bin/pg_ctl" -D "$data" -l "$t/sock$v/log" -w -t 60 \
            -o "-k $t/sock$v -c listen_addresses='' -c fsync=off" start 2>&1); then
        for i in 1 2 3 4; do notok "PostgreSQL $v: private server" "$out"; done
        continue
    fi
    conn="host=$t/sock$v user=postgres"
    psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$t/sock$v" -U postgres)
    if out=$("${psql[@]}" -d postgres -c "create database pkg" -c "create database plain" 2>&1) &&
        out=$("${psql[@]}" -d pkg -c "create extension pgq_ev" -c "create extension pgq_coop_ev" \
            -c "create extension pgq_ext_ev" -c "create extension pgq_node_ev" 2>&1) &&
        out=$("${psql[@]}" -d pkg -Atc "select extversion from pg_extension where extname = 'pgq_ev'" 2>&1) &&
        [ "$out" = "$version" ]; then
        ok "PostgreSQL $v: create extension pgq_ev, pgq_coop_ev, pgq_ext_ev, pgq_node_ev from postgresql-$v-pgq-ev"
    else
        notok "PostgreSQL $v: create extension" "$out"
    fi
    if out=$(PGQCTL_DB="$conn dbname=pkg" "$root/usr/bin/pgqctl" --json version 2>&1) &&
        echo "$out" | grep -q '"pgq_extension": *"pgq_ev"' &&
        out2=$(PGQCTL_DB="$conn dbname=pkg" "$root/usr/bin/pgqctl" create pkgq ticker_max_lag=0.2 2>&1); then
        ok "PostgreSQL $v: pgqctl version sees extension pgq_ev; pgqctl create"
    else
        notok "PostgreSQL $v: pgqctl version/create" "$out ${out2:-}"
    fi
    # pgqctl install loads the packaged plain scripts (its compiled-in directory
    # is /usr/share/pgqd-ev/sql: PGQCTL_SQLDIR points into the root)
    if out=$(PGQCTL_SQLDIR=$root/usr/share/pgqd-ev/sql PGQCTL_DB="$conn dbname=plain" "$root/usr/bin/pgqctl" install 2>&1) &&
        out=$("${psql[@]}" -d plain -Atc "select pgq.pgqd_ev_version()" 2>&1) && [ "$out" = "$version" ]; then
        ok "PostgreSQL $v: pgqctl install of the packaged plain SQL scripts"
    else
        notok "PostgreSQL $v: pgqctl install" "$out"
    fi
    cat >"$t/pgqd-ev$v.ini" <<INI
[pgqd]
base_connstr = $conn
database_list = pkg
ticker_period = 0.1
syslog = off
logfile = $t/pgqd-ev$v.log
INI
    "$root/usr/bin/pgqd-ev" "$t/pgqd-ev$v.ini" 2>>"$t/pgqd-ev$v.log" &
    pids+=($!)
    if out=$(timeout 60 "$t/consumer" "$conn dbname=pkg" pkgq "hello-$v" 2>&1) &&
        [ "$out" = "libpgqev $version: received hello-$v" ]; then
        ok "PostgreSQL $v: the packaged pgqd-ev ticked, the consumer built on the package received the event"
    else
        notok "PostgreSQL $v: consumer" "$out
$(cat "$t/pgqd-ev$v.log")"
    fi
    kill "${pids[-1]}" 2>/dev/null; wait "${pids[-1]}" 2>/dev/null
    as_pg "$pg/bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null 2>&1
    rm -rf "$data"
done
[ $failed = 0 ]
