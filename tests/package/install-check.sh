#!/bin/bash
# The Debian packages installed for real, as on a fresh Debian 12 machine: a
# Debian 12 root made by debootstrap (--variant=minbase bookworm), the packages
# copied in and installed there with `apt-get install ./*.deb`, which pulls
# postgresql-15 and every other dependency from the Debian mirror, then, inside
# the root (install-check-inside.sh says what): the maintainer scripts' work
# (the account, the conffile, the library cache), the units, the daemon against
# the packaged PostgreSQL cluster, a consumer compiled there with pkg-config,
# and remove and purge. TAP output. Needs root and the network.
#
#   install-check.sh SRCDIR VERSION
#
# Environment:
#   PGQD_TEST_PACKAGES=DIR   test the .debs in DIR (default: scripts/package builds them)
#   PGQD_INSTALL_CACHE=DIR   cache (default SRCDIR/.cache/install-check): the bootstrapped
#                            root as an uncompressed tar, apt's package lists and the
#                            Debian packages apt downloaded; a rerun then needs only
#                            `apt-get update` from the network
#   PGQD_INSTALL_REFRESH=1   bootstrap a new root even if the cached one is recent
#                            (it is remade after 14 days)
#   PGQD_INSTALL_MIRROR=URL  default http://deb.debian.org/debian
#   PGQD_TEST_KEEP=1         keep the temporary directory (the root) for a look
#
# Nothing is written outside the temporary directory and the cache. Every
# command in the root runs in new mount, pid and ipc namespaces (unshare): the
# mounts the root needs (/proc, a few device nodes, /dev/shm) exist only there
# and every process started there (the cluster, the daemon) dies with them,
# whatever way this script ends; the EXIT trap also unmounts anything left
# under the temporary directory before removing it.
set -u
src=$(realpath "$1") version=$2
cache=$(realpath -m "${PGQD_INSTALL_CACHE:-$src/.cache/install-check}")
mirror=${PGQD_INSTALL_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)

