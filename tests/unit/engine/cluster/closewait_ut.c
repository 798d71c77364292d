/*
 * The detach's note on the copies still open on their nodes
 * (engine/cluster/closewait.c, cluster_close_note): the nodes of one state
 * listed together, and a note that does not fit cut short with "...".
 * Review revJ F4: each copy was listed with its own state, into a 1024-byte
 * note then a 1400-byte message, which admin_fail cut at 1024: an ec 16+4
 * volume behind a cut site lost nodes, and the message's advice.
 *
 * And the wait itself (cluster_close_wait_start) on a libev loop against a
 * node whose admin address is a name ("localhost:PORT", a listener here
 * that closes every connection at once: its copy never answers closed):
 * the name is resolved once for the whole wait, not at each of its looks
 * every 10 ms (getaddrinfo is wrapped: -Wl,--wrap=getaddrinfo, calls
 * without AI_NUMERICHOST counted).
 */
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <ev.h>

#include "cluster/internal.h"
#include "../store/store_test.h"

/* getaddrinfo calls that may ask a resolver (no AI_NUMERICHOST) */
static unsigned g_resolves;
/* the next this many of them fail (EAI_AGAIN: the resolver cannot be reached) */
static unsigned g_resolve_fails;
/* each of them takes this long first (a resolver that answers slowly) */
static unsigned g_resolve_ms;
/* from the second on, the name's port is this one (the name moved) */
static const char *g_moved_port;
/* the name has a second address: this port (after the name's own) */
static const char *g_second_port;
/* a connect to this port fails as on a real network: in progress at once,
 * then refused (SO_ERROR), where loopback refuses at once */
static unsigned g_late_refuse_port;
static int g_late_refused_fd = -1;

int __real_connect(int fd, const struct sockaddr *addr, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len);
int __wrap_connect(int fd, const struct sockaddr *addr, socklen_t len)
{
	int ret = __real_connect(fd, addr, len);

	if (ret < 0 && errno == ECONNREFUSED && g_late_refuse_port && addr->sa_family == AF_INET &&
	    ntohs(((const struct sockaddr_in *)addr)->sin_port) == g_late_refuse_port) {
		g_late_refused_fd = fd; /* its SO_ERROR says it (below) */
		errno = EINPROGRESS;
	}
	return ret;
}

int __real_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len);
int __wrap_getsockopt(int fd, int level, int name, void *val, socklen_t *len)
{
	if (fd == g_late_refused_fd && level == SOL_SOCKET && name == SO_ERROR) {
		g_late_refused_fd = -1;
		*(int *)val = ECONNREFUSED;
		return 0;
	}
	return __real_getsockopt(fd, level, name, val, len);
}

int __real_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res);
int __wrap_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
		       struct addrinfo **res)
{
	if (hints == NULL || !(hints->ai_flags & AI_NUMERICHOST)) {
		g_resolves++;
		if (g_resolve_ms)
			usleep(g_resolve_ms * 1000u);
		if (g_resolve_fails) {
			g_resolve_fails--;
			return EAI_AGAIN;
		}
		if (g_moved_port && g_resolves > 1)
			service = g_moved_port;
		if (g_second_port) { /* the name's addresses: its own, then this */
			struct addrinfo *ai;
			int ret = __real_getaddrinfo(node, service, hints, res);

			if (ret)
				return ret;
			for (ai = *res; ai->ai_next; ai = ai->ai_next)
				;
			ret = __real_getaddrinfo(node, g_second_port, hints, &ai->ai_next);
			return ret;
		}
	}
	return __real_getaddrinfo(node, service, hints, res);
}

#define SILENT "its node did not answer within 5000 ms: stopped or cut off?"

