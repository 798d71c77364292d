/*
 * Unit tests of the admin parser's checks of the geo-replication requests
 * (engine/admin/admin_msg.c): SiteAdd/Remove/List, ReplicationEnable/
 * Disable/StatusGet/Promote/Resync; the response checks of Site and
 * Replication; freeing a built reply that carries them; and the standalone
 * node's answer (admin_ops.c: -EOPNOTSUPP naming cluster mode).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "admin/admin_internal.h"

/* Pack req as a frame and parse its body: 0, or -EINVAL with *why. */
static int parse(Tessera__Admin__Request *req, Tessera__Admin__Request **out, const char **why)
{
	uint8_t *frame;
	size_t frame_len;
	int ret;

	*out = NULL;
	*why = NULL;
	assert_int_equal(admin_frame_pack(&req->base, &frame, &frame_len), 0);
	ret = tsr_admin_request_parse(frame + 4, frame_len - 4, out, why);
	free(frame);
	return ret;
}

/* Parse req: want NULL = accepted, else refused with why containing want. */
static void expect(Tessera__Admin__Request *req, const char *want)
{
	Tessera__Admin__Request *out;
	const char *why;
	int ret = parse(req, &out, &why);

	if (want == NULL) {
		if (ret)
			fail_msg("refused: %s", why ? why : "(no reason)");
		assert_non_null(out);
		assert_int_equal(out->command_case, req->command_case);
		tessera__admin__request__free_unpacked(out, NULL);
		return;
	}
	assert_int_equal(ret, -EINVAL);
	assert_null(out);
	assert_non_null(why);
	if (strstr(why, want) == NULL)
		fail_msg("why '%s' does not contain '%s'", why, want);
}

static void site_add(const char *name, const char *address, const char *ca, const char *cert,
		     const char *key, const char *peer, const char *want)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SiteAdd a = TESSERA__ADMIN__SITE_ADD__INIT;

	a.name = (char *)name;
	a.address = (char *)address;
	a.ca = (char *)ca;
	a.cert = (char *)cert;
	a.key = (char *)key;
	a.peer_name = (char *)peer;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD;
	req.site_add = &a;
	expect(&req, want);
}

static void test_site_add(void **state)
{
	(void)state;
	site_add("dr", "dr.example.com:7500", "/c/ca.pem", "/c/n.pem", "/c/n.key", "", NULL);
	site_add("dr-2", "127.0.0.2:1", "ca", "c", "k", "dr.example.com", NULL);
	site_add("dr", "[::1]:7500", "ca", "c", "k", "", NULL);
	site_add("", "h:1", "ca", "c", "k", "", "invalid site name");
	site_add("-dr", "h:1", "ca", "c", "k", "", "invalid site name");
	site_add("d r", "h:1", "ca", "c", "k", "", "invalid site name");
	site_add("dr", "", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "host", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", ":7500", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h:0", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h:65536", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h:75x", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h:-1", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h x:1", "ca", "c", "k", "", "HOST:PORT");
	site_add("dr", "h:1", "", "c", "k", "", "needs ca, cert and key");
	site_add("dr", "h:1", "ca", "", "k", "", "needs ca, cert and key");
	site_add("dr", "h:1", "ca", "c", "", "", "needs ca, cert and key");
	site_add("dr", "h:1", "ca\n", "c", "k", "", "needs ca, cert and key");
	site_add("dr", "h:1", "ca", "c", "k", "a b", "peer_name");
	site_add("dr", "h:1", "ca", "c", "k", "a\tb", "peer_name");
}

static void test_site_remove_list(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__SiteRemove rm = TESSERA__ADMIN__SITE_REMOVE__INIT;
	Tessera__Admin__SiteList list = TESSERA__ADMIN__SITE_LIST__INIT;

	(void)state;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE;
	req.site_remove = &rm;
	rm.name = "dr";
	expect(&req, NULL);
	rm.name = "";
	expect(&req, "invalid site name");
	rm.name = "a/b";
	expect(&req, "invalid site name");
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST;
	req.site_list = &list;
	expect(&req, NULL);
}

static void enable(const char *vol, const char *site, const char *layout, const char *tvol,
		   const char *group, uint64_t log_max, const char *want)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationEnable e = TESSERA__ADMIN__REPLICATION_ENABLE__INIT;

	e.volume = (char *)vol;
	e.site = (char *)site;
	e.target_layout = (char *)layout;
	e.target_volume = (char *)tvol;
	e.group = (char *)group;
	e.log_max_bytes = log_max;
	e.max_bps = 1000;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE;
	req.replication_enable = &e;
	expect(&req, want);
}

