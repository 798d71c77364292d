/*
 * The record step of a detached volume's snapshot create or delete
 * (snapshot.c, "a detached snapshot's record step: VolumeRecord.snap_gen"):
 * the mutator rec_volume_update runs on vol/<name> once every copy answered.
 * Its own header so that its unit test (tests/unit/engine/cluster/
 * snap_gen_ut.c) calls it; snapshot.c is its only other user.
 */
#ifndef TESSERA_CLUSTER_SNAP_GEN_H
#define TESSERA_CLUSTER_SNAP_GEN_H

#include <stddef.h>

#include "cluster.pb-c.h"
#include "tessera/layout.h"

/*
 * What the step knows of the op.  The copies it reached are matched by node
 * id *and* by not being a replace's new copy (CopyRecord.rebuild set): the
 * record names no copy's uuid (CopyRecord has none, and a cut's answer gives
 * the snapshot's uuid, not the copy's), and every copy the op cut had
 * rebuild clear (a detached snapshot starts only with every copy IN_SYNC
 * after a clean detach, whose write clears it: attach.c), while a replace
 * sets it on the copy it records (volume.c) until that copy is IN_SYNC at an
 * attach or detach.  So a new copy a replace put on a node whose earlier
 * copy was cut (that copy replaced away by another replace meanwhile) is
 * not taken for the copy cut (review 17a F6).
 */
struct snap_gen_step {
	const char *uuid; /* the volume the snapshot read: a new one of that
			   * name (deleted and made again) is left alone */
	char op;          /* 'c' or 'd', as in CopyRecord.missed_snaps */
	const char *snap;
	const char *cut[TSR_LAYOUT_MAX_COPIES]; /* the nodes of the copies it reached */
	size_t n_cut;
	char given[256]; /* the copies given the op as missed (log) */
	char lost[256];  /* the copies it could not be given to (log) */
};

/* rec_volume_mutator: snap_gen + 1, and the op appended to the missed_snaps of
 * each copy rec lists that the op did not reach (above) and that is not
 * IN_SYNC (else named in lost).  1: rec is another volume (uuid), nothing to
 * write; 0; -ENOMEM. */
int snap_gen_mutate(Tessera__Cluster__VolumeRecord *rec, void *arg);

#endif
