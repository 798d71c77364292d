/*
 * libFuzzer harness: the bytes a client sends on one tessera-csi connection
 * (HTTP/2 preface, frames, gRPC messages), through the server's own nghttp2
 * session and callbacks (csi/grpc_server.c, csi_server_feed): stream
 * bookkeeping, header checks, body buffering and limits, dispatch, replies
 * (calls that need tesserad are answered UNAVAILABLE, the capability calls
 * really run), connection teardown with streams still open.
 * Checks: no crash, no leak (ASan/LSan), setup never fails.
 */
#include <stdint.h>
#include <stdlib.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct csi_plugin g_plugin = {
    .mode = CSI_MODE_ALL,
    .node_id = "n1",
    .tesserad_unix = "/nonexistent/admin.sock",
    .state_dir = "/nonexistent",
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (csi_server_feed(&g_plugin, data, size))
		abort();
	return 0;
}
