#!/bin/sh
# exe_wrapper of the `valgrind` test setup: run our compiled test programs under
# memcheck; test scripts, and interpreters a test names as its program (`sh` of
# unit-abi, `python3` of pg-doc-examples), run as they are (valgrind would report
# the interpreter's own leaks, which say nothing about our code).
case "$1" in
    /usr/* | /bin/*) exec "$@" ;;
esac
if [ "$(head -c 4 "$1" | tail -c 3)" = "ELF" ]; then
    exec valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --track-fds=no --suppressions="$(dirname "$0")/valgrind.supp" "$@"
fi
exec "$@"
