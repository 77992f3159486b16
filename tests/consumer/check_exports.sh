#!/bin/sh
# libpgqev's public surface, from the build tree (fast, no server): the
# functions the library exports (nm -D), the version script's list, the
# functions the public headers declare and the man page's names are one and
# the same set, all named pgqev_*; the public headers name nothing of the
# internal core (pqev_*, Pqev*, PQEV_*, usec_t) and include only each other.
#
#   check_exports.sh SRCDIR LIBRARY
set -eu
src=$1 lib=$2
inc=$src/src/consumer/include/pgqd-ev
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
n=0 fails=0
check() { # check NAME FILE: ok when FILE is empty, else its lines are the failure
    n=$((n + 1))
    if [ -s "$2" ]; then
        echo "not ok $n - $1"
        sed 's/^/# /' "$2"
        fails=$((fails + 1))
    else
        echo "ok $n - $1"
    fi
}
echo "1..6"

nm -D --defined-only "$lib" | awk '$2 == "T" || $2 == "D" || $2 == "B" { sub(/@.*/, "", $3); print $3 }' |
    sort -u >"$tmp/exported"
sed -n 's/^ *\([A-Za-z_][A-Za-z0-9_]*\);$/\1/p' "$src/src/consumer/libpgqev.map" | sort -u >"$tmp/map"
# declarations: a line starting with a type whose first call parenthesis
# follows a pgqev_ name; static inline wrappers and typedefs are no exports
cat "$inc"/*.h | grep -vE '^(static|typedef|#|[[:space:]]|/\*| \*)' |
    grep -oE '\bpgqev_[a-z0-9_]+\(' | tr -d '(' | sort -u >"$tmp/declared"
grep -oE '\*\*pgqev_[a-z0-9_]+\*\*' "$src/docs/libpgqev.3.md" | tr -d '*' | sort -u >"$tmp/man"

grep -v '^pgqev_' "$tmp/exported" >"$tmp/r1" || true
check "every exported symbol is named pgqev_ ($(wc -l <"$tmp/exported") exported)" "$tmp/r1"
diff "$tmp/map" "$tmp/exported" >"$tmp/r2" || true
check "nm -D exports exactly the version script's list (< map only, > exported only)" "$tmp/r2"
diff "$tmp/declared" "$tmp/exported" >"$tmp/r3" || true
check "nm -D exports exactly the public headers' functions (< declared only, > exported only)" "$tmp/r3"
comm -23 "$tmp/exported" "$tmp/man" >"$tmp/r4"
check "the man page docs/libpgqev.3.md names every exported function" "$tmp/r4"
grep -nE '\b(pqev_[a-z_]+|Pqev[A-Za-z]+|PQEV_[A-Z_]+|usec_t|USEC_[A-Z_]+)\b' "$inc"/*.h "$inc"/*.h.in \
    "$src/docs/libpgqev.3.md" | grep -vE '\bpgqev_usec_t\b|PGQEV_USEC_' >"$tmp/r5" || true
check "the public headers and the man page name nothing of the internal core" "$tmp/r5"
grep -hoE '#include <pgqd-ev/[^>]+>' "$inc"/*.h | sed 's/.*<pgqd-ev\/\(.*\)>/\1/' | sort -u |
    while read -r h; do [ -e "$inc/$h" ] || [ -e "$inc/$h.in" ] || echo "includes $h"; done >"$tmp/r6"
check "the public headers include only each other" "$tmp/r6"
exit 0