n=0 failed=0
ok() { n=$((n + 1)); echo "ok $n - $1"; }
notok() {
    n=$((n + 1)) failed=$((failed + 1))
    echo "not ok $n - $1"
    [ $# -gt 1 ] && printf '%s\n' "$2" | tail -n 40 | sed 's/^/# /'
    return 0
}
bail() { echo "Bail out! $1"; exit 1; }
# the number of checks install-check-inside.sh makes, so the plan is known up front
inside_tests=$(sed -n 's/^ntests=\([0-9]*\)$/\1/p' "$here/install-check-inside.sh")
echo "1..$((2 + inside_tests))"

[ "$(id -u)" = 0 ] || bail "needs root (debootstrap, chroot, unshare)"
for tool in debootstrap unshare chroot dpkg-deb; do
    command -v "$tool" >/dev/null || bail "no $tool (scripts/packages.txt, section [package])"
done

t=$(mktemp -d "${TMPDIR:-/tmp}/pgqd-ev-install.XXXXXX")
root=$t/root
ns_pid=
mounts_under() { awk -v p="$1/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r; }
cleanup() {
    # the namespace's first process is the root's init: killing it ends the
    # cluster, the daemon and its mounts
    if [ -n "$ns_pid" ]; then kill -KILL "$ns_pid" 2>/dev/null; wait "$ns_pid" 2>/dev/null; fi
    local m
    for m in $(mounts_under "$t"); do umount -l "$m" 2>/dev/null; done
    if [ -n "$(mounts_under "$t")" ]; then
        echo "# still mounted under $t, not removed: $(mounts_under "$t" | tr '\n' ' ')" >&2
        return
    fi
    if [ -n "${PGQD_TEST_KEEP:-}" ]; then echo "# kept $t" >&2; else rm -rf "$t"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# 1: the packages (PGQD_TEST_PACKAGES=DIR: those built by scripts/package)
mkdir "$t/debs"
if [ -n "${PGQD_TEST_PACKAGES:-}" ]; then
    pkgs=$PGQD_TEST_PACKAGES
    msg="packages from $pkgs"
elif out=$("$src/scripts/package" --out "$t/pkgs" 2>&1); then
    pkgs=$t/pkgs
    msg="scripts/package built the packages; $(grep '^lintian:' <<<"$out")"
else
    notok "scripts/package" "$out"
    bail "no packages"
fi
for d in "$pkgs"/*.deb; do case "$d" in *-dbgsym_*) ;; *) cp "$d" "$t/debs/" ;; esac; done
ls "$t"/debs/*.deb >/dev/null 2>&1 || bail "no .deb in $pkgs"
ok "$msg: $(cd "$t/debs" && ls | tr '\n' ' ')"

# 2: a fresh Debian 12 root: made by debootstrap once, then extracted from the
# cache (untouched by any install) while it is younger than 14 days
base=$cache/bookworm-minbase.tar
mkdir -p "$cache"
started=$SECONDS
if [ -n "${PGQD_INSTALL_REFRESH:-}" ] || [ ! -s "$base" ] ||
    [ -n "$(find "$base" -mtime +13 2>/dev/null)" ]; then
    mkdir -p "$cache/debootstrap-debs"
    # debootstrap mounts /proc, /sys and /dev in the target itself: in a
    # private mount namespace, so those mounts never show outside
    if ! out=$(unshare --mount --propagation private -- debootstrap --variant=minbase \
        --cache-dir="$cache/debootstrap-debs" bookworm "$root" "$mirror" 2>&1); then
        notok "debootstrap --variant=minbase bookworm $root $mirror" "$out
$(tail -n 20 "$root/debootstrap/debootstrap.log" 2>/dev/null)"
        bail "no Debian root"
    fi
    rm -rf "$root"/var/cache/apt/archives/*.deb
    tar --numeric-owner -C "$root" -cf "$base.new" . && mv "$base.new" "$base"
    how="debootstrap --variant=minbase bookworm from $mirror in $((SECONDS - started)) s, cached as $base"
else
    mkdir "$root"
    if ! out=$(tar --numeric-owner -C "$root" -xpf "$base" 2>&1); then
        notok "extract $base" "$out"
        bail "no Debian root"
    fi
    how="the cached debootstrap root ($base, $(($(date +%s) - $(stat -c %Y "$base")))s old) in $((SECONDS - started)) s"
fi
ok "a fresh Debian $(cat "$root/etc/debian_version") root: $how"

# what the root needs for the install: the packages, the checks, apt's cached
# lists and downloads, and a policy-rc.d so that postgresql-common's postinst
# creates the main cluster but starts no server (the root has no init; the
# checks start the cluster themselves)
mkdir "$root/tmp/pgqd-ev-check"
cp -r "$t/debs" "$here/install-check-inside.sh" "$here/consumer.c" "$root/tmp/pgqd-ev-check/"
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod 755 "$root/usr/sbin/policy-rc.d"
mkdir -p "$cache/lists" "$cache/archives"
cp -a "$cache/lists/." "$root/var/lib/apt/lists/"
cp -a "$cache/archives/." "$root/var/cache/apt/archives/"
# /etc/resolv.conf for apt (debootstrap leaves the host's copy at bootstrap time)
cp /etc/resolv.conf "$root/etc/resolv.conf"

# the root's mounts, made in the namespace only: /proc, the device nodes
# programs open (bound from the host's), a private /dev/shm for PostgreSQL
enter='set -e
r=$1; shift
mount -t proc proc "$r/proc"
mkdir -p "$r/dev/shm" "$r/dev/pts"
mount -t tmpfs -o mode=1777,size=256m shm "$r/dev/shm"
for d in null zero full random urandom tty; do
    [ -e "$r/dev/$d" ] || : >"$r/dev/$d"
    mount --bind "/dev/$d" "$r/dev/$d"
done
exec chroot "$r" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive TERM=dumb "$@"'
unshare --mount --pid --ipc --uts --fork --kill-child --propagation private -- \
    /bin/sh -c "$enter" sh "$root" /bin/bash /tmp/pgqd-ev-check/install-check-inside.sh \
    $((n + 1)) "$version" </dev/null &
ns_pid=$!
wait "$ns_pid"
rc=$?
ns_pid=

# keep apt's lists and Debian's packages (not ours) for the next run; the
# root ran apt-get autoclean, so packages a point release replaced are gone
if [ -d "$root/var/lib/apt/lists" ]; then
    rm -rf "$cache/lists" "$cache/archives"
    mkdir -p "$cache/lists" "$cache/archives"
    find "$root/var/lib/apt/lists" -maxdepth 1 -type f ! -name lock -exec cp -p {} "$cache/lists/" \;
    for d in "$root"/var/cache/apt/archives/*.deb; do
        [ -e "$d" ] || continue
        case "$(basename "$d")" in pgqd-ev_* | pgqctl_* | libpgqev* | postgresql-*-pgq-ev_*) continue ;; esac
        cp -p "$d" "$cache/archives/"
    done
fi
[ $failed = 0 ] && [ $rc = 0 ]
