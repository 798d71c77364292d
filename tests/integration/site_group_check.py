#!/usr/bin/python3
"""The consistency group checker (tests/integration/test-site-group.sh).

  site_group_check.py LOG IMAGE0 IMAGE1 ...

LOG is group_writer's log ("c vol block" per acknowledged write, c the global
counter: one total order over every volume of the group).  IMAGEi is
`group_writer read` of volume i ("block c" per written block).

The images pass when there is ONE k such that every volume i holds exactly
the writes with counter <= k that went to it (each block the last such write,
blocks never written by them zero).  Volume i alone fits every k in
[m_i, n_i), where m_i is the newest write it holds and n_i its next write in
the log; the group fits the intersection.  Prints "one prefix: k in [lo, hi)"
and exits 0, or says which volume is no prefix of its own writes, or that
the volumes are prefixes at different points (exit 1).
"""
import sys


def main(argv):
    if len(argv) < 3:
        print("usage: site_group_check.py LOG IMAGE...", file=sys.stderr)
        return 2
    writes = {}  # vol -> [(c, block)] in c order
    where = {}   # c -> (vol, block)
    with open(argv[1]) as f:
        for line in f:
            p = line.split()
            if len(p) != 3:
                continue  # a line cut by the writer's end
            c, v, b = int(p[0]), int(p[1]), int(p[2])
            writes.setdefault(v, []).append((c, b))
            where[c] = (v, b)
    lo, hi, parts = 0, float("inf"), []
    for v, path in enumerate(argv[2:]):
        img = {}
        with open(path) as f:
            for line in f:
                b, c = line.split()
                img[int(b)] = int(c)
        mine = writes.get(v, [])
        m = max(img.values(), default=0)
        if m and where.get(m, (None, None))[0] != v:
            print(f"volume {v}: holds write {m}, which the log does not give to it")
            return 1
        want = {}
        nxt = float("inf")
        for c, b in mine:
            if c <= m:
                want[b] = c
            else:
                nxt = c
                break
        if want != img:
            bad = sorted(b for b in set(want) | set(img) if want.get(b) != img.get(b))[:5]
            print(f"volume {v}: not a prefix of its own writes (newest held {m}; blocks "
                  f"{bad}: held {[img.get(b) for b in bad]}, want {[want.get(b) for b in bad]})")
            return 1
        parts.append(f"vol{v} [{m}, {nxt})")
        lo, hi = max(lo, m), min(hi, nxt)
    if lo >= hi:
        print("NO common prefix: each volume is a prefix of its own writes, at different "
              "points of the group's history: " + ", ".join(parts))
        return 1
    print(f"one prefix: k in [{lo}, {hi}) ({', '.join(parts)})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
