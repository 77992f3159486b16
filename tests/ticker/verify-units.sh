#!/bin/sh
# systemd-analyze verify on the generated units, with ExecStart pointed at the
# built binary (verify insists that the command exists). --man=no: the man page
# is not installed in the build tree. Then the promised settings, the Type that
# fits this systemd, and the sysusers.d file. Usage: verify-units.sh SRCDIR BUILDDIR
set -eu
src=$1
b=$2
command -v systemd-analyze >/dev/null || { echo "1..0 # SKIP no systemd-analyze"; exit 0; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
bin=$(sed -n 's|^ExecStart=\([^ ]*\) .*|\1|p' "$b/systemd/pgqd-ev.service")
mkdir "$t/nr"
for u in pgqd-ev.service pgqd-ev@.service; do
	sed "s|$bin|$b/src/ticker/pgqd-ev|" "$b/systemd/$u" > "$t/$u"
	sed "s|$bin|$b/src/ticker/pgqd-ev|" "$b/systemd/$u.notify-reload" > "$t/nr/$u"
done
cp "$t/nr/pgqd-ev@.service" "$t/nr/pgqd-ev@main.service"
cp "$t/pgqd-ev@.service" "$t/pgqd-ev@main.service"
echo "1..7"
n=0
for u in pgqd-ev.service pgqd-ev@main.service; do
	n=$((n + 1))
	if out=$(systemd-analyze verify --man=no "$t/$u" 2>&1) && [ -z "$out" ]; then
		echo "ok $n - systemd-analyze verify $u"
	else
		echo "not ok $n - systemd-analyze verify $u"
		echo "$out" | sed 's/^/# /'
	fi
done
# the hardening we promise is really in the unit
missing=""
for k in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes PrivateTmp=yes \
	"RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6" ProtectKernelTunables=yes \
	ProtectControlGroups=yes RestrictNamespaces=yes LockPersonality=yes \
	MemoryDenyWriteExecute=yes SystemCallFilter=@system-service CapabilityBoundingSet= \
	User=pgqd-ev Group=pgqd-ev LogsDirectory=pgqd-ev; do
	grep -qxF "$k" "$t/pgqd-ev.service" || missing="$missing [$k]"
done
if [ -z "$missing" ]; then echo "ok 3 - hardening settings present"; else echo "not ok 3 - missing:$missing"; fi
# notify-reload only where this systemd knows it, else notify + ExecReload
v=$(systemctl --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
if [ "${v:-0}" -ge 253 ]; then
	want="Type=notify-reload" other="ExecReload=/bin/kill -HUP \$MAINPID"
else
	want="ExecReload=/bin/kill -HUP \$MAINPID" other="Type=notify-reload"
fi
bad=""
for u in pgqd-ev.service pgqd-ev@.service; do
	if ! grep -qxF "$want" "$t/$u" || grep -qxF "$other" "$t/$u"; then
		bad="$bad $u"
	fi
done
if [ -z "$bad" ]; then echo "ok 4 - reload style fits systemd $v"; else echo "not ok 4 - wrong reload style for systemd $v in:$bad"; fi
# the account the units name is what sysusers.d creates, and the file parses
if out=$(systemd-sysusers --dry-run "$src/systemd/pgqd-ev.sysusers" 2>&1) &&
	grep -q '^u pgqd-ev ' "$src/systemd/pgqd-ev.sysusers" && ! echo "$out" | grep -qi 'fail\|invalid'; then
	echo "ok 5 - sysusers.d creates pgqd-ev"
else
	echo "not ok 5 - sysusers.d file"
	echo "$out" | sed 's/^/# /'
fi
# systemd-analyze security (offline, systemd >= 250): overall exposure at most 2.5
# (--threshold counts tenths)
sec="" secbad=""
for u in pgqd-ev.service pgqd-ev@main.service; do
	if out=$(systemd-analyze security --offline=yes --threshold=25 --no-pager "$t/$u" 2>&1); then
		sec="$sec $u:$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')"
	else
		secbad="$secbad $u"
		echo "$out" | sed -n 's/^/# /; /✗\|Overall/p'
	fi
done
if [ -z "$secbad" ]; then echo "ok 6 - systemd-analyze security exposure <= 2.5:$sec"; else echo "not ok 6 - exposure above 2.5:$secbad"; fi
# the notify-reload units verify under a systemd that knows the type: this one if
# it is 253 or newer, else the systemd-analyze scripts/test unpacks from
# bookworm-backports (never a skip in CI)
sa=systemd-analyze
if [ "${v:-0}" -lt 253 ]; then
	sa=$src/.cache/systemd-backports/root/usr/bin/systemd-analyze
	export LD_LIBRARY_PATH=$src/.cache/systemd-backports/root/usr/lib/x86_64-linux-gnu/systemd
	if [ ! -x "$sa" ]; then
		if [ -n "${PGQD_TEST_REQUIRE_PG:-}" ]; then
			echo "not ok 7 - no systemd-analyze >= 253 (scripts/test fetches one from bookworm-backports)"
		else
			echo "ok 7 # SKIP no systemd-analyze >= 253 (scripts/test fetches one)"
		fi
		exit 0
	fi
fi
sv=$("$sa" --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p')
out=""
for u in pgqd-ev.service pgqd-ev@main.service; do
	grep -qxF "Type=notify-reload" "$t/nr/$u" && ! grep -q "^ExecReload=" "$t/nr/$u" ||
		out="$out$u: not notify-reload without ExecReload
"
	out="$out$("$sa" verify --man=no "$t/nr/$u" 2>&1)"
done
if [ "${sv:-0}" -ge 253 ] && [ -z "$out" ]; then
	echo "ok 7 - notify-reload units verify under systemd $sv"
else
	echo "not ok 7 - notify-reload units under systemd ${sv:-unknown}"
	echo "$out" | sed 's/^/# /'
fi
