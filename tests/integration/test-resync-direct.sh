#!/usr/bin/env bash
# A mirror resync reads its source copy from disk, not through the source
# node's page cache (MCOP_READ_DIRECT: a local source tsr_svol_read_direct, a
# remote one a peer READ with TSR_PEER_F_DIRECT).  A resync streams whole
# regions once; through the cache it filled the source node's cache (charged
# to tesserad's cgroup) with data read once, evicting hot host data.
# Three nodes, a 3-replica 16 MiB volume attached on n1; n3 stopped, 8 MiB
# written, n3 back: after the resync neither source copy (n1, n2) has a byte
# of its data file in the page cache (through the cache: 8-16 MiB on the
# source), the data reads back and a scrub is clean (A: a local source);
# B the same with a remote source (2 replicas attached on the third node).
# From rcache2's /var/tmp/helpers/rcache2-resync-cache.sh.
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"

require_tessera
require_cmd qemu-io fincore

# resident FILE: bytes of FILE in the page cache
resident() { fincore --bytes --noheadings --output RES "$1" | xargs; }

cl_start 3
ctsr volume create mv --size 16M --replicas 3 >/dev/null || fail "create mv"
ctsr volume attach mv --node n1 >/dev/null || fail "attach mv on n1"
cl_stop 3
cl_qemu_io 1 mv "write -P 0x33 0 8M" >/dev/null || fail "write mv"
F1=$(cl_copy_file 1 mv)
F2=$(cl_copy_file 2 mv)
for i in 1 2; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "n$i's data file bytes cached after the write (O_DIRECT)"
done
cl_start_node 3
cl_wait_nodes_alive 3
cl_wait_synced mv
F3=$(cl_copy_file 3 mv)
log "after the resync: cached n1 $(resident "$F1"), n2 $(resident "$F2"), n3 (target) $(resident "$F3") bytes"
for i in 1 2; do
	f=F$i
	assert_eq "$(resident "${!f}")" 0 "n$i's (a source's) data file bytes cached after the resync"
done
cl_scrub_clean mv "after the resync"
out=$(cl_qemu_io 1 mv "read -P 0x33 0 8M" 2>&1) || fail "read mv back: $out"
echo "$out" | grepq "Pattern verification failed" && fail "mv after the resync: $out"
ctsr volume detach mv >/dev/null || fail "detach mv"

# B. a remote source: 2 replicas, attached on the node without a copy; one
# copy stopped, 8 MiB written, back: the other copy's node served the
# resync's reads (peer READ with TSR_PEER_F_DIRECT) from its disk
ctsr volume create mr --size 16M --replicas 2 --min-replicas 1 >/dev/null || fail "create mr"
nodes=$(cl_copy_nodes mr)
coord=
for i in 1 2 3; do
	case ",$nodes," in *",n$i,"*) ;; *) coord=$i ;; esac
done
[ -n "$coord" ] || fail "B: mr's copies on $nodes: no node without one"
src=${nodes%%,*}
src=${src#n}
dst=${nodes##*,}
dst=${dst#n}
ctsr volume attach mr --node "n$coord" >/dev/null || fail "B: attach mr on n$coord"
cl_stop "$dst"
cl_qemu_io "$coord" mr "write -P 0x34 0 8M" >/dev/null || fail "B: write mr"
FS=$(cl_copy_file "$src" mr)
assert_eq "$(resident "$FS")" 0 "B: n$src's data file bytes cached after the write (O_DIRECT)"
cl_start_node "$dst"
cl_wait_nodes_alive 3
cl_wait_synced mr
log "B: mr on $nodes attached on n$coord: after n$dst's resync n$src (the remote source) has $(resident "$FS") bytes cached"
assert_eq "$(resident "$FS")" 0 "B: n$src's (the remote source's) data file bytes cached after the resync"
cl_scrub_clean mr "B: after the resync"
out=$(cl_qemu_io "$coord" mr "read -P 0x34 0 8M" 2>&1) || fail "B: read mr back: $out"
echo "$out" | grepq "Pattern verification failed" && fail "B: mr after the resync: $out"
ctsr volume detach mr >/dev/null || fail "detach mr"
cl_stop_all
log ok
