/*
 * Unit test of a consistency group's marker tries at the source
 * (engine/site/site_source.c group_mark, 28e0c2c): when the group's counter
 * cannot hand out a number (its reserve cannot be written), the members'
 * byte counts restart, so the next try comes after the next 2 MiB
 * (SRC_WINDOW / 4) logged or at the next interval, not at every write.
 *
 * The counter is site_mark_next (site_marker.c); this binary is linked with
 * -Wl,--wrap=site_mark_next (tests/CMakeLists.txt), so the test counts the
 * source's calls and makes them fail (-EIO, as a reserve that cannot be
 * written) without filling a 65536-number batch first.  One member: a
 * store volume on a real worker, host writes through tsr_vol_write; the
 * target's address refuses connections (the hook logs every write whether
 * or not a session is up).  Before 28e0c2c: every write after the first
 * 2 MiB tried again (96 tries for 128 writes of 64 KiB).
 */
#include <errno.h>
#include <netinet/in.h>
#include <semaphore.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "site/server_internal.h"
#include "tessera/site.h"
#include "tessera/vol.h"
#include "tessera/worker.h"
#include "../store/store_test.h"
#include "site_certs.h"

#define MIB    (1ull << 20)
#define VSIZE  (64 * MIB)
#define WLEN   (64u * 1024)
#define NWRITE 128u /* 8 MiB: every 2 MiB + 64 KiB a try, 3 in all */

/* ---- the counter, wrapped ---- */

int __real_site_mark_next(struct site_mark *m, uint64_t *n);
int __wrap_site_mark_next(struct site_mark *m, uint64_t *n);

static atomic_uint g_tries; /* the source's calls */
static atomic_bool g_fail;  /* answer -EIO (a reserve that cannot be written) */

int __wrap_site_mark_next(struct site_mark *m, uint64_t *n)
{
	atomic_fetch_add(&g_tries, 1);
	if (atomic_load(&g_fail))
		return -EIO;
	return __real_site_mark_next(m, n);
}

/* ---- one member ---- */

static char g_certs[SITE_CERTS_DIR_MAX];

struct env {
	char dir[512];
	struct tsr_store *store;
	struct tsr_volset *set;
	struct tsr_vol *vol;
	struct tsr_worker *w;
	struct tsr_site_tls_ctx *client;
	struct tsr_site_source *s;
	uint8_t *buf;
};

static int setup(void **state)
{
	struct env *e = calloc(1, sizeof(*e));
	struct tsr_io_opts wo = {.kind = TSR_IO_AUTO, .queue_depth = 256};
	int ret;

	if (site_certs_init(g_certs) ||
	    site_certs_leaf(g_certs, "primary", "primary.site.test", SITE_CERT_GOOD))
		return -1;
	if (e == NULL || scratch_dir(e->dir, sizeof(e->dir)) < 0 ||
	    tsr_store_open(e->dir, NULL, &e->store) < 0 ||
	    tsr_store_vol_create(e->store, "v", VSIZE, NULL) < 0)
		return -1;
	ret = tsr_worker_start(0, &wo, &e->w);
	if (ret == -ENOSYS || ret == -EPERM) {
		fprintf(stderr, "no I/O backend available: %s\n", strerror(-ret));
		exit(77);
	}
	if (ret < 0 || tsr_volset_create(e->store, &e->set) < 0)
		return -1;
	tsr_volset_set_workers(e->set, &e->w, 1);
	if (tsr_vol_get(e->set, "v", &e->vol) < 0)
		return -1;
	e->client = site_certs_ctx(g_certs, "primary", false);
	e->buf = tsr_alloc_aligned(WLEN);
	if (e->client == NULL || e->buf == NULL)
		return -1;
	*state = e;
	return 0;
}

