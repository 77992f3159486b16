#!/bin/sh
# systemd-analyze verify on the generated units, with ExecStart pointed at the
# built binary (verify insists that the command exists). --man=no: the man page
# is not installed in the build tree. Usage: verify-units.sh BUILDDIR
set -eu
b=$1
command -v systemd-analyze >/dev/null || { echo "1..0 # SKIP no systemd-analyze"; exit 0; }
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
bin=$(sed -n 's|^ExecStart=\([^ ]*\) .*|\1|p' "$b/systemd/pgqd-ev.service")
for u in pgqd-ev.service pgqd-ev@.service; do
	sed "s|$bin|$b/src/ticker/pgqd-ev|" "$b/systemd/$u" > "$t/$u"
done
cp "$t/pgqd-ev@.service" "$t/pgqd-ev@main.service"
echo "1..3"
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
	Type=notify "ExecReload=/bin/kill -HUP \$MAINPID"; do
	grep -qxF "$k" "$t/pgqd-ev.service" || missing="$missing [$k]"
done
if [ -z "$missing" ]; then echo "ok 3 - hardening settings present"; else echo "not ok 3 - missing:$missing"; fi
