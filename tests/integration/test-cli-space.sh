#!/usr/bin/env bash
# The free space of each node's data file system, as the operator sees it:
# `tessera status` (this node), `tessera node list` and `tessera cluster
# status` (every node, asked from the node itself) show its size and what is
# available, in human units in the tables and in bytes in --json, and a
# WARNING line for a node whose data file system is over 90% full or full.
#   - standalone: `--json status` data_fs against python's os.statvfs of the
#     data dir (size exact; free and avail within 64 MiB: other processes
#     write on the same file system meanwhile);
#   - two nodes, n2's data dir a 48 MiB ext4 on a loop device: `--json node
#     list` and `--json cluster status` figures against os.statvfs of each
#     node's dir; no warning while n2 has room;
#   - n2 filled to about 95% (fallocate): "WARNING: node n2: data file
#     system NN% full" in node list and cluster status, used_percent > 90 and
#     the warning in --json; n1 not warned;
#   - n2 full (df: 0 KiB available): "FULL" in node list, cluster status and
#     n2's own `status`, avail 0 in --json;
#   - n2 frozen (SIGSTOP), then killed: node list and cluster status still
#     answer, n2's figures unknown ("no answer from ..." / "not alive"); n1
#     answers `status` while its node list waits for the frozen n2 (n2 is
#     asked without blocking n1's loop).
# Needs root and loop devices (for the small file system).
. "$(dirname "$0")/functions.sh"
. "$(dirname "$0")/cluster.sh"
. "$(dirname "$0")/fullfs.sh"

require_tessera
fullfs_require
require_cmd fallocate