static void test_replication_enable(void **state)
{
	(void)state;
	enable("db", "dr", "", "", "", 0, NULL);
	enable("db", "dr", "replicas:2", "db-dr", "app", 1u << 20, NULL);
	enable("db", "dr", "ec:4+2", "", "", 0, NULL);
	enable("db", "dr", "replicas:8", "", "", 0, NULL);
	enable("db", "dr", "ec:16+4", "", "", 0, NULL);
	enable("", "dr", "", "", "", 0, "invalid volume name");
	enable("db", "", "", "", "", 0, "invalid site name");
	enable("db", "dr", "replicas:9", "", "", 0, "target layout");
	enable("db", "dr", "replicas:0", "", "", 0, "target layout");
	enable("db", "dr", "replicas:02", "", "", 0, "target layout");
	enable("db", "dr", "ec:4", "", "", 0, "target layout");
	enable("db", "dr", "ec:17+1", "", "", 0, "target layout");
	enable("db", "dr", "ec:4+5", "", "", 0, "target layout");
	enable("db", "dr", "mirror", "", "", 0, "target layout");
	enable("db", "dr", "replicas:2 ", "", "", 0, "target layout");
	enable("db", "dr", "", "a b", "", 0, "target volume");
	enable("db", "dr", "", "", "g/1", 0, "consistency group");
	enable("db", "dr", "", "", "", 4096, "log_max_bytes");
	enable("db", "dr", "", "", "", (1u << 20) - 1, "log_max_bytes");
}

static void test_replication_others(void **state)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__ReplicationDisable dis = TESSERA__ADMIN__REPLICATION_DISABLE__INIT;
	Tessera__Admin__ReplicationStatusGet st = TESSERA__ADMIN__REPLICATION_STATUS_GET__INIT;
	Tessera__Admin__ReplicationPromote pr = TESSERA__ADMIN__REPLICATION_PROMOTE__INIT;
	Tessera__Admin__ReplicationResync rs = TESSERA__ADMIN__REPLICATION_RESYNC__INIT;

	(void)state;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE;
	req.replication_disable = &dis;
	dis.volume = "db";
	expect(&req, NULL);
	dis.volume = "";
	expect(&req, "invalid volume name");

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS;
	req.replication_status = &st;
	expect(&req, NULL); /* everything */
	st.volume = "db";
	expect(&req, NULL);
	st.group = "app";
	expect(&req, "not both");
	st.volume = "";
	expect(&req, NULL);
	st.group = "a b";
	expect(&req, "consistency group");
	st.group = "";
	st.volume = "db@snap";
	expect(&req, "invalid volume name");

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE;
	req.replication_promote = &pr;
	expect(&req, "give a volume or a consistency group");
	pr.volume = "db";
	pr.force = true;
	expect(&req, NULL);
	pr.group = "app";
	expect(&req, "not both");
	pr.volume = "";
	expect(&req, NULL);
	pr.group = "-app";
	expect(&req, "consistency group");

	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC;
	req.replication_resync = &rs;
	rs.volume = "db";
	rs.from_site = "dr";
	expect(&req, NULL);
	rs.from_site = "";
	expect(&req, "invalid site name");
	rs.from_site = "dr";
	rs.volume = "";
	expect(&req, "invalid volume name");
}

/* A reply as the server builds it: every string and element malloc'd. */
static Tessera__Admin__Response *built_reply(void)
{
	Tessera__Admin__Response *resp = calloc(1, sizeof(*resp));
	Tessera__Admin__Site *s = calloc(1, sizeof(*s));
	Tessera__Admin__Replication *r = calloc(1, sizeof(*r));

	assert_non_null(resp);
	assert_non_null(s);
	assert_non_null(r);
	tessera__admin__response__init(resp);
	tessera__admin__site__init(s);
	tessera__admin__replication__init(r);
	s->name = admin_strdup("dr");
	s->address = admin_strdup("127.0.0.1:7500");
	s->ca = admin_strdup("/c/ca.pem");
	s->cert = admin_strdup("/c/n.pem");
	s->key = admin_strdup("/c/n.key");
	s->peer_name = admin_strdup("dr");
	s->volumes = 2;
	r->volume = admin_strdup("db");
	r->role = admin_strdup("source");
	r->site = admin_strdup("dr");
	r->state = admin_strdup("streaming");
	r->target_volume = admin_strdup("db");
	r->target_layout = admin_strdup("replicas:1");
	r->group = admin_strdup("app");
	r->last_error = admin_strdup("");
	r->node = admin_strdup("n1");
	r->acked_seq = 41;
	r->next_seq = 42;
	r->lag_sec = 0.25;
	resp->sites = malloc(sizeof(*resp->sites));
	resp->replications = malloc(sizeof(*resp->replications));
	assert_non_null(resp->sites);
	assert_non_null(resp->replications);
	resp->sites[0] = s;
	resp->n_sites = 1;
	resp->replications[0] = r;
	resp->n_replications = 1;
	return resp;
}

