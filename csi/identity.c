/*
 * CSI Identity service: who the plugin is, what it offers, and whether it
 * is ready (Probe asks tesserad for its status).
 */
#include <string.h>

#include "internal.h"
#include "tessera/common.h"

int csi_get_plugin_info(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
	Csi__V1__GetPluginInfoResponse *r = csi_alloc(c, sizeof(*r));

	csi__v1__get_plugin_info_response__init(r);
	r->name = (char *)CSI_DRIVER_NAME;
	r->vendor_version = (char *)TSR_VERSION;
	*resp = &r->base;
	return GRPC_OK;
}

int csi_get_plugin_capabilities(struct csi_call *c, const ProtobufCMessage *req,
				ProtobufCMessage **resp)
{
	Csi__V1__GetPluginCapabilitiesResponse *r = csi_alloc(c, sizeof(*r));
	Csi__V1__PluginCapability *caps = csi_alloc(c, 3 * sizeof(*caps));
	Csi__V1__PluginCapability__Service *svc = csi_alloc(c, 2 * sizeof(*svc));
	Csi__V1__PluginCapability__VolumeExpansion *exp = csi_alloc(c, sizeof(*exp));
	int i;

	csi__v1__get_plugin_capabilities_response__init(r);
	r->capabilities = csi_alloc(c, 3 * sizeof(*r->capabilities));
	for (i = 0; i < 3; i++) {
		csi__v1__plugin_capability__init(&caps[i]);
		r->capabilities[i] = &caps[i];
	}
	r->n_capabilities = 3;
	csi__v1__plugin_capability__service__init(&svc[0]);
	csi__v1__plugin_capability__service__init(&svc[1]);
	svc[0].type = CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__CONTROLLER_SERVICE;
	svc[1].type = CSI__V1__PLUGIN_CAPABILITY__SERVICE__TYPE__VOLUME_ACCESSIBILITY_CONSTRAINTS;
	caps[0].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_SERVICE;
	caps[0].service = &svc[0];
	caps[1].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_SERVICE;
	caps[1].service = &svc[1];
	csi__v1__plugin_capability__volume_expansion__init(exp);
	exp->type = CSI__V1__PLUGIN_CAPABILITY__VOLUME_EXPANSION__TYPE__ONLINE;
	caps[2].type_case = CSI__V1__PLUGIN_CAPABILITY__TYPE_VOLUME_EXPANSION;
	caps[2].volume_expansion = exp;
	*resp = &r->base;
	return GRPC_OK;
}

int csi_probe(struct csi_call *c, const ProtobufCMessage *req, ProtobufCMessage **resp)
{
	Csi__V1__ProbeResponse *r = csi_alloc(c, sizeof(*r));
	Google__Protobuf__BoolValue *ready = csi_alloc(c, sizeof(*ready));
	Tessera__Admin__Request areq = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__StatusGet sg = TESSERA__ADMIN__STATUS_GET__INIT;
	Tessera__Admin__Response *ar = NULL;
	int code;

	areq.command_case = TESSERA__ADMIN__REQUEST__COMMAND_STATUS;
	areq.status = &sg;
	/*
	 * The plugin itself is healthy when it answers at all; it is ready
	 * when tesserad answers (restarting the plugin would not help that).
	 */
	code = csi_admin_ok(c, &areq, "tesserad status", &ar);
	if (code == GRPC_OK)
		tessera__admin__response__free_unpacked(ar, NULL);
	else
		tsr_warn("csi: Probe: not ready: %s", c->message);
	c->code = GRPC_OK;
	csi__v1__probe_response__init(r);
	google__protobuf__bool_value__init(ready);
	ready->value = code == GRPC_OK;
	r->ready = ready;
	*resp = &r->base;
	return GRPC_OK;
}