static int teardown(void **state)
{
	struct env *e = *state;

	tsr_site_source_stop(e->s);
	tsr_site_tls_ctx_destroy(e->client);
	tsr_vol_put(e->vol);
	tsr_volset_destroy(e->set);
	tsr_worker_stop(e->w);
	tsr_store_close(e->store);
	rm_rf(e->dir);
	tsr_free_aligned(e->buf);
	free(e);
	return site_certs_cleanup(g_certs);
}

/* An address nothing listens on (a port bound once, then closed). */
static void refused_address(char *address, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t slen = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
	snprintf(address, len, "127.0.0.1:%d", ntohs(sa.sin_port));
	close(fd);
}

/* ---- host writes on the worker, one after another ---- */

struct wcall {
	struct env *e;
	uint64_t off;
	int status;
	sem_t done;
};

static void wdone(void *arg, int status)
{
	struct wcall *c = arg;

	c->status = status;
	sem_post(&c->done);
}

static void wissue(struct tsr_worker *w, void *arg)
{
	struct wcall *c = arg;
	int ret = tsr_vol_write(c->e->vol, tsr_worker_io(w), c->off, WLEN, c->e->buf, 0, wdone, c);

	if (ret < 0)
		wdone(c, ret);
}

/* Write e->buf at off through the volume on its worker; the status. */
static int vwrite(struct env *e, uint64_t off)
{
	struct wcall c = {.e = e, .off = off};

	sem_init(&c.done, 0, 0);
	if (tsr_worker_send(e->w, wissue, &c) != 0)
		return -EIO;
	while (sem_wait(&c.done) != 0)
		;
	sem_destroy(&c.done);
	return c.status;
}

/*
 * A group whose counter fails: NWRITE writes of 64 KiB (8 MiB) make one try
 * per 2 MiB + 64 KiB logged (3), not one per write past the first 2 MiB;
 * once the counter works again, the next try after 2 MiB gives a marker.
 */
static void test_reserve_fails_tries(void **state)
{
	struct env *e = *state;
	char addr[64], mfile[600];
	struct tsr_site_source_opts o;
	unsigned before, tries;

	refused_address(addr, sizeof(addr));
	snprintf(mfile, sizeof(mfile), "%s/markers", e->dir);
	o = (struct tsr_site_source_opts){.vol = e->vol,
					  .worker = e->w,
					  .tls = e->client,
					  .address = addr,
					  .peer_name = "dr.site.test",
					  .site = "primary",
					  .cluster = "c-primary",
					  .target_volume = "dr-vol",
					  .target_layout = "replicas:2",
					  .stream = 77,
					  .epoch = 3,
					  .group = "g1",
					  .group_members = 1,
					  .group_interval_ms = 600000, /* no try by the clock */
					  .marker_file = mfile,
					  .retry_ms = 1000};
	atomic_store(&g_fail, true);
	assert_int_equal(tsr_site_source_start(&o, &e->s), 0);
	/* the first tick's try (the interval starts there) */
	for (unsigned i = 0; i < 200 && atomic_load(&g_tries) == 0; i++)
		usleep(10 * 1000);
	usleep(50 * 1000);
	before = atomic_load(&g_tries);
	assert_true(before <= 1);

	memset(e->buf, 0x5a, WLEN);
	for (unsigned i = 0; i < NWRITE; i++)
		assert_int_equal(vwrite(e, (uint64_t)i * WLEN), 0);
	tries = atomic_load(&g_tries) - before;
	print_message("%u writes of 64 KiB: %u tries of the counter\n", NWRITE, tries);
	assert_int_equal(tries, NWRITE / (2 * MIB / WLEN + 1));

	/* the counter works again: a marker at the next try, 2 MiB on */
	atomic_store(&g_fail, false);
	for (unsigned i = 0; i < 2 * MIB / WLEN + 1; i++)
		assert_int_equal(vwrite(e, (uint64_t)i * WLEN), 0);
	assert_int_equal(atomic_load(&g_tries) - before, tries + 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_reserve_fails_tries, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
