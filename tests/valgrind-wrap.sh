#!/bin/sh
# exe_wrapper of the `valgrind` test setup: run our compiled test programs under
# memcheck; test scripts run as they are (valgrind would report the shell's own
# leaks, which say nothing about our code).
if [ "$(head -c 4 "$1" | tail -c 3)" = "ELF" ]; then
    exec valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite \
        --track-fds=no --suppressions="$(dirname "$0")/valgrind.supp" "$@"
fi
exec "$@"
