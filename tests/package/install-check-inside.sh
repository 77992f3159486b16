#!/bin/bash
# Run by install-check.sh as root inside the fresh Debian 12 root (its own
# mount, pid and ipc namespaces, no init): the packages in ./debs installed with
# apt-get install ./*.deb, then what an operator gets from them. TAP lines
# numbered from FIRST; the plan is install-check.sh's.
#
#   install-check-inside.sh FIRST VERSION
set -u
ntests=15
n=$(($1 - 1)) version=$2 failed=0
cd /tmp/pgqd-ev-check
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
    n=$((n + 1)) failed=$((failed + 1))
    echo "not ok $n - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | tail -n 40 | sed 's/^/# /'
    return 0
}
skip_rest() {
    local i
    for ((i = n; i < first + ntests - 1; i++)); do notok "not run: $1"; done
    exit 1
}
first=$1
ours="pgqd-ev pgqctl libpgqev2 libpgqev-dev postgresql-15-pgq-ev"
daemon_pid=
pids_cleanup() {
    [ -n "$daemon_pid" ] && kill "$daemon_pid" 2>/dev/null
    pg_ctlcluster 15 main stop -m immediate >/dev/null 2>&1
}
trap pids_cleanup EXIT
as_pg() { runuser -u postgres -- "$@"; }
psql_app() { as_pg psql -X -q -v ON_ERROR_STOP=1 -d app "$@"; }
# wait_for SECONDS COMMAND...: poll COMMAND every 0.2 s until it succeeds
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 0.2
    done
}
installed() { dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | grep -q '^ii'; }

