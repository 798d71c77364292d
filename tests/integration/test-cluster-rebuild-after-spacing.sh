#!/usr/bin/env bash
# Failed automatic replaces (--rebuild-after) are spaced by the period from the
# end of each attempt, not back to back (review 16a, F3: attach.c tick_one set
# dead_since to the tick's ev_now, taken before the attempt, which blocks the
# control loop up to its calls' bounds; an attempt as long as the period was
# retried at the next tick, 0.5 s later, and the loop stayed blocked).
#   3 nodes started with --rebuild-after 2 and TSR_TEST_COPY_TIMEOUT_MS=2500
#   (the new copy's create bound, tests only); v (2 replicas) attached on n1,
#   which holds a copy; the other copy's node O killed; the only free node X
#   alive but its fsync/fdatasync each delayed 3 s (strace), so each attempt's
#   create is not answered within 2.5 s.  Once n1's log shows a third
#   attempt starting (40 s at most), it shows at least 2 failed attempts;
#   each next attempt starts at least 1.9 s after the previous one ended (the
#   log's timestamps), and at least one attempt took 2 s or more (else the
#   run could not tell).
# On b8ab404 (with TSR_TEST_COPY_TIMEOUT_MS ignored: the 2 s peer timeout
# bounds the create): the next attempt starts within 0.5 s of the end.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd strace
export TSR_TEST_COPY_TIMEOUT_MS=2500

cl_start 3 --rebuild-after 2
ctsr volume create v --size 8M --replicas 2 --min-replicas 1 >/dev/null || fail "volume create v"
nodes() { timeout 20 "$TESSERA" --cluster "$(cl_addr 1)" --token-file "$(cl_dir 1)/admin.token" --json volume show v | json_get '" ".join(c["node"] for c in j["copies"])'; }
free1() { cl_free_node v 1; }
cl_move_onto_n1 v
ctsr volume attach v --node n1 >/dev/null || fail "volume attach v"
cl_wait_synced v
O=$(nodes | tr ' ' '\n' | grep -v '^n1$')
X=$(free1)
XPID=${CL_PID[${X#n}]}
strace -f -qq -o /dev/null -p "$XPID" -e trace=fsync,fdatasync \
	-e inject=fsync,fdatasync:delay_enter=3000000 &
SPID=$!
on_exit "kill $SPID 2>/dev/null"
sleep 1
log "copies $(nodes); $O killed; the only free node $X answers a create in more than 2.5 s"
cl_kill "${O#n}"
# until the third attempt starts: two failed attempts ended and each was
# followed by the next one's start (the two gaps the check below needs);
# 3 x (2 s dead/spacing + 2.5 s create bound) = 12-14 s; 40 s at most
for (( i=0; i<400; i++ )); do
	[ "$(grep -c "volume v copy $O dead for 2 s: rebuilding elsewhere" "$(cl_dir 1)/tesserad.log")" -ge 3 ] &&
		break
	sleep 0.1
done
kill "$SPID" 2>/dev/null
wait "$SPID" 2>/dev/null
# start: "copy O dead for 2 s: rebuilding elsewhere"; end: "automatic replace
# of v on O: ... (retrying later)"
"$PY" - "$(cl_dir 1)/tesserad.log" "$O" <<'PYEOF' || fail "the automatic replace's attempts are not spaced by --rebuild-after (above)"
import datetime, sys
path, old = sys.argv[1], sys.argv[2]
ev = []
for line in open(path, errors="replace"):
    t = line.split(" ", 1)[0]
    try:
        ts = datetime.datetime.strptime(t, "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
    except ValueError:
        continue
    if f"volume v copy {old} dead for 2 s: rebuilding elsewhere" in line:
        ev.append(("start", ts))
    elif f"automatic replace of v on {old}: " in line and "(retrying later)" in line:
        ev.append(("end", ts))
att, gaps, cur = [], [], None
for kind, ts in ev:
    if kind == "start":
        if att and att[-1][1] is not None:
            gaps.append(ts - att[-1][1])
        att.append([ts, None])
    elif att and att[-1][1] is None:
        att[-1][1] = ts
done = [a for a in att if a[1] is not None]
print(f"{len(att)} attempts, {len(done)} failed: durations "
      f"{[round(b - a, 2) for a, b in done]} s, gaps after each {[round(g, 2) for g in gaps]} s",
      file=sys.stderr)
if len(gaps) < 2:
    print("fewer than 2 gaps between failed attempts", file=sys.stderr); sys.exit(1)
if max(b - a for a, b in done) < 2:
    print("no attempt took 2 s or more: this run cannot tell", file=sys.stderr); sys.exit(1)
bad = [g for g in gaps if g < 1.9]
if bad:
    print(f"attempts retried {bad} s after the previous one ended (want >= 2 s)", file=sys.stderr)
    sys.exit(1)
PYEOF
cl_stop_all
log PASS
