/*
 * Snapshots, clones, diffs and rollback of the local store (include/tessera/store.h,
 * "snapshots, clones, diffs"): the control functions.  Work in progress: every
 * function exists so callers link; the ones not yet implemented return -EOPNOTSUPP.
 */
#include <errno.h>

#include "store/internal.h"

int tsr_store_snap_create(struct tsr_store *store, const char *vol, const char *snap,
			  struct tsr_snap_info *info_out)
{
	(void)store, (void)vol, (void)snap, (void)info_out;
	return -EOPNOTSUPP;
}

int tsr_store_snap_delete(struct tsr_store *store, const char *vol, const char *snap)
{
	(void)store, (void)vol, (void)snap;
	return -EOPNOTSUPP;
}

int tsr_store_snap_list(struct tsr_store *store, const char *vol, struct tsr_snap_info **out,
			size_t *count)
{
	(void)store, (void)vol, (void)out, (void)count;
	return -EOPNOTSUPP;
}

int tsr_store_snap_info(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_snap_info *out)
{
	(void)store, (void)vol, (void)snap, (void)out;
	return -EOPNOTSUPP;
}

int tsr_store_vol_clone(struct tsr_store *store, const char *name, const char *vol,
			const char *snap, struct tsr_vol_info *info_out)
{
	(void)store, (void)name, (void)vol, (void)snap, (void)info_out;
	return -EOPNOTSUPP;
}

int tsr_store_vol_parent(struct tsr_store *store, const char *name, char vol_out[64],
			 char snap_out[64])
{
	(void)store, (void)name;
	vol_out[0] = snap_out[0] = 0;
	return -EOPNOTSUPP;
}

int tsr_store_vol_rollback(struct tsr_store *store, const char *vol, const char *snap)
{
	(void)store, (void)vol, (void)snap;
	return -EOPNOTSUPP;
}

int tsr_store_snap_diff(struct tsr_store *store, const char *vol, const char *snap1,
			const char *snap2, struct tsr_extent **out, size_t *count)
{
	(void)store, (void)vol, (void)snap1, (void)snap2, (void)out, (void)count;
	return -EOPNOTSUPP;
}

int tsr_store_snap_open(struct tsr_store *store, const char *vol, const char *snap,
			struct tsr_svol **out)
{
	(void)store, (void)vol, (void)snap, (void)out;
	return -EOPNOTSUPP;
}

bool tsr_svol_readonly(const struct tsr_svol *svol)
{
	(void)svol;
	return false;
}

int tsr_store_vol_space(struct tsr_store *store, const char *vol, uint64_t *allocated,
			uint64_t *exclusive)
{
	(void)store, (void)vol, (void)allocated, (void)exclusive;
	return -EOPNOTSUPP;
}
