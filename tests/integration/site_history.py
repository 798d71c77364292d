#!/usr/bin/python3
"""The geo-replication history checker: is a DR image a prefix of the source's
acknowledged write history?

  site_history.py check SEQS LOG [LOG...] [--allow-unlogged]

The writes come from crash_writer (tests/integration/crash_writer.c): unique
self-describing 4 KiB blocks (offset, sequence number, CRC32C, filler derived
from both), never two writes in flight on one block, each acknowledged write
logged as "offset seq submit_ns ack_ns" (CLOCK_MONOTONIC).  SEQS is the DR
image as `crash_writer seqs URI SEQS` read it at a pause of the link: "block
seq" per non-zero block (crash_writer already refused any block that is not a
whole valid write of its own offset).  Run the check once the writers have
ended, so every write they made is in the LOGs.

The source ships writes in the order its volume acknowledged them, and the
target applies that order, so the image must hold exactly the writes of one
prefix P of the volume's acknowledgment order.  A client sees each write's
volume acknowledgment happen between its submit and its own ack, so for any
write W the image holds and any write L it lacks, W was acknowledged before
L: submit(W) < ack(L).  The check:
  - each block holds zeros or a logged write of that block (--allow-unlogged:
    or a write newer than every logged one of the block, that was in flight
    when the source was killed: it may have been acknowledged by the volume);
  - the writes the image lacks are, per block, the logged ones newer than what
    the block holds (all of them for a zero block);
  - max(submit of held writes) < min(ack of lacked writes).
Exit 0 when it holds, 1 with the reasons, 2 on bad input.
"""
import collections
import sys


def load_log(paths):
    by_block = collections.defaultdict(list)  # block -> [(seq, submit, ack)]
    n = 0
    for path in paths:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 4:
                    sys.exit(f"{path}: bad log line: {line!r}")
                off, seq, sub, ack = (int(x) for x in parts[:4])
                if off % 4096:
                    sys.exit(f"{path}: unaligned offset in {line!r}")
                by_block[off // 4096].append((seq, sub, ack))
                n += 1
    return by_block, n


def load_seqs(path):
    img = {}
    with open(path) as f:
        for line in f:
            b, s = line.split()
            img[int(b)] = int(s)
    return img


def check(seqs_path, log_paths, allow_unlogged):
    by_block, nlog = load_log(log_paths)
    img = load_seqs(seqs_path)
    bad = []
    held = lacked = unlogged = 0
    max_submit, max_submit_seq = -1, 0
    min_ack, min_ack_seq = None, 0
    for b in set(by_block) | set(img):
        writes = by_block.get(b, [])
        have = img.get(b, 0)
        seqs = {w[0] for w in writes}
        if have and have not in seqs:
            newest = max(seqs) if seqs else 0
            if allow_unlogged and have > newest:
                unlogged += 1
            else:
                bad.append(f"block {b}: holds seq {have}, which the log never wrote there "
                           f"(logged: {sorted(seqs)[-5:]})")
                continue
        for seq, sub, ack in writes:
            if seq == have:
                held += 1
                if sub > max_submit:
                    max_submit, max_submit_seq = sub, seq
            elif seq > have:
                lacked += 1
                if min_ack is None or ack < min_ack:
                    min_ack, min_ack_seq = ack, seq
    if min_ack is not None and held and max_submit >= min_ack:
        bad.append(f"not a prefix: the image holds seq {max_submit_seq} (submitted at "
                   f"{max_submit} ns) but lacks seq {min_ack_seq}, acknowledged earlier "
                   f"(at {min_ack} ns)")
    for line in bad[:20]:
        print("BAD", line)
    print(f"site_history: {nlog} logged writes; the image holds {held} of them"
          f"{f' (+{unlogged} in flight at a crash)' if unlogged else ''} and lacks {lacked} "
          f"later ones: {'NOT a prefix of the history' if bad else 'a prefix of the history'}")
    return 1 if bad else 0


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = {a for a in argv[1:] if a.startswith("--")}
    if len(args) < 3 or args[0] != "check" or flags - {"--allow-unlogged"}:
        sys.stderr.write(__doc__)
        return 2
    return check(args[1], args[2:], "--allow-unlogged" in flags)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
