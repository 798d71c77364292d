# shellcheck shell=bash
# What every bench script does with its arguments, sourced by each right after
# its header comment and its `set` line:
#
#   . "$(dirname "$0")/lib.sh"
#   bench_args "$0" "$@"              # a script that takes no arguments
#   bench_args --operands "$0" "$@"   # percall.sh: BUILD_DIR... are its own
#
# -h or --help (anywhere) prints the script's header comment, the lines after
# the shebang up to the first line that is not a comment, without their "# ",
# and exits 0 before anything is started, built or created.  Any other
# argument (with --operands: any that starts with "-") is an error on stderr
# naming it, exit 2: the knobs are environment variables (BENCH_*, TSR_BUILD).

# grepq [GREP-OPTION...] PATTERN: `grep -q` at the end of a pipeline that reads
# its input to the end (no SIGPIPE for the producer under pipefail).
# shellcheck source=tests/integration/grepq.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tests/integration/grepq.sh"

# The header comment of SCRIPT, as usage text.
bench_usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "$1"; }

bench_args() {
	local operands=0 script a
	if [ "${1:-}" = --operands ]; then
		operands=1
		shift
	fi
	script=$1
	shift
	for a in "$@"; do
		case $a in
		-h | --help)
			bench_usage "$script"
			exit 0
			;;
		esac
	done
	for a in "$@"; do
		case $a in
		-*) ;;
		*) [ "$operands" = 1 ] && continue ;;
		esac
		printf '%s: unknown argument "%s" (settings are environment variables; see %s --help)\n' \
			"$script" "$a" "$script" >&2
		exit 2
	done
}
