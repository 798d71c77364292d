/*
 * tesserad's --listen port (cluster_listen.c): accepts on the main loop and
 * hands each connection, by its first 4 bytes, to the peer protocol, the
 * meta service or the admin API.
 */
#ifndef TESSERAD_CLUSTER_LISTEN_H
#define TESSERAD_CLUSTER_LISTEN_H

#include <stdbool.h>
#include <ev.h>

#include "tessera/admin.h"

struct sniff;

struct cluster_listener {
	/* set by the caller before start; each takes ownership of fd */
	void (*on_peer)(void *arg, int fd);
	void (*on_meta)(void *arg, int fd);   /* NULL: not the meta node, close */
	void (*on_admin)(void *arg, int fd);
	void *arg;
	/* state */
	struct ev_loop *loop;
	ev_io watcher;
	ev_timer pause;
	int fd;                  /* -1 when closed */
	bool started;
	char name[320];          /* "tcp:HOST:PORT" with the actual port */
	struct sniff *sniffing;  /* accepted, first bytes not seen yet */
	unsigned n_sniffing;
};

/* Bind and listen on "HOST:PORT".  0 or -errno (logged). */
int cluster_listener_bind(struct cluster_listener *l, const char *hostport);
void cluster_listener_start(struct cluster_listener *l, struct ev_loop *loop);
void cluster_listener_stop(struct cluster_listener *l); /* closes what is being sniffed */

#endif
