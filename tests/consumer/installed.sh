#!/bin/sh
# The library as its users get it: install the build into a private root
# (meson install --destdir), then build tests/consumer/api_all.c as C and as
# C++ against the installed headers and libpgqev.pc only, with
# -Wl,--no-undefined, and run both against the test's server. Also: every
# installed header compiles alone in C and C++, and the library exports
# exactly the functions the installed headers declare (nm -D), each of which
# api_all calls.
#
#   installed.sh BUILDDIR SRCDIR TMPDIR SRC_C TARGET_C SRC_CXX TARGET_CXX
# (the C and the C++ program each get their own source and target database)
set -eu
build=$1 src=$2 tmp=$3
root=$tmp/root
rm -rf "$root"
mkdir -p "$tmp"
meson install -C "$build" --destdir "$root" --no-rebuild --quiet >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log"; exit 1; }

[ -n "$(find "$root" -path '*/man3/libpgqev.3')" ] || { echo "installed.sh: no libpgqev(3) installed"; exit 1; }
pc=$(find "$root" -name libpgqev.pc)
[ -n "$pc" ] || { echo "installed.sh: no libpgqev.pc installed"; exit 1; }
# The .pc names its install prefix; point it at the private root. (A pkg-config
# sysroot would move libpq's and libevent's system paths too.)
mkdir -p "$tmp/pc"
prefix=$(sed -n 's/^prefix=//p' "$pc")
sed "s|^prefix=.*|prefix=$root$prefix|" "$pc" >"$tmp/pc/libpgqev.pc"
export PKG_CONFIG_PATH="$tmp/pc"
cflags=$(pkg-config --cflags libpgqev)
libs=$(pkg-config --libs libpgqev)
libdir=$(pkg-config --variable=libdir libpgqev)
incdir=$(pkg-config --variable=includedir libpgqev)/pgqd-ev
echo "# pkg-config: $cflags $libs"
# a sanitizer build's library needs the programs built with the same runtime
san=$(meson introspect --buildoptions "$build" |
    python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "b_sanitize"][0])')
[ "$san" = none ] && san= || san="-fsanitize=$san"

# one prefix: only the pgqev_ headers are installed (the core stays internal)
other=$(cd "$incdir" && ls | grep -v '^pgqev_' || true)
[ -z "$other" ] || { echo "installed.sh: installed headers outside the public API:" $other; exit 1; }

# every installed header alone, twice (include guard), in C and C++
for h in "$incdir"/*.h; do
    n=$(basename "$h")
    printf '#include <pgqd-ev/%s>\n#include <pgqd-ev/%s>\nint main(void) { return 0; }\n' "$n" "$n" >"$tmp/hdr.c"
    cc -std=c11 -Wall -Wextra -Werror $cflags -c "$tmp/hdr.c" -o "$tmp/hdr.o" ||
        { echo "installed.sh: $n does not compile alone in C"; exit 1; }
    c++ -x c++ -Wall -Wextra -Werror $cflags -c "$tmp/hdr.c" -o "$tmp/hdr.o" ||
        { echo "installed.sh: $n does not compile alone in C++"; exit 1; }
done

# the documented API: functions the installed headers declare (gcc's -aux-info
# lists every declaration with its file), less the static inline wrappers
for h in "$incdir"/*.h; do printf '#include <pgqd-ev/%s>\n' "$(basename "$h")"; done >"$tmp/all.c"
cc $cflags -aux-info "$tmp/decls.txt" -c "$tmp/all.c" -o "$tmp/all.o"
grep -F "$incdir/" "$tmp/decls.txt" | grep -v ' static ' |
    grep -oE '\b(pgqev|pqev)_[a-z0-9_]+ \(' | sed 's/ ($//' | sort -u >"$tmp/declared.txt"
nm -D --defined-only "$libdir/libpgqev.so" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' |
    sort -u >"$tmp/exported.txt"
if ! diff "$tmp/declared.txt" "$tmp/exported.txt" >"$tmp/exports.diff"; then
    echo "installed.sh: exports differ from the installed headers (< declared only, > exported only):"
    cat "$tmp/exports.diff"
    exit 1
fi
echo "# nm -D: $(wc -l <"$tmp/exported.txt") functions, exactly those the headers declare"

cc -std=gnu11 -Wall -Wextra -Werror -Wno-unused-parameter $san $cflags \
    "$src/tests/consumer/api_all.c" -o "$tmp/api_all_c" $libs -Wl,--no-undefined
c++ -x c++ -Wall -Wextra -Werror -Wno-unused-parameter $san $cflags \
    "$src/tests/consumer/api_all.c" -x none -o "$tmp/api_all_cxx" $libs -Wl,--no-undefined
# api_all calls every exported function: each is an undefined symbol of both
# programs (the static inline wrappers leave their *_size functions there)
for prog in api_all_c api_all_cxx; do
    nm -u "$tmp/$prog" | awk '{ sub(/@.*/, "", $2); print $2 }' | sort -u >"$tmp/$prog.used"
    missing=$(comm -23 "$tmp/exported.txt" "$tmp/$prog.used")
    [ -z "$missing" ] ||
        { echo "installed.sh: $prog does not call:" $missing; exit 1; }
done
# the programs must use the installed library, not the build tree's
LD_LIBRARY_PATH="$libdir" ldd "$tmp/api_all_c" | grep -q "$libdir/libpgqev.so" ||
    { echo "installed.sh: api_all_c does not load the installed libpgqev"; exit 1; }
LD_LIBRARY_PATH="$libdir" "$tmp/api_all_c" "$4" "$5"
LD_LIBRARY_PATH="$libdir" "$tmp/api_all_cxx" "$6" "$7"
