/*
 * Tessera NBD server (DESIGN.md layer 1): host I/O.  Fixed newstyle
 * handshake, structured replies, BLOCK_STATUS base:allocation; see
 * engine/nbd/ and docs/ARCHITECTURE.md.  Uses the coordinator (vol.h) only.
 */
#ifndef TESSERA_NBD_H
#define TESSERA_NBD_H

#include <stdint.h>
#include "tessera/store.h"
#include "tessera/vol.h"
#include "tessera/worker.h"

struct tsr_nbd_server;

struct tsr_nbd_server_opts {
	struct tsr_volset *vols;   /* exports are the volumes, by name */
	struct tsr_store *store;   /* for NBD_OPT_LIST (volume names) */
	const char *default_export; /* served for the empty export name; NULL: refuse */
};

int tsr_nbd_server_create(const struct tsr_nbd_server_opts *opts,
			  struct tsr_nbd_server **out);
/* All connections must have ended (workers stopped) first.  NULL ok. */
void tsr_nbd_server_destroy(struct tsr_nbd_server *srv);

/*
 * Serve an accepted client socket on worker w.  Must run on w's thread (call
 * it from a tsr_worker_send message).  Takes ownership of fd: it is closed
 * when the client disconnects, on a protocol error, or when w stops.
 */
void tsr_nbd_conn_start(struct tsr_nbd_server *srv, struct tsr_worker *w, int fd);

struct tsr_nbd_stats {
	uint64_t connections_total;
	uint64_t connections_open;
	uint64_t protocol_errors;
};
void tsr_nbd_server_get_stats(struct tsr_nbd_server *srv, struct tsr_nbd_stats *out);

#endif
