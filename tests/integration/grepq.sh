# shellcheck shell=bash
# grepq: `grep -q` for the end of a pipeline, and headc: `head -c` for its
# middle.  Sourced by functions.sh (so by every integration test), by
# bench/lib.sh and by scripts/setup.sh.
#
#   PRODUCER | grepq [GREP-OPTION...] PATTERN
#   tsr "$D" volume list | grepq -w alpha || fail "..."
#   ! printf '%s' "$st" | grepq -v '^in-sync$' || ...
#
# Answers as `grep -q` does, on stdin only (never give it a file operand):
# prints nothing, returns 0 if a line matches, 1 if none does, 2 on an error
# (a bad pattern).  Every grep option passes through unchanged: -E -F -i -w
# -x -v -e PAT --, ...
#
# Why: `grep -q` exits at its first match.  If the producer writes again after
# that, the write gets EPIPE and the producer dies of SIGPIPE (exit 141); with
# `set -o pipefail` (functions.sh, setup.sh) the pipeline then fails although
# the pattern matched.  Any producer whose output is more than one write can
# hit it, at random, depending on when grep is scheduled: CI run 14c,
# `ctsr volume create --help | grep -q -- '--ec K+M'` with a 4650-byte help
# written in two writes.  grepq keeps reading after grep's answer, to the end
# of its input, so the producer always finishes and its own exit status is the
# one pipefail sees, as when nothing matched.
#
# It drains stdin after grep instead of loading it into a variable first: the
# bytes grep sees are exactly the producer's (a variable drops NUL bytes and
# the trailing newlines, and `<<<` adds one, which changes what -v, -x and -c
# answer on empty or newline-ended input), and nothing is held in memory.
grepq() {
	local rc=0
	grep -q "$@" || rc=$?
	cat >/dev/null
	return "$rc"
}

# headc BYTES: `head -c BYTES` in a pipeline whose producer must not be cut
# off, for the same reason as grepq: `nbdcopy URI - | head -c 1M | sha256sum`
# under pipefail is status 141 (nbdcopy killed by SIGPIPE once head exits)
# although the first MiB it hashes is right, and a real read error of
# nbdcopy's could not be told from it.  headc prints the first BYTES of its
# input as head -c does, then reads the rest to its end, so the producer
# always finishes and its own exit status is the one pipefail sees.  (For a
# large export whose tail is not wanted, nbdcopy to a file is cheaper.)
headc() {
	local rc=0
	head -c "$1" || rc=$?
	cat >/dev/null
	return "$rc"
}
