#!/bin/sh
# The man page renders without groff warnings, and docs/configuration.md is what
# the renderer makes from docs/pgqd-ev.8.md today (edit the source, then run
# `meson compile -C BUILD ticker-docs`). Usage: check-docs.sh SRCDIR
set -u
src=$1
t=$(mktemp -d)
trap 'rm -rf "$t"' EXIT
echo "1..3"
python3 "$src/docs/pgqd-ev.8-render.py" man test "$src/docs/pgqd-ev.8.md" "$t/pgqd-ev.8"
if ! command -v groff >/dev/null; then
	echo "ok 1 # SKIP no groff"
elif w=$(groff -man -ww -z "$t/pgqd-ev.8" 2>&1) && [ -z "$w" ]; then
	echo "ok 1 - man page renders cleanly"
else
	echo "not ok 1 - groff warnings"; echo "$w" | sed 's/^/# /'
fi
python3 "$src/docs/pgqd-ev.8-render.py" md "$src/docs/pgqd-ev.8.md" "$t/configuration.md"
if d=$(diff -u "$src/docs/configuration.md" "$t/configuration.md"); then
	echo "ok 2 - docs/configuration.md is up to date"
else
	echo "not ok 2 - docs/configuration.md is stale"; echo "$d" | head -20 | sed 's/^/# /'
fi
python3 "$src/docs/pgqd-ev.8-render.py" readme "$src/docs/pgqd-ev.8.md" "$t/README.md" "$src/README.md"
if d=$(diff -u "$src/README.md" "$t/README.md"); then
	echo "ok 3 - README's configuration reference is up to date"
else
	echo "not ok 3 - README's configuration reference is stale (meson compile -C BUILD readme-docs)"; echo "$d" | head -20 | sed 's/^/# /'
fi
