/*
 * libFuzzer harness: a tessera-csi request body as it arrives in HTTP/2
 * DATA frames, through the two parsers every request meets before a handler
 * (csi/grpc_frame.c): grpc_frame_parse (the 5-byte length prefix) and
 * grpc_msg_decode (protobuf-c) for the request type of one CSI method.
 * The first input byte picks the method; the rest is the body.
 * Checks: no crash, no leak; an accepted frame is exactly the input after
 * its header; a decoded message packs to its announced size.  (No round
 * trip check: protobuf-c keeps unknown fields with odd tags that it then
 * refuses when it reads its own output back; that is the library's, and
 * harmless here since we never decode what we encode.)
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const ProtobufCMessageDescriptor *const g_requests[] = {
    &csi__v1__get_plugin_info_request__descriptor,
    &csi__v1__probe_request__descriptor,
    &csi__v1__create_volume_request__descriptor,
    &csi__v1__delete_volume_request__descriptor,
    &csi__v1__validate_volume_capabilities_request__descriptor,
    &csi__v1__list_volumes_request__descriptor,
    &csi__v1__get_capacity_request__descriptor,
    &csi__v1__create_snapshot_request__descriptor,
    &csi__v1__delete_snapshot_request__descriptor,
    &csi__v1__list_snapshots_request__descriptor,
    &csi__v1__controller_expand_volume_request__descriptor,
    &csi__v1__controller_get_volume_request__descriptor,
    &csi__v1__node_stage_volume_request__descriptor,
    &csi__v1__node_unstage_volume_request__descriptor,
    &csi__v1__node_publish_volume_request__descriptor,
    &csi__v1__node_unpublish_volume_request__descriptor,
    &csi__v1__node_get_volume_stats_request__descriptor,
    &csi__v1__node_expand_volume_request__descriptor,
    &csi__v1__node_get_info_request__descriptor,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const ProtobufCMessageDescriptor *desc;
	struct grpc_frame f;
	ProtobufCMessage *m = NULL;
	uint8_t *buf;
	size_t n;
	int ret;

	if (size < 1)
		return 0;
	desc = g_requests[data[0] % (sizeof(g_requests) / sizeof(g_requests[0]))];
	data++;
	size--;
	ret = grpc_frame_parse(data, size, CSI_MAX_MSG, &f);
	if (ret) {
		if (ret != -EINVAL && ret != -EMSGSIZE && ret != -ENOTSUP)
			abort();
		return 0;
	}
	if (f.msg != data + GRPC_FRAME_HDR || f.len != size - GRPC_FRAME_HDR || f.compressed)
		abort();
	ret = grpc_msg_decode(desc, f.msg, f.len, &m);
	if (ret) {
		if (ret != -EINVAL)
			abort();
		return 0;
	}
	n = protobuf_c_message_get_packed_size(m);
	buf = malloc(n + 1);
	if (buf == NULL)
		abort();
	if (protobuf_c_message_pack(m, buf) != n)
		abort();
	protobuf_c_message_free_unpacked(m, NULL);
	free(buf);
	return 0;
}