static void test_grouped(void **state)
{
	const char *nodes[] = {"n1", "n2", "n3", "n4"};
	const char *states[] = {SILENT, NULL, "1 session(s) open there", SILENT};
	char note[700];

	(void)state;
	cluster_close_note(note, sizeof(note), 4, nodes, states);
	assert_string_equal(note, "n1, n4 (" SILENT "), n3 (1 session(s) open there)");
	states[0] = states[2] = states[3] = NULL;
	cluster_close_note(note, sizeof(note), 4, nodes, states);
	assert_string_equal(note, "");
}

/* ec 16+4 behind a cut site: 20 nodes, one state, in one short note. */
static void test_large_layout(void **state)
{
	char ids[TSR_LAYOUT_MAX_COPIES][64], note[700], want[2048] = "";
	const char *nodes[TSR_LAYOUT_MAX_COPIES], *states[TSR_LAYOUT_MAX_COPIES];

	(void)state;
	for (unsigned i = 0; i < TSR_LAYOUT_MAX_COPIES; i++) {
		snprintf(ids[i], sizeof(ids[i]), "storage-node-%02u", i);
		nodes[i] = ids[i];
		states[i] = SILENT;
		snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s%s", i ? ", " : "",
			 ids[i]);
	}
	snprintf(want + strlen(want), sizeof(want) - strlen(want), " (%s)", SILENT);
	cluster_close_note(note, sizeof(note), TSR_LAYOUT_MAX_COPIES, nodes, states);
	assert_string_equal(note, want);
}

/* Too long for out: cut short, ending in "...". */
static void test_cut_short(void **state)
{
	const char *nodes[] = {"n1", "n2"};
	const char *states[] = {"a", "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"};
	char note[24];

	(void)state;
	cluster_close_note(note, sizeof(note), 2, nodes, states);
	assert_int_equal(strlen(note), sizeof(note) - 1);
	assert_string_equal(note, "n1 (a), n2 (bbbbbbbb...");
}

/* ---- the wait against a node named by a host name ---- */

struct wait_env {
	struct ev_loop *loop;
	ev_io accept_w;
	int listen_fd;
	unsigned accepts; /* the wait's looks that reached the node */
	bool done;
	char note[1024];
};

static void refuse_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct wait_env *e = w->data;
	int fd = accept(e->listen_fd, NULL, NULL);

	(void)loop;
	(void)revents;
	if (fd >= 0) { /* closed at once: the look learns nothing, the copy stays open */
		e->accepts++;
		close(fd);
	}
}

static void close_done(void *cb_arg, const char *note)
{
	struct wait_env *e = cb_arg;

	snprintf(e->note, sizeof(e->note), "%s", note);
	e->done = true;
	ev_break(e->loop, EVBREAK_ALL);
}

static void put_records(struct tsr_meta *m, const char *address)
{
	Tessera__Cluster__NodeRecord node = TESSERA__CLUSTER__NODE_RECORD__INIT;
	Tessera__Cluster__VolumeRecord vol = TESSERA__CLUSTER__VOLUME_RECORD__INIT;
	Tessera__Cluster__CopyRecord c1 = TESSERA__CLUSTER__COPY_RECORD__INIT;
	Tessera__Cluster__CopyRecord c2 = TESSERA__CLUSTER__COPY_RECORD__INIT;
	Tessera__Cluster__CopyRecord *copies[] = {&c1, &c2};

	node.id = "n2";
	node.address = (char *)address;
	node.zone = "z1";
	assert_int_equal(rec_put(m, "node/n2", &node.base, 0, 0, NULL), 0);
	c1.node_id = "n1";
	c2.node_id = "n2";
	vol.name = "v";
	vol.uuid = "1b4e28ba-2fa1-11d2-883f-0016d3cca427";
	vol.size = 1u << 20;
	vol.replicas = 2;
	vol.min_replicas = 1;
	vol.failure_domain = "node";
	vol.n_copies = 2;
	vol.copies = copies;
	assert_int_equal(rec_put(m, "vol/v", &vol.base, 0, 0, NULL), 0);
}

