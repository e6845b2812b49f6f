#!/usr/bin/env bash
# Sourced first by every shell script of scripts/: -h or --help prints the script's header comment;
# `expect_arguments COUNT "$@"` refuses another number of arguments, or a flag, with exit code 2.
#   bash scripts/usage.sh -h     # this text
if [ "${BASH_SOURCE[1]:-$0}" = "$0" ] && { [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; }; then
    sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
    exit 0
fi

expect_arguments() {  # COUNT ARGUMENT...
    local count=$1 argument
    shift
    for argument in "$@"; do
        case "$argument" in -*)
            echo "error: $argument: unknown flag (-h prints the usage of $(basename "$0"))" >&2
            exit 2 ;;
        esac
    done
    if [ $# -ne "$count" ]; then
        echo "error: $(basename "$0") takes $count argument(s), got $# (-h prints its usage)" >&2
        exit 2
    fi
}
