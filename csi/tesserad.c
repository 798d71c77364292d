/*
 * tesserad access for the handlers: one admin API connection per worker
 * thread (tsr_admin_call blocks, which is allowed there and never on the
 * loop), opened on first use and re-opened once when a call finds it lost.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "tessera/admin.h"
#include "tessera/common.h"

static __thread struct tsr_admin_client *t_client;

static int connect_tesserad(struct csi_plugin *p, struct tsr_admin_client **out)
{
	if (p->tesserad_tcp)
		return tsr_admin_connect_tcp(p->tesserad_tcp, p->token, out);
	return tsr_admin_connect_unix(p->tesserad_unix, out);
}

void csi_admin_thread_close(void)
{
	tsr_admin_close(t_client);
	t_client = NULL;
}

int csi_admin(struct csi_call *call, Tessera__Admin__Request *req, Tessera__Admin__Response **resp)
{
	struct csi_plugin *p = call->plugin;
	const char *where = p->tesserad_tcp ? p->tesserad_tcp : p->tesserad_unix;
	int64_t t0;
	int attempt, ret = 0;

	for (attempt = 0; attempt < 2; attempt++) {
		if (t_client == NULL) {
			ret = connect_tesserad(p, &t_client);
			if (ret) {
				t_client = NULL;
				return csi_fail(call, GRPC_UNAVAILABLE,
						"tesserad at %s is not reachable "
						"(%s): is it running, and is --tesserad right?",
						where, strerror(-ret));
			}
		}
		t0 = tsr_mono_ns();
		ret = tsr_admin_call(t_client, req, p->admin_timeout_ms, resp);
		tsr_debug("csi: %s: admin request %d: %d (%.1f ms)", call->method,
			  (int)req->command_case, ret ? ret : (*resp)->error,
			  (double)(tsr_mono_ns() - t0) / 1e6);
		if (ret == 0)
			return GRPC_OK;
		csi_admin_thread_close();
		if (ret != -EPIPE && ret != -ECONNRESET)
			break;
	}
	if (ret == -ETIMEDOUT)
		return csi_fail(call, GRPC_DEADLINE_EXCEEDED,
				"tesserad at %s did not answer within "
				"%d ms",
				where, p->admin_timeout_ms);
	return csi_fail(call, GRPC_UNAVAILABLE, "tesserad at %s: %s", where, strerror(-ret));
}

int csi_admin_code(int error)
{
	switch (error) {
	case 0:
		return GRPC_OK;
	case -ENOENT:
		return GRPC_NOT_FOUND;
	case -EEXIST:
		return GRPC_ALREADY_EXISTS;
	case -EINVAL:
	case -ENAMETOOLONG:
		return GRPC_INVALID_ARGUMENT;
	case -ENOSPC:
	case -EDQUOT:
	case -ENOMEM:
		return GRPC_RESOURCE_EXHAUSTED;
	case -EBUSY:
	case -ENOTEMPTY:
	case -EPERM:
	case -ENOTSUP:
		return GRPC_FAILED_PRECONDITION;
	case -ERANGE:
	case -EFBIG:
		return GRPC_OUT_OF_RANGE;
	case -EHOSTUNREACH:
	case -ENOTCONN:
	case -ECONNREFUSED:
	case -EAGAIN:
	case -ESHUTDOWN:
		return GRPC_UNAVAILABLE;
	case -ETIMEDOUT:
		return GRPC_DEADLINE_EXCEEDED;
	default:
		return GRPC_INTERNAL;
	}
}

int csi_admin_ok(struct csi_call *call, Tessera__Admin__Request *req, const char *what,
		 Tessera__Admin__Response **resp)
{
	int code = csi_admin(call, req, resp);

	if (code != GRPC_OK)
		return code;
	if ((*resp)->error) {
		code =
		    csi_fail(call, csi_admin_code((*resp)->error), "%s: %s", what,
			     (*resp)->message && (*resp)->message[0] ? (*resp)->message
								     : strerror(-(*resp)->error));
		tessera__admin__response__free_unpacked(*resp, NULL);
		*resp = NULL;
	}
	return code;
}