/* The wraps above as the real calls (counting lookups from 0). */
static void wraps_reset(void)
{
	g_resolves = 0;
	g_resolve_fails = 0;
	g_resolve_ms = 0;
	g_moved_port = NULL;
	g_second_port = NULL;
	g_late_refuse_port = 0;
}

/* A wait's world: metadata in SQLite, a libev loop, and a listener here
 * that closes every connection at once (port e->port). */
struct wait_world {
	struct wait_env e;
	struct tsr_cluster *c;
	char dir[512];
	unsigned port;
};

static void world_open(struct wait_world *ww)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	char path[600];

	memset(ww, 0, sizeof(*ww));
	ww->c = calloc(1, sizeof(*ww->c));
	assert_non_null(ww->c);
	assert_int_equal(scratch_dir(ww->dir, sizeof(ww->dir)), 0);
	snprintf(path, sizeof(path), "%s/meta.db", ww->dir);
	assert_int_equal(tsr_meta_open_sqlite(path, &ww->c->meta), 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ww->e.listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(ww->e.listen_fd >= 0);
	assert_int_equal(bind(ww->e.listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(ww->e.listen_fd, 128), 0);
	assert_int_equal(getsockname(ww->e.listen_fd, (struct sockaddr *)&a, &alen), 0);
	ww->port = ntohs(a.sin_port);
	ww->e.loop = ev_loop_new(EVFLAG_AUTO);
	assert_non_null(ww->e.loop);
	ev_io_init(&ww->e.accept_w, refuse_cb, ww->e.listen_fd, EV_READ);
	ww->e.accept_w.data = &ww->e;
	ev_io_start(ww->e.loop, &ww->e.accept_w);
	ww->c->o.loop = ww->e.loop;
	ww->c->node_id = "n1";
	ww->c->token = "token";
	wraps_reset();
}

/* The wait for v's copy on n2 at address, bound_ms at most: its note; *ms
 * how long it took. */
static void world_wait(struct wait_world *ww, const char *address, int bound_ms, double *ms)
{
	const char nodes[1][64] = {"n2"};
	int64_t t0 = tsr_mono_ms();

	put_records(ww->c->meta, address);
	ww->c->o.peer_timeout_ms = (unsigned)bound_ms;
	assert_int_equal(cluster_close_wait_start(ww->c, "v", 1, nodes, 1, close_done, &ww->e), 0);
	ev_run(ww->e.loop, 0);
	assert_true(ww->e.done);
	*ms = (double)(tsr_mono_ms() - t0);
	printf("wait: %.0f ms, %u resolver calls, %u looks reached the node, note \"%s\"\n", *ms,
	       g_resolves, ww->e.accepts, ww->e.note);
}

static void world_close(struct wait_world *ww)
{
	ev_io_stop(ww->e.loop, &ww->e.accept_w);
	ev_loop_destroy(ww->e.loop);
	close(ww->e.listen_fd);
	tsr_meta_close(ww->c->meta);
	free(ww->c);
	rm_rf(ww->dir); /* the database and its -wal, -shm and .reserve */
	wraps_reset();
}

/* A port of 127.0.0.1 where nothing listens (a connect is refused at once). */
static unsigned dead_port(void)
{
	struct sockaddr_in a = {.sin_family = AF_INET};
	socklen_t alen = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &alen), 0);
	close(fd);
	return ntohs(a.sin_port);
}

static void test_wait_resolves_once(void **state)
{
	struct wait_world ww;
	char address[64];
	double ms;

	(void)state;
	world_open(&ww);
	snprintf(address, sizeof(address), "localhost:%u", ww.port);
	world_wait(&ww, address, 300, &ms); /* the wait's bound: about 30 looks */
	assert_non_null(strstr(ww.e.note, "n2 (cannot ask it"));
	assert_true(ww.e.accepts >= 5); /* it looked again and again */
	assert_int_equal(g_resolves, 1); /* and resolved "localhost" once */
	world_close(&ww);
}

/* A name that does not resolve at the start (the resolver unreachable a
 * moment) is looked up again (review s21 revO): the copy is seen closed
 * (nothing listens at the port: refused) well before the bound. */