static int parse_resp(Tessera__Admin__Response *resp, Tessera__Admin__Response **out,
		      const char **why)
{
	uint8_t *frame;
	size_t frame_len;
	int ret;

	assert_int_equal(admin_frame_pack(&resp->base, &frame, &frame_len), 0);
	ret = tsr_admin_response_parse(frame + 4, frame_len - 4, out, why);
	free(frame);
	return ret;
}

static void test_responses(void **state)
{
	Tessera__Admin__Response *resp = built_reply(), *out = NULL;
	const char *why = NULL;
	char *saved;

	(void)state;
	assert_int_equal(parse_resp(resp, &out, &why), 0);
	assert_int_equal(out->n_sites, 1);
	assert_string_equal(out->sites[0]->name, "dr");
	assert_int_equal(out->sites[0]->volumes, 2);
	assert_int_equal(out->n_replications, 1);
	assert_string_equal(out->replications[0]->state, "streaming");
	assert_true(out->replications[0]->acked_seq == 41);
	tessera__admin__response__free_unpacked(out, NULL);

	/* a site without a valid name, a replication without a role: refused */
	saved = resp->sites[0]->name;
	resp->sites[0]->name = "d r";
	assert_int_equal(parse_resp(resp, &out, &why), -EINVAL);
	assert_string_equal(why, "malformed site");
	resp->sites[0]->name = saved;
	saved = resp->replications[0]->role;
	resp->replications[0]->role = "";
	assert_int_equal(parse_resp(resp, &out, &why), -EINVAL);
	assert_string_equal(why, "malformed replication");
	resp->replications[0]->role = saved;
	saved = resp->replications[0]->last_error;
	resp->replications[0]->last_error = "bad\x01text";
	assert_int_equal(parse_resp(resp, &out, &why), -EINVAL);
	resp->replications[0]->last_error = saved;
	assert_int_equal(parse_resp(resp, &out, &why), 0);
	tessera__admin__response__free_unpacked(out, NULL);

	/* the server's free takes every piece (ASan/valgrind see a leak otherwise) */
	admin_response_free_built(resp);
	assert_null(resp->sites);
	assert_int_equal(resp->n_replications, 0);
	free(resp);
}

/* A standalone node: each new command is refused, naming cluster mode. */
static void test_standalone(void **state)
{
	static const Tessera__Admin__Request__CommandCase cmds[] = {
		TESSERA__ADMIN__REQUEST__COMMAND_SITE_ADD,
		TESSERA__ADMIN__REQUEST__COMMAND_SITE_REMOVE,
		TESSERA__ADMIN__REQUEST__COMMAND_SITE_LIST,
		TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_ENABLE,
		TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_DISABLE,
		TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_STATUS,
		TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_PROMOTE,
		TESSERA__ADMIN__REQUEST__COMMAND_REPLICATION_RESYNC,
	};
	struct tsr_admin_server srv;

	(void)state;
	memset(&srv, 0, sizeof(srv)); /* no cluster hooks: standalone */
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__Response resp = TESSERA__ADMIN__RESPONSE__INIT;

		req.command_case = cmds[i];
		admin_handle(&srv, &req, &resp);
		assert_int_equal(resp.error, -EOPNOTSUPP);
		assert_non_null(strstr(resp.message, "replication needs cluster mode"));
		assert_non_null(strstr(resp.message, "--listen"));
		admin_response_free_built(&resp);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_site_add),
		cmocka_unit_test(test_site_remove_list),
		cmocka_unit_test(test_replication_enable),
		cmocka_unit_test(test_replication_others),
		cmocka_unit_test(test_responses),
		cmocka_unit_test(test_standalone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
