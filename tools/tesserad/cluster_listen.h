/*
 * tesserad's --listen port (cluster_listen.c): accepts on a thread of its own
 * ("listen") and hands each connection, by its first 4 bytes, to the peer
 * protocol, the meta service or the admin API.  Peer and meta connections
 * never wait for the main loop, which may be blocked in a cluster command
 * that itself waits for a peer connection to this node.
 */
#ifndef TESSERAD_CLUSTER_LISTEN_H
#define TESSERAD_CLUSTER_LISTEN_H

#include <pthread.h>
#include <stdbool.h>
#include <ev.h>

#include "tessera/admin.h"

struct sniff;

struct cluster_listener {
	/* set by the caller before start; each takes ownership of fd */
	void (*on_peer)(void *arg, int fd);   /* on the listen thread */
	void (*on_meta)(void *arg, int fd);   /* on the listen thread; NULL: not the meta node */
	void (*on_admin)(void *arg, int fd);  /* on the main loop */
	void *arg;
	/* state */
	struct ev_loop *loop;    /* the listen thread's own */
	struct ev_loop *main_loop;
	pthread_t thread;
	ev_async stop;           /* on loop */
	ev_async admin_wake;     /* on main_loop: admin fds queued */
	pthread_mutex_t lock;    /* guards admin_fds */
	int admin_fds[64];
	unsigned n_admin_fds;
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
/* Start the listen thread; admin connections go to on_admin on main_loop.  0 or -errno. */
int cluster_listener_start(struct cluster_listener *l, struct ev_loop *main_loop);
void cluster_listener_stop(struct cluster_listener *l); /* closes what is being sniffed */

#endif