static void test_wait_resolve_fails_once(void **state)
{
	struct wait_world ww;
	char address[64];
	double ms;

	(void)state;
	world_open(&ww);
	snprintf(address, sizeof(address), "localhost:%u", dead_port());
	g_resolve_fails = 1;
	world_wait(&ww, address, 3000, &ms);
	assert_string_equal(ww.e.note, "");
	assert_true(ms < 2000);
	assert_int_equal(g_resolves, 2);
	world_close(&ww);
}

/* A name whose address changes during the wait (its node moved, or its
 * record pointed at a stale address): once a look cannot ask the node, the
 * name is looked up again, and its new address answers (here: refused,
 * nothing holds the copy there). */
static void test_wait_name_moves(void **state)
{
	struct wait_world ww;
	char address[64], moved[16];
	double ms;

	(void)state;
	world_open(&ww);
	snprintf(address, sizeof(address), "localhost:%u", ww.port);
	snprintf(moved, sizeof(moved), "%u", dead_port());
	g_moved_port = moved;
	world_wait(&ww, address, 3000, &ms);
	assert_string_equal(ww.e.note, "");
	assert_true(ww.e.accepts >= 1); /* the first address was asked */
	assert_true(ms < 2000);
	world_close(&ww);
}

/* A name that does not resolve, with a resolver that answers slowly: the
 * note says which address and why, and the loop is not blocked again
 * (one lookup in the wait). */
static void test_wait_resolve_fails_slow(void **state)
{
	struct wait_world ww;
	char address[64], want[128];
	double ms;

	(void)state;
	world_open(&ww);
	snprintf(address, sizeof(address), "localhost:%u", ww.port);
	g_resolve_fails = 100;
	g_resolve_ms = 150;
	world_wait(&ww, address, 1200, &ms);
	snprintf(want, sizeof(want), "n2 (cannot ask it: its address %s does not resolve: %s)",
		 address, gai_strerror(EAI_AGAIN));
	assert_non_null(strstr(ww.e.note, want));
	assert_int_equal(ww.e.accepts, 0);
	assert_int_equal(g_resolves, 1);
	world_close(&ww);
}

/* A name with two addresses, the first refusing late (in progress, then
 * refused: a real network), the second a node that holds the copy (here:
 * a listener that resets, so the copy stays open): a refusal from one
 * address does not say the copy is closed while another is left to ask
 * (review s21 revO).  Then both refusing: closed. */
static void test_wait_second_address(void **state)
{
	struct wait_world ww;
	char address[64], second[16];
	double ms;

	(void)state;
	world_open(&ww);
	g_late_refuse_port = dead_port();
	snprintf(address, sizeof(address), "localhost:%u", g_late_refuse_port);
	snprintf(second, sizeof(second), "%u", ww.port);
	g_second_port = second;
	world_wait(&ww, address, 300, &ms);
	assert_non_null(strstr(ww.e.note, "n2 (cannot ask it"));
	assert_true(ww.e.accepts >= 1); /* the second address was asked */
	world_close(&ww);

	world_open(&ww);
	g_late_refuse_port = dead_port();
	snprintf(address, sizeof(address), "localhost:%u", g_late_refuse_port);
	snprintf(second, sizeof(second), "%u", dead_port());
	g_second_port = second;
	world_wait(&ww, address, 3000, &ms);
	assert_string_equal(ww.e.note, "");
	assert_true(ms < 1000);
	world_close(&ww);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_grouped),
	    cmocka_unit_test(test_large_layout),
	    cmocka_unit_test(test_cut_short),
	    cmocka_unit_test(test_wait_resolves_once),
	    cmocka_unit_test(test_wait_resolve_fails_once),
	    cmocka_unit_test(test_wait_name_moves),
	    cmocka_unit_test(test_wait_resolve_fails_slow),
	    cmocka_unit_test(test_wait_second_address),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
