#!/bin/sh
# The ABI check: libpgqev's exported functions and the types of its public
# headers (abidw) against the baseline in the tree, src/consumer/libpgqev.abi.
# An incompatible change fails unless the soname changed with it; a compatible
# one passes with a note to refresh the baseline. Compatible means: functions
# added, enumerators added, and fields appended at the end of a public struct
# (the input structs carry a size checked at run time, the output structs are
# allocated by the library). Anything else abidiff reports is incompatible:
# abidiff alone calls a moved field a mere "change" (exit 4, not 8).
#
#   abi-check.sh check SRCDIR LIBRARY      compare (a meson test)
#   abi-check.sh baseline SRCDIR LIBRARY   regenerate the baseline:
#                                          meson compile -C build abi-baseline
set -eu
mode=$1 src=$2 lib=$3
baseline=$src/src/consumer/libpgqev.abi
dump() {
    abidw --no-corpus-path --drop-private-types \
        --hd "$src/src/consumer/include/pgqd-ev" \
        --out-file "$1" "$lib"
}
command -v abidw >/dev/null || { echo "abi-check: abidw not found (apt-get install abigail-tools)"; exit 1; }
if [ "$mode" = baseline ]; then
    dump "$baseline"
    echo "abi-check: wrote $baseline"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
dump "$tmp/current.abi"
soname() { sed -n "s/.*<abi-corpus [^>]*soname='\([^']*\)'.*/\1/p" "$1" | head -1; }
old=$(soname "$baseline") new=$(soname "$tmp/current.abi")
rc=0
abidiff "$baseline" "$tmp/current.abi" >"$tmp/diff.txt" 2>&1 || rc=$?
# every line of the report must be one that a compatible change makes
if [ $((rc & 4)) -ne 0 ] && ! python3 - "$tmp/diff.txt" <<'PY'
import re, sys
ok = [r"(Functions|Variables) changes summary: 0 Removed,",
      r"(Function|Variable) symbols changes summary: 0 Removed,",
      r"\d+ Added (function|variable) symbols? not referenced by debug info:",
      r"\[A\] [A-Za-z_][A-Za-z0-9_]*@@",
      r"\d+ functions? with some indirect sub-type changes?:",
      r"\d+ Added functions?:", r"\[A\] '", r"\[C\] '.* has some indirect sub-type changes:",
      r"(parameter \d+|return type) of type '.* has sub-type changes:",
      r"in pointed to type '", r"underlying type '.* changed:",
      r"in unqualified underlying type '",
      r"type size changed from \d+ to \d+ \(in bits\)", r"type size hasn't changed",
      r"\d+ data member insertions?:", r"'[^']*', at offset \d+ \(in bits\)",
      r"\d+ enumerator insertions?:", r"'[^']*' value '"]
size = None
for line in open(sys.argv[1]):
    t = line.strip()
    if not t:
        continue
    if not any(re.match(p, t) for p in ok):
        print("# incompatible: " + t)
        sys.exit(1)
    m = re.match(r"type size changed from (\d+)", t)
    if m:
        size = int(m.group(1))
    m = re.match(r"'[^']*', at offset (\d+)", t)
    if m and (size is None or int(m.group(1)) < size):
        print("# incompatible: a field inserted before the end: " + t)
        sys.exit(1)
PY
then
    rc=$((rc | 8))
fi
echo "1..1"
if [ $((rc & 3)) -ne 0 ]; then
    cat "$tmp/diff.txt" | sed 's/^/# /'
    echo "not ok 1 - abidiff failed to run (exit $rc)"
    exit 0
fi
if [ $((rc & 8)) -ne 0 ]; then
    sed 's/^/# /' "$tmp/diff.txt"
    if [ "$old" = "$new" ]; then
        echo "not ok 1 - incompatible ABI change without a soname bump ($new): bump libpgqev_soversion in src/consumer/meson.build, then regenerate the baseline (meson compile -C build abi-baseline)"
    else
        echo "ok 1 - incompatible ABI change with a soname bump ($old -> $new); regenerate the baseline (meson compile -C build abi-baseline)"
    fi
    exit 0
fi
if [ $((rc & 4)) -ne 0 ]; then
    sed 's/^/# /' "$tmp/diff.txt"
    echo "ok 1 - compatible ABI change ($new); refresh the baseline with: meson compile -C build abi-baseline"
    exit 0
fi
echo "ok 1 - ABI of $new equals the baseline"