# fs_check JSON_DATA_FS DIR WHAT: the figures match os.statvfs(DIR): size
# exactly (which file system), free and avail within 64 MiB on a file system
# of its own, within 2 GiB on the machine's shared one (other writers move
# it between tesserad's statvfs and ours: CI run 17b saw 152 MiB in between
# while a benchmark prefilled its files) (prints the used_percent)
fs_check() {
	"$PY" - "$1" "$2" "$3" <<'EOF'
import json, os, sys
fs, d, what = json.loads(sys.argv[1]), sys.argv[2], sys.argv[3]
st = os.statvfs(d)
want = {"size": st.f_blocks * st.f_frsize, "free": st.f_bfree * st.f_frsize,
        "avail": st.f_bavail * st.f_frsize}
if fs.get("error"):
    sys.exit(f"{what}: data_fs unknown: {fs['error']}")
if fs["size"] != want["size"]:
    sys.exit(f"{what}: size {fs['size']}, statvfs says {want['size']}")
slack = 64 << 20 if st.f_blocks * st.f_frsize < 64 << 30 else 2 << 30
for k in ("free", "avail"):
    if abs(fs[k] - want[k]) > slack:
        sys.exit(f"{what}: {k} {fs[k]}, statvfs says {want[k]}")
used = fs["size"] - fs["free"]
pct = -(-used * 100 // (used + fs["avail"])) if used + fs["avail"] else 0
if abs(fs["used_percent"] - pct) > 1:
    sys.exit(f"{what}: used_percent {fs['used_percent']}, from its own figures {pct}")
if (fs["warning"] is not None) != (fs["avail"] == 0 or fs["used_percent"] > 90):
    sys.exit(f"{what}: warning {fs['warning']!r} at {fs['used_percent']}% used")
print(fs["used_percent"])
EOF
}

# ---------------------------------------------------------------- standalone
make_tmpdir T
D=$T/d
start_tesserad "$D"
pct=$(fs_check "$(tsr "$D" --json status | json_get 'j["data_fs"]')" "$D" "standalone status") ||
	fail "$pct"
tsr "$D" status >"$T/status.out" || fail "tessera status"
grep -qE "^data fs: +[0-9.]+ [KMGTPi]*B, [0-9.]+ [KMGTPi]*B available \([0-9]+% used\)$" \
	"$T/status.out" || { cat "$T/status.out" >&2; fail "status: no 'data fs:' line"; }
log "standalone: $(grep '^data fs' "$T/status.out"); --json data_fs matches statvfs"
stop_tesserad

# ---------------------------------------------------------------- two nodes
make_tmpdir CL_ROOT
CL_N=2
i=1
while read -r port; do CL_PORT[$i]=$port; i=$(( i + 1 )); done < <(free_ports 2) # distinct
fullfs_mount N2 48M "$(cl_dir 2)"
for i in 1 2; do cl_start_node "$i"; done
cl_wait_nodes_alive 2
# node_fs I: node nI's data_fs in --json node list (through node 1)
node_fs() { ctsr --json node list | json_get "[n['data_fs'] for n in j['nodes'] if n['id']=='n$1'][0]"; }
# space_fs I: the same from --json cluster status (its node_list)
space_fs() { ctsr --json cluster status | json_get "[n['data_fs'] for n in j['node_list'] if n['id']=='n$1'][0]"; }
for i in 1 2; do
	fs_check "$(node_fs "$i")" "$(cl_dir "$i")" "node list, n$i" >/dev/null || fail "node list n$i"
	fs_check "$(space_fs "$i")" "$(cl_dir "$i")" "cluster status, n$i" >/dev/null ||
		fail "cluster status n$i"
done
assert_eq "$(ctsr --json cluster status | json_get '[j["data_fs"][k] == sum(n["data_fs"][k] for n in j["node_list"]) for k in ("size", "free", "avail")] + [j["data_fs"]["nodes_known"], j["data_fs"]["nodes"]]')" \
	"[true, true, true, 2, 2]" "cluster status --json: data_fs is the sum over the nodes"
assert_eq "$(node_fs 2 | json_get 'j["size"]')" \
	"$("$PY" -c 'import os,sys; s=os.statvfs(sys.argv[1]); print(s.f_blocks*s.f_frsize)' "$N2")" \
	"n2's data fs size (its 48 MiB ext4)"
ctsr node list >"$T/nodes.out" || fail "node list"
grep -q "FS AVAIL" "$T/nodes.out" || { cat "$T/nodes.out" >&2; fail "node list: no FS AVAIL column"; }
grep -q "WARNING: node n2" "$T/nodes.out" && { cat "$T/nodes.out" >&2; fail "node list warns with room on n2"; }
log "two nodes: node list and cluster status figures match statvfs, no warning"

# n2 about 95% full: warned, n1 not
avail=$(df -B1 --output=avail "$N2" | tail -n1)
size=$(df -B1 --output=size "$N2" | tail -n1)
fallocate -l $(( avail - size / 20 )) "$N2/ballast" || fail "ballast on n2"
fs=$(node_fs 2)
pct=$(fs_check "$fs" "$N2" "node list, n2 95% full") || fail "$pct"
[ "$pct" -gt 90 ] || fail "n2 at $pct% used after the ballast, want over 90"
ctsr node list >"$T/nodes.out" || fail "node list"
grep -qE "^WARNING: node n2: data file system $pct% full \(" "$T/nodes.out" ||
	{ cat "$T/nodes.out" >&2; fail "node list: no warning for n2 at $pct%"; }
# (n1's data dir is on the machine's disk: warned only if that is nearly full itself)
[ "$(node_fs 1 | json_get 'j["used_percent"] > 90')" = true ] ||
	! grep -q "WARNING: node n1" "$T/nodes.out" || { cat "$T/nodes.out" >&2; fail "node list warns about n1"; }
ctsr cluster status >"$T/cluster.out" || fail "cluster status"
grep -qE "^WARNING: node n2: data file system $pct% full" "$T/cluster.out" ||
	{ cat "$T/cluster.out" >&2; fail "cluster status: no warning for n2"; }
grep -qE "^data fs: +.* available \([0-9]+% used\) on 2 of 2 nodes$" "$T/cluster.out" ||
	{ cat "$T/cluster.out" >&2; fail "cluster status: no 'data fs:' summary"; }
log "n2 $pct% full: $(grep '^WARNING' "$T/nodes.out")"

# n2 full
fill_fs "$N2/ballast2"
fs=$(node_fs 2)
assert_eq "$(printf '%s' "$fs" | json_get 'j["avail"]')" 0 "n2's avail in node list --json on a full fs"
printf '%s' "$fs" | json_get 'j["warning"]' | grepq "data file system FULL" ||
	fail "node list --json: no FULL warning for n2: $fs"
ctsr node list >"$T/nodes.out" || fail "node list"
grep -qE "^WARNING: node n2: data file system FULL \(0 B available of " "$T/nodes.out" ||
	{ cat "$T/nodes.out" >&2; fail "node list: no FULL warning for n2"; }
ctsr cluster status | grepq "^WARNING: node n2: data file system FULL" ||
	fail "cluster status: no FULL warning for n2"
ctsr_via 2 status >"$T/status2.out" 2>&1 || { cat "$T/status2.out" >&2; fail "status of n2"; }
grep -q "^WARNING: data file system FULL" "$T/status2.out" ||
	{ cat "$T/status2.out" >&2; fail "n2's status: no FULL warning"; }
log "n2 full: $(grep '^WARNING' "$T/nodes.out")"

# n2 frozen (SIGSTOP: its socket accepts, nothing answers): node list still
# answers, n2's figures unknown ("no answer from ..." while its lease holds,
# "not alive" once it lapsed)
freeze_pids "${CL_PID[2]}" || fail "pid ${CL_PID[2]} not stopped"
on_exit "kill -CONT ${CL_PID[2]}"
# n1 asks n2 without blocking its loop: n1 answers `status` while its node
# list still waits for n2 (before: one blocking call after the other)
ctsr --json node list >"$T/frozen.json" 2>&1 &
LIST_PID=$!
track_pid "$LIST_PID"
sleep 0.3
ctsr status >/dev/null || fail "status of n1 while its node list waits for the frozen n2"
kill -0 "$LIST_PID" 2>/dev/null ||
	fail "node list with n2 frozen was over before n1 answered status (n1's loop blocked?)"
reap "$LIST_PID" || { cat "$T/frozen.json" >&2; fail "node list with n2 frozen"; }
err=$(json_get "[n['data_fs']['error'] for n in j['nodes'] if n['id']=='n2'][0]" <"$T/frozen.json")
kill -CONT "${CL_PID[2]}"
[[ $err == "no answer from "* || $err == "not alive" ]] ||
	fail "n2's data_fs error while frozen: '$err'"
log "n2 frozen: node list answered, n2: $err"

# n2 gone: unknown, and node list still answers
cl_kill 2
for (( i=0; i<150; i++ )); do
	err=$(node_fs 2 | json_get 'j["error"]')
	[ "$err" = "not alive" ] && break
	sleep 0.2
done
assert_eq "$err" "not alive" "n2's data_fs error after kill -9 (once its lease lapsed)"
ctsr node list >"$T/nodes.out" || fail "node list with n2 down"
grep -qE "^n2 .* NO .* +- +- +-$" "$T/nodes.out" ||
	{ cat "$T/nodes.out" >&2; fail "node list: n2's figures not '-' when it is down"; }
ctsr cluster status | grepq -E "^data fs: .* on 1 of 2 nodes \(the nodes below say why\)$" ||
	fail "cluster status: the summary does not say n2 is unknown"
rm -f "$N2"/ballast*
cl_stop_all
log "n2 down: its data fs unknown (not alive), node list and cluster status answer"
