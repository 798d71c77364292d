#!/usr/bin/env bash
# deploy/kubernetes: every file parses as YAML and every object a manifest
# names (ServiceAccounts, roles, ConfigMaps/Secrets, StorageClasses, the
# CSIDriver, snapshots, the CSI socket, images...) is defined by the
# manifests (tests/csi/check_manifests.py).  Then the check is shown to fail:
# copies of the manifests with one reference broken each must be refused
# with the matching message.
. "$(dirname "$0")/functions.sh"

[ -x "$PY" ] || skip "$PY not found"
"$PY" -c 'import yaml' 2>/dev/null || skip "python3-yaml is not installed"
CHECK=$TSR_SRC/tests/csi/check_manifests.py
K8S=$TSR_SRC/deploy/kubernetes

out=$("$PY" "$CHECK" "$K8S" 2>&1) || fail "manifests refused: $out"
log "$(printf '%s\n' "$out" | tail -n1)"

make_tmpdir D
# mutate FILE SED-EXPR PATTERN: a copy with FILE edited must be refused with PATTERN.
mutate() {
	local f=$1 expr=$2 pat=$3 rc
	rm -rf "$D/k8s"
	cp -r "$K8S" "$D/k8s"
	sed -i -e "$expr" "$D/k8s/$f"
	cmp -s "$K8S/$f" "$D/k8s/$f" && fail "mutation '$expr' changed nothing in $f"
	out=$("$PY" "$CHECK" "$D/k8s" 2>&1) && rc=0 || rc=$?
	[ "$rc" = 1 ] || fail "broken $f ($expr) was accepted (exit $rc): $out"
	printf '%s\n' "$out" | grepq -E -- "$pat" || fail "broken $f ($expr): no /$pat/ in: $out"
	log "refused as expected: $f $expr -> $(printf '%s\n' "$out" | grep -E -- "$pat" | head -n1)"
}
mutate 10-rbac.yaml '0,/name: tessera-csi-controller$/s//name: tessera-csi-ctrl/' 'serviceAccountName tessera-csi-controller is not defined'
mutate 60-storageclasses.yaml '0,/provisioner: csi.tessera.io/s//provisioner: csi.tesera.io/' 'provisioner .csi.tesera.io. is no CSIDriver'
mutate 60-storageclasses.yaml 's/^driver: csi.tessera.io/driver: tessera/' 'VolumeSnapshotClass driver'
mutate examples/40-clone.yaml 's/name: tessera-data-snap/name: tessera-snap/' 'dataSource VolumeSnapshot/tessera-snap is not defined'
mutate examples/10-pvc.yaml 's/storageClassName: tessera-replicated/storageClassName: tessera-fast/' "storageClassName 'tessera-fast' is not defined"
mutate 50-node.yaml 's/name: tessera-topology/name: tessera-topo/' 'ConfigMap tessera-topo is not defined'
mutate 01-config.yaml 's/topology.sh: |/topo.sh: |/' 'has no key topology.sh'
mutate 40-controller.yaml 's/secretName: tessera-cluster-token/secretName: token/' 'Secret token is not defined'
mutate 40-controller.yaml '0,/tessera:0.1.0/s//tessera:0.2.0/' 'named inconsistently'
mutate 10-rbac.yaml 's#"persistentvolumeclaims/status"#"persistentvolumeclaims"#' 'csi-resizer needs patch on core/persistentvolumeclaims/status'
mutate 10-rbac.yaml '/kind: Role$/{n;s/name: tessera-csi-leader-election/name: tessera-csi-leases/}' 'roleRef Role/tessera-csi-leases is not defined'
mutate 50-node.yaml 's#plugins/csi.tessera.io/csi.sock#plugins/tessera/csi.sock#' 'kubelet-registration-path'
mutate 40-controller.yaml 's#--csi-address=/csi/csi.sock#--csi-address=/csi/driver.sock#' "not tessera-csi's socket"
mutate 40-controller.yaml '/--feature-gates=Topology=true/d' 'csi-provisioner lacks --feature-gates=Topology=true'
mutate 50-node.yaml 's/mountPropagation: Bidirectional/mountPropagation: HostToContainer/' 'Bidirectional'
mutate 30-tesserad.yaml 's/serviceName: tesserad-meta/serviceName: tessera-meta/' 'serviceName'
mutate 30-tesserad.yaml 's/tesserad-meta-0.tesserad-meta.tessera.svc/tesserad-meta-1.tesserad-meta.tessera.svc/' 'fewer than 2 replicas'
mutate examples/20-pod.yaml 's/claimName: tessera-data/claimName: data/' 'PVC data is not defined'
mutate kustomization.yaml '/20-csidriver.yaml/d' '20-csidriver.yaml is not listed'
mutate 20-csidriver.yaml 's/^  attachRequired: false//' 'attachRequired'
mutate 00-namespace.yaml 's/name: tessera$/name: storage/' 'namespace tessera is not defined'
mutate examples/30-snapshot.yaml 's/^  source:/ source:/' 'YAML does not parse'
log "every broken copy refused"
