/*
 * The method table (HTTP/2 :path -> request type and handler, per service)
 * and the run of one request on a worker thread: frame check, decode,
 * handler, encode.  The gRPC status of every outcome is decided here or by
 * the handler through csi_fail().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define M(svc, svcbit, name, reqtype, fn)                                                          \
	{                                                                                          \
		"/csi.v1." svc "/" #name, #name, &csi__v1__##reqtype##__descriptor, fn, svcbit     \
	}

static const struct csi_method g_methods[] = {
    M("Identity", CSI_SVC_IDENTITY, GetPluginInfo, get_plugin_info_request, csi_get_plugin_info),
    M("Identity", CSI_SVC_IDENTITY, GetPluginCapabilities, get_plugin_capabilities_request,
      csi_get_plugin_capabilities),
    M("Identity", CSI_SVC_IDENTITY, Probe, probe_request, csi_probe),
    M("Controller", CSI_SVC_CONTROLLER, CreateVolume, create_volume_request, csi_create_volume),
    M("Controller", CSI_SVC_CONTROLLER, DeleteVolume, delete_volume_request, csi_delete_volume),
    M("Controller", CSI_SVC_CONTROLLER, ValidateVolumeCapabilities,
      validate_volume_capabilities_request, csi_validate_volume_capabilities),
    M("Controller", CSI_SVC_CONTROLLER, ListVolumes, list_volumes_request, csi_list_volumes),
    M("Controller", CSI_SVC_CONTROLLER, GetCapacity, get_capacity_request, csi_get_capacity),
    M("Controller", CSI_SVC_CONTROLLER, ControllerGetCapabilities,
      controller_get_capabilities_request, csi_controller_get_capabilities),
    M("Controller", CSI_SVC_CONTROLLER, CreateSnapshot, create_snapshot_request,
      csi_create_snapshot),
    M("Controller", CSI_SVC_CONTROLLER, DeleteSnapshot, delete_snapshot_request,
      csi_delete_snapshot),
    M("Controller", CSI_SVC_CONTROLLER, ListSnapshots, list_snapshots_request, csi_list_snapshots),
    M("Controller", CSI_SVC_CONTROLLER, ControllerExpandVolume, controller_expand_volume_request,
      csi_controller_expand_volume),
    M("Controller", CSI_SVC_CONTROLLER, ControllerGetVolume, controller_get_volume_request,
      csi_controller_get_volume),
    M("Node", CSI_SVC_NODE, NodeStageVolume, node_stage_volume_request, csi_node_stage_volume),
    M("Node", CSI_SVC_NODE, NodeUnstageVolume, node_unstage_volume_request,
      csi_node_unstage_volume),
    M("Node", CSI_SVC_NODE, NodePublishVolume, node_publish_volume_request,
      csi_node_publish_volume),
    M("Node", CSI_SVC_NODE, NodeUnpublishVolume, node_unpublish_volume_request,
      csi_node_unpublish_volume),
    M("Node", CSI_SVC_NODE, NodeGetVolumeStats, node_get_volume_stats_request,
      csi_node_get_volume_stats),
    M("Node", CSI_SVC_NODE, NodeExpandVolume, node_expand_volume_request, csi_node_expand_volume),
    M("Node", CSI_SVC_NODE, NodeGetCapabilities, node_get_capabilities_request,
      csi_node_get_capabilities),
    M("Node", CSI_SVC_NODE, NodeGetInfo, node_get_info_request, csi_node_get_info),
};

static unsigned mode_services(enum csi_mode mode)
{
	switch (mode) {
	case CSI_MODE_CONTROLLER:
		return CSI_SVC_IDENTITY | CSI_SVC_CONTROLLER;
	case CSI_MODE_NODE:
		return CSI_SVC_IDENTITY | CSI_SVC_NODE;
	default:
		return CSI_SVC_IDENTITY | CSI_SVC_CONTROLLER | CSI_SVC_NODE;
	}
}

const struct csi_method *csi_method_find(const struct csi_plugin *p, const char *path,
					 bool *excluded)
{
	size_t i;

	*excluded = false;
	for (i = 0; i < sizeof(g_methods) / sizeof(g_methods[0]); i++) {
		if (strcmp(g_methods[i].path, path))
			continue;
		if (g_methods[i].service & mode_services(p->mode))
			return &g_methods[i];
		*excluded = true;
		return NULL;
	}
	return NULL;
}

void csi_method_run(struct csi_call *call, const struct csi_method *m, const uint8_t *body,
		    size_t len, uint8_t **out, size_t *out_len)
{
	struct grpc_frame f;
	ProtobufCMessage *req = NULL, *resp = NULL;
	size_t n;
	uint8_t *buf;
	int ret;

	*out = NULL;
	*out_len = 0;
	call->method = m->name;
	ret = grpc_frame_parse(body, len, CSI_MAX_MSG, &f);
	if (ret == -EMSGSIZE) {
		csi_fail(call, GRPC_RESOURCE_EXHAUSTED, "request message larger than %u bytes",
			 CSI_MAX_MSG);
		return;
	}
	if (ret == -ENOTSUP) {
		csi_fail(call, GRPC_UNIMPLEMENTED,
			 "compressed messages are not supported: send "
			 "them uncompressed (no grpc-encoding)");
		return;
	}
	if (ret) {
		csi_fail(call, GRPC_INVALID_ARGUMENT,
			 "malformed gRPC message framing (%zu bytes: "
			 "truncated, or more than one message in a unary call)",
			 len);
		return;
	}
	if (grpc_msg_decode(m->req_desc, f.msg, f.len, &req)) {
		csi_fail(call, GRPC_INVALID_ARGUMENT, "request is not a valid %s message",
			 m->req_desc->name);
		return;
	}
	call->code = GRPC_OK;
	ret = m->handler(call, req, &resp);
	if (ret != GRPC_OK || resp == NULL) {
		protobuf_c_message_free_unpacked(req, NULL);
		if (ret == GRPC_OK)
			csi_fail(call, GRPC_INTERNAL, "%s produced no reply", m->name);
		call->code = ret == GRPC_OK ? GRPC_INTERNAL : ret;
		csi_call_free_arena(call);
		return;
	}
	/* the reply may point into the request (echoed fields): free it after packing */
	n = protobuf_c_message_get_packed_size(resp);
	if (n > CSI_MAX_MSG) {
		protobuf_c_message_free_unpacked(req, NULL);
		csi_fail(call, GRPC_RESOURCE_EXHAUSTED,
			 "reply larger than %u bytes: ask for fewer "
			 "entries (max_entries)",
			 CSI_MAX_MSG);
		csi_call_free_arena(call);
		return;
	}
	buf = malloc(GRPC_FRAME_HDR + n);
	if (buf == NULL) {
		protobuf_c_message_free_unpacked(req, NULL);
		csi_fail(call, GRPC_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte reply", n);
		csi_call_free_arena(call);
		return;
	}
	grpc_frame_header(buf, (uint32_t)n);
	protobuf_c_message_pack(resp, buf + GRPC_FRAME_HDR);
	protobuf_c_message_free_unpacked(req, NULL);
	csi_call_free_arena(call);
	*out = buf;
	*out_len = GRPC_FRAME_HDR + n;
}
