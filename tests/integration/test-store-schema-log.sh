#!/usr/bin/env bash
# The catalogue's "adding the X column (older store)" lines are for upgrades
# only (engine/store/catalog.c):
#   - a brand-new data dir: tesserad starts, a volume is made, tesserad
#     restarts: its log has no "older store" line, and store.db's volumes
#     table has every column (epoch, parent, flags, orig, unit) all the same (before:
#     "adding the parent/flags/orig column (older store)" at the first start);
#   - a data dir whose store.db has the volumes table of a store made before
#     those columns: the five lines are logged at start, once (not at the
#     next start), and the volume made there reads back its size.
. "$(dirname "$0")/functions.sh"

require_tessera

# columns DIR: the volumes table's column names, space separated
columns() {
	"$PY" - "$1/store.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
print(" ".join(r[1] for r in db.execute("PRAGMA table_info(volumes)")))
EOF
}

# ---------------------------------------------------------------- fresh
make_tmpdir D
start_tesserad "$D"
vol_create "$D" v 64M
stop_tesserad
start_tesserad "$D"
assert_eq "$(tsr "$D" --json volume show v | json_get 'j["size"]')" 67108864 "fresh: size of v"
stop_tesserad
grep -q "create: volume v" "$D/tesserad.log" || fail "fresh: the log lacks the create line: $(cat "$D/tesserad.log")"
if grep -n "older store" "$D/tesserad.log"; then
	fail "fresh: a new data dir logged upgrade lines (above)"
fi
cols=$(columns "$D") || fail "fresh: read store.db's columns"
assert_eq "$cols" "name uuid size created dev_offset crc epoch parent flags orig unit" \
	"fresh: volumes columns"
log "fresh data dir: no 'older store' line, columns: $cols"

# ---------------------------------------------------------------- upgrade
make_tmpdir O
"$PY" - "$O/store.db" <<'EOF' || fail "make an older store.db"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("""
CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE volumes(name TEXT PRIMARY KEY, uuid TEXT NOT NULL, size INTEGER NOT NULL,
                     created INTEGER NOT NULL, dev_offset INTEGER NOT NULL, crc INTEGER NOT NULL);
""")
db.commit()
EOF
start_tesserad "$O"
vol_create "$O" w 32M
stop_tesserad
start_tesserad "$O"
assert_eq "$(tsr "$O" --json volume show w | json_get 'j["size"]')" 33554432 "upgrade: size of w"
stop_tesserad
for c in epoch parent flags orig unit; do
	n=$(grep -c "catalogue: adding the $c column (older store)" "$O/tesserad.log")
	assert_eq "$n" 1 "upgrade: lines 'adding the $c column' (two starts)"
done
assert_eq "$(columns "$O")" "name uuid size created dev_offset crc epoch parent flags orig unit" \
	"upgrade: volumes columns"
log "older store.db: the five 'adding' lines once, columns complete"