# 1: apt-get install ./*.deb, as the README says, dependencies from Debian
t0=$SECONDS
if out=$(apt-get update 2>&1) &&
    out=$(apt-get install -y ./debs/*.deb 2>&1); then
    pulled=$(sed -n 's/.* \([0-9]*\) newly installed.*/\1/p' <<<"$out")
    missing=""
    for p in $ours postgresql-15 libpq5 libevent-core-2.1-7; do installed "$p" || missing="$missing $p"; done
    if [ -z "$missing" ] && [ -z "$(dpkg --audit 2>&1)" ]; then
        ok "apt-get install ./*.deb: $pulled packages installed in $((SECONDS - t0)) s, postgresql-15 among them; dpkg --audit clean"
        echo "$out" | sed -n '/^The following NEW packages will be installed:/,/^[0-9]* upgraded/p' | sed 's/^/# /'
    else
        notok "apt-get install ./*.deb: not installed:$missing" "$out
$(dpkg --audit 2>&1)"
    fi
else
    notok "apt-get install ./*.deb" "$out"
    skip_rest "the packages did not install"
fi

# 2: the postinst's systemd-sysusers made the account the units run as
sysusers_line=$(grep -v '^#' /usr/lib/sysusers.d/pgqd-ev.conf 2>/dev/null | grep '^u')
if pw=$(getent passwd pgqd-ev) && getent group pgqd-ev >/dev/null &&
    uid=$(cut -d: -f3 <<<"$pw") && [ "$uid" -lt 1000 ] &&
    [ "$(cut -d: -f7 <<<"$pw")" = /usr/sbin/nologin ]; then
    ok "the system account from sysusers.d: $pw"
else
    notok "the account pgqd-ev" "passwd: ${pw:-none}
sysusers.d: $sysusers_line"
fi

# 3: the configuration is a conffile dpkg tracks, unchanged, readable by the account
conffiles=$(dpkg-query -W -f='${Conffiles}\n' pgqd-ev 2>&1)
sum=$(md5sum /etc/pgqd-ev/pgqd-ev.ini 2>&1 | cut -d' ' -f1)
if grep -qx " /etc/pgqd-ev/pgqd-ev.ini $sum" <<<"$conffiles" &&
    chk=$(runuser -u pgqd-ev -- pgqd-ev --check /etc/pgqd-ev/pgqd-ev.ini 2>&1) &&
    grep -q 'configuration OK' <<<"$chk" && verify=$(dpkg --verify $ours 2>&1) && [ -z "$verify" ]; then
    ok "/etc/pgqd-ev/pgqd-ev.ini is a conffile ($(stat -c '%U:%G %a' /etc/pgqd-ev/pgqd-ev.ini)); pgqd-ev --check as pgqd-ev: $(tail -n 1 <<<"$chk"); dpkg --verify clean"
else
    notok "the conffile" "conffiles: $conffiles
md5: $sum
--check: ${chk:-}
dpkg --verify: ${verify:-}"
fi

# 4: the library is in the linker cache (libc-bin's ldconfig trigger ran) and
# every installed program finds its libraries
lib=$(ldconfig -p | grep 'libpgqev\.so\.[0-9]* ')
unresolved=$(for f in /usr/bin/pgqd-ev /usr/bin/pgqctl /usr/lib/*/libpgqev.so.2; do ldd "$f" | grep 'not found' | sed "s|^|$f: |"; done)
if [ -n "$lib" ] && [ -z "$unresolved" ]; then
    ok "ldconfig -p: $(echo $lib); no unresolved library"
else
    notok "the library cache" "ldconfig -p: $lib
$unresolved"
fi

# 5: pgqd-ev --version and pgqctl --version from the installed programs
if v1=$(pgqd-ev --version 2>&1) && [ "$v1" = "pgqd-ev version $version" ] &&
    v2=$(pgqctl --version 2>&1) && [ "$v2" = "pgqctl $version" ]; then
    ok "$v1; $v2"
else
    notok "--version" "${v1:-} ${v2:-}"
fi

# 6: the installed units pass systemd-analyze verify: the ExecStart program and
# its configuration exist, the ExecReload command exists (procps's /bin/kill:
# a minimal root lacked it before pgqd-ev depended on procps). systemd comes
# with pgqd-ev (sysusers); installed here only if another alternative did.
exec_start=$(sed -n 's/^ExecStart=//p' /lib/systemd/system/pgqd-ev.service)
if ! command -v systemd-analyze >/dev/null; then
    out=$(apt-get install -y systemd 2>&1) || notok "apt-get install systemd" "$out"
fi
mkdir -p units
cp /lib/systemd/system/pgqd-ev@.service units/pgqd-ev@main.service
if out=$(systemd-analyze verify --man=no /lib/systemd/system/pgqd-ev.service units/pgqd-ev@main.service 2>&1) &&
    [ -z "$out" ] && [ "$exec_start" = "/usr/bin/pgqd-ev /etc/pgqd-ev/pgqd-ev.ini" ] &&
    grep -qx 'User=pgqd-ev' /lib/systemd/system/pgqd-ev.service &&
    ! systemctl is-enabled pgqd-ev.service >/dev/null 2>&1; then
    ok "systemd-analyze verify pgqd-ev.service and pgqd-ev@main.service; ExecStart=$exec_start; not enabled"
else
    notok "systemd-analyze verify" "$out
ExecStart=${exec_start:-}
enabled: $(systemctl is-enabled pgqd-ev.service 2>&1)"
fi

# 7: the cluster postgresql-common's postinst made (15 main), started as its
# postgres account on the root's own socket directory, no TCP
if lsc=$(pg_lsclusters -h 2>&1) && grep -q '^15 *main ' <<<"$lsc" &&
    out=$(pg_conftool 15 main set listen_addresses '' 2>&1) &&
    out=$(pg_ctlcluster 15 main start 2>&1) && wait_for 60 as_pg psql -X -Atc 'select 1'; then
    ok "pg_ctlcluster 15 main start: $(as_pg psql -X -Atc 'show server_version')"
else
    notok "the packaged cluster" "$lsc
$out
$(tail -n 20 /var/log/postgresql/postgresql-15-main.log 2>&1)"
    skip_rest "no server"
fi

# 8: create extension from postgresql-15-pgq-ev, and the role the unit logs in as
if out=$(as_pg createdb app 2>&1) &&
    out=$(psql_app -c 'create extension pgq_ev' -c 'create extension pgq_coop_ev' \
        -c 'create extension pgq_ext_ev' -c 'create extension pgq_node_ev' \
        -c 'create role "pgqd-ev" login in role pgq_admin' 2>&1) &&
    exts=$(psql_app -Atc "select string_agg(extname || ' ' || extversion, ', ' order by extname) from pg_extension where extname like 'pgq%'" 2>&1) &&
    [ "$exts" = "pgq_coop_ev $version, pgq_ev $version, pgq_ext_ev $version, pgq_node_ev $version" ]; then
    ok "create extension in PostgreSQL 15: $exts"
else
    notok "create extension" "$out ${exts:-}"
fi

# 9: pgqctl, as the postgres account, on that database
if out=$(as_pg env PGQCTL_DB=dbname=app pgqctl --json version 2>&1) &&
    grep -q '"pgq_extension": *"pgq_ev"' <<<"$out" &&
    out=$(as_pg env PGQCTL_DB=dbname=app pgqctl create orders ticker_max_lag=0.5 2>&1) &&
    out=$(as_pg env PGQCTL_DB=dbname=app pgqctl insert orders order.created '{"id":1}' 2>&1); then
    ok "pgqctl version sees extension pgq_ev; pgqctl create, insert"
else
    notok "pgqctl" "$out"
fi

# 10: the daemon as the unit runs it: its account, the conffile unchanged
# (every database of the local server, through the socket and peer
# authentication as role pgqd-ev), the foreground; a tick of orders follows
ticks() {
    [ "$(psql_app -Atc "select count(*) from pgq.tick t join pgq.queue q on q.queue_id = t.tick_queue where q.queue_name = 'orders'")" -ge "$1" ]
}
cd /
# setpriv execs the daemon itself (runuser would stay as its parent and exit 143 on SIGTERM)
setpriv --reuid=pgqd-ev --regid=pgqd-ev --init-groups -- $exec_start >/tmp/pgqd-ev-check/daemon.log 2>&1 &
daemon_pid=$!
cd /tmp/pgqd-ev-check
if wait_for 60 ticks 2 && kill -0 "$daemon_pid" 2>/dev/null; then
    ok "setpriv --reuid=pgqd-ev -- $exec_start ticked queue orders"
else
    notok "the daemon ticked" "$(cat daemon.log)"
fi

# 11: a consumer compiled here with pkg-config --cflags --libs libpgqev
# (libpgqev-dev's dependencies bring the rest; the compiler is the user's)
cc_out=$(apt-get install -y gcc pkgconf 2>&1) || notok "apt-get install gcc pkgconf" "$cc_out"
if flags=$(pkg-config --cflags --libs libpgqev 2>&1) &&
    cc_out=$(gcc -Wall -Werror -o consumer consumer.c $flags 2>&1) &&
    out=$(cd / && timeout 120 runuser -u postgres -- /tmp/pgqd-ev-check/consumer dbname=app orders hello 2>&1) &&
    [ "$out" = "libpgqev $version: received hello" ]; then
    ok "gcc consumer.c \$(pkg-config --cflags --libs libpgqev) = $flags; $out"
else
    notok "the consumer" "flags: ${flags:-}
$cc_out
${out:-}
$(tail -n 20 daemon.log)"
fi

# 12: SIGTERM stops the daemon with status 0 (the unit's stop)
kill -TERM "$daemon_pid"
wait "$daemon_pid"
st=$?
daemon_pid=
if [ $st = 0 ]; then
    ok "SIGTERM: the daemon stopped with status 0"
else
    notok "the daemon's stop: status $st" "$(tail -n 20 daemon.log)"
fi

# 13: an upgrade over a changed conffile keeps the operator's change without
# asking (stdin closed: a prompt would fail), and reruns the postinst
echo '; changed by the operator' >>/etc/pgqd-ev/pgqd-ev.ini
if out=$(dpkg -i debs/pgqd-ev_*.deb </dev/null 2>&1) &&
    tail -n 1 /etc/pgqd-ev/pgqd-ev.ini | grep -qx '; changed by the operator' && installed pgqd-ev; then
    ok "dpkg -i pgqd-ev again: the changed conffile kept, no prompt"
else
    notok "reinstall over a changed conffile" "$out"
fi

# 14: apt-get remove: the programs go, the configuration and the account stay
# (Debian policy: a removed package leaves its conffiles until purge)
pg_ctlcluster 15 main stop >/dev/null 2>&1
if out=$(apt-get remove -y $ours 2>&1) &&
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' pgqd-ev 2>&1)" = "rc " ] &&
    [ -f /etc/pgqd-ev/pgqd-ev.ini ] && [ ! -e /usr/bin/pgqd-ev ] && [ ! -e /usr/bin/pgqctl ] &&
    [ ! -e /lib/systemd/system/pgqd-ev.service ] && ! ldconfig -p | grep -q libpgqev &&
    getent passwd pgqd-ev >/dev/null; then
    ok "apt-get remove: programs, units and library gone, /etc/pgqd-ev/pgqd-ev.ini and the account kept"
else
    notok "apt-get remove" "$out
status: $(dpkg-query -W -f='${db:Status-Abbrev}' pgqd-ev 2>&1)
$(ls -l /etc/pgqd-ev /usr/bin/pgqd-ev /lib/systemd/system/pgqd-ev.service 2>&1)
$(ldconfig -p | grep libpgqev)"
fi

# 15: apt-get purge: the conffile and its directory go, no file of ours is
# left anywhere; the account stays (Debian policy: system accounts are not
# removed, files may still belong to them)
left() {
    find / -xdev \( -path /proc -o -path /tmp -o -path /dev \) -prune -o \
        \( -name '*pgqd-ev*' -o -name '*pgqev*' -o -name '*pgq_ev*' -o -name '*pgq-ev*' \
        -o -name '*pgq_coop_ev*' -o -name '*pgq_ext_ev*' -o -name '*pgq_node_ev*' -o -name pgqctl \) -print
}
# only packages dpkg still knows (state rc: those with conffiles) can be named
in_rc=$(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' $ours 2>/dev/null | awk '$1 == "rc" { print $2 }')
if [ -n "$in_rc" ] && out=$(apt-get purge -y $in_rc 2>&1) && [ ! -e /etc/pgqd-ev ] &&
    ! dpkg-query -W -f='${db:Status-Abbrev}' pgqd-ev 2>/dev/null | grep -qv '^un' &&
    [ -z "$(left)" ] && getent passwd pgqd-ev >/dev/null; then
    ok "apt-get purge: /etc/pgqd-ev gone, no file left, the account kept"
else
    notok "apt-get purge" "$out
$(ls -la /etc/pgqd-ev 2>&1)
left: $(left)"
fi

apt-get autoclean >/dev/null 2>&1
[ $failed = 0 ]
