"""Check the Kubernetes manifests of deploy/kubernetes: every file parses as
YAML, every object is well formed, and every object one of them names is
defined by them (or is built into Kubernetes).

    /usr/bin/python3 tests/csi/check_manifests.py DIR

Prints one line per problem and exits 1 if there is any, 0 otherwise.
Checked references: ServiceAccounts of pods and RBAC subjects, roleRefs,
ConfigMaps/Secrets/PVCs mounted or read by env, volumeMounts/volumeDevices to
pod volumes, files read from a mounted ConfigMap, Services of StatefulSets and
StatefulSet pod DNS names, selectors to pod labels, StorageClass provisioner
and VolumeSnapshotClass driver to the CSIDriver, PVC storageClassName and
dataSource, VolumeSnapshot class and source, the namespace of every object,
the images (one tag for our image, pinned sidecars), the CSI socket shared by
the driver and its sidecars, the RBAC rules each sidecar needs, and the
kustomization's resource list.
"""
import os
import re
import sys

import yaml

DRIVER = "csi.tessera.io"
OUR_IMAGE = re.compile(r"^[a-z0-9.\-/]+/tessera:[A-Za-z0-9._\-]+$")
SIDECAR_IMAGE = re.compile(r"^registry\.k8s\.io/sig-storage/([a-z\-]+):v[0-9][0-9.]*$")
SC_PARAMS = {"replicas", "ec", "failureDomain", "minReplicas", "stripeUnit"}

# kind -> (apiVersion, namespaced)
KINDS = {
    "Namespace": ("v1", False),
    "ServiceAccount": ("v1", True),
    "ConfigMap": ("v1", True),
    "Secret": ("v1", True),
    "Service": ("v1", True),
    "Pod": ("v1", True),
    "PersistentVolumeClaim": ("v1", True),
    "Deployment": ("apps/v1", True),
    "DaemonSet": ("apps/v1", True),
    "StatefulSet": ("apps/v1", True),
    "ClusterRole": ("rbac.authorization.k8s.io/v1", False),
    "ClusterRoleBinding": ("rbac.authorization.k8s.io/v1", False),
    "Role": ("rbac.authorization.k8s.io/v1", True),
    "RoleBinding": ("rbac.authorization.k8s.io/v1", True),
    "CSIDriver": ("storage.k8s.io/v1", False),
    "StorageClass": ("storage.k8s.io/v1", False),
    "VolumeSnapshotClass": ("snapshot.storage.k8s.io/v1", False),
    "VolumeSnapshot": ("snapshot.storage.k8s.io/v1", True),
}
BUILTIN_NAMESPACES = {"default", "kube-system"}
WORKLOADS = {"Deployment", "DaemonSet", "StatefulSet", "Pod"}

# RBAC a sidecar cannot work without: (apiGroup, resource, verb)
SIDECAR_RULES = {
    "csi-provisioner": [("", "persistentvolumes", "create"), ("", "persistentvolumes", "delete"),
                        ("", "persistentvolumeclaims", "watch"), ("storage.k8s.io", "storageclasses", "list"),
                        ("storage.k8s.io", "csinodes", "get"), ("", "nodes", "get"),
                        ("snapshot.storage.k8s.io", "volumesnapshotcontents", "get"),
                        ("", "events", "create")],
    "csi-snapshotter": [("snapshot.storage.k8s.io", "volumesnapshotcontents", "update"),
                        ("snapshot.storage.k8s.io", "volumesnapshotcontents/status", "update"),
                        ("snapshot.storage.k8s.io", "volumesnapshotclasses", "list"),
                        ("", "events", "create")],
    "csi-resizer": [("", "persistentvolumes", "patch"), ("", "persistentvolumeclaims/status", "patch"),
                    ("", "pods", "list"), ("", "events", "create")],
}
LEASE_RULE = ("coordination.k8s.io", "leases", "update")


class Checker:
    def __init__(self, root):
        self.root = root
        self.errors = []
        self.objs = []          # (file, doc)
        self.index = {}         # (kind, ns, name) -> doc
        self.kustomizations = []

    def err(self, where, msg):
        self.errors.append(f"{where}: {msg}")

    # ------------------------------------------------------------ loading
    def load(self):
        files = []
        for d, _, names in os.walk(self.root):
            for n in sorted(names):
                if n.endswith((".yaml", ".yml")):
                    files.append(os.path.join(d, n))
                elif not n.endswith((".md", ".txt")):
                    self.err(os.path.relpath(os.path.join(d, n), self.root), "not a YAML file")
        if not files:
            self.err(self.root, "no manifests")
        for f in sorted(files):
            rel = os.path.relpath(f, self.root)
            try:
                with open(f, encoding="utf-8") as fh:
                    docs = list(yaml.safe_load_all(fh))
            except yaml.YAMLError as e:
                self.err(rel, f"YAML does not parse: {e}")
                continue
            for i, doc in enumerate(docs):
                where = f"{rel}[{i}]"
                if doc is None:
                    continue
                if not isinstance(doc, dict):
                    self.err(where, "document is not a mapping")
                    continue
                if doc.get("kind") == "Kustomization":
                    self.kustomizations.append((rel, doc))
                    continue
                self.add(where, doc)

    def add(self, where, doc):
        kind, api = doc.get("kind"), doc.get("apiVersion")
        meta = doc.get("metadata") or {}
        name = meta.get("name")
        if kind not in KINDS:
            self.err(where, f"kind {kind!r} unknown to this check")
            return
        want_api, namespaced = KINDS[kind]
        if api != want_api:
            self.err(where, f"{kind} has apiVersion {api!r}, want {want_api!r}")
        if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9]([a-z0-9.\-]*[a-z0-9])?", name or ""):
            self.err(where, f"{kind} has no valid metadata.name ({name!r})")
            return
        ns = meta.get("namespace")
        if namespaced and not ns:
            self.err(where, f"{kind}/{name} has no metadata.namespace")
        if not namespaced and ns:
            self.err(where, f"{kind}/{name} is cluster-scoped but has namespace {ns}")
        key = (kind, ns if namespaced else None, name)
        if key in self.index:
            self.err(where, f"{kind}/{name} defined twice")
        self.index[key] = doc
        doc["_where"] = where
        self.objs.append((where, doc))

    def has(self, kind, ns, name):
        if kind == "Namespace" and name in BUILTIN_NAMESPACES:
            return True
        return (kind, ns, name) in self.index

    def of_kind(self, kind):
        return [d for (k, _, _), d in self.index.items() if k == kind]

    # ------------------------------------------------------------ checks
    def check(self):
        drivers = [d["metadata"]["name"] for d in self.of_kind("CSIDriver")]
        if drivers != [DRIVER]:
            self.err("CSIDriver", f"want exactly one CSIDriver named {DRIVER}, have {drivers}")
        for where, doc in self.objs:
            kind, meta = doc["kind"], doc["metadata"]
            ns = meta.get("namespace")
            if ns and not self.has("Namespace", None, ns):
                self.err(where, f"{kind}/{meta['name']}: namespace {ns} is not defined")
            fn = getattr(self, "check_" + kind, None)
            if fn:
                fn(where, doc, ns)
            if kind in WORKLOADS:
                self.check_workload(where, doc, ns)
        self.check_images()
        self.check_kustomization()

    def check_CSIDriver(self, where, doc, ns):
        spec = doc.get("spec") or {}
        for f in ("attachRequired", "podInfoOnMount", "volumeLifecycleModes"):
            if f not in spec:
                self.err(where, f"CSIDriver spec.{f} is not set")

    def check_StorageClass(self, where, doc, ns):
        if doc.get("provisioner") not in [d["metadata"]["name"] for d in self.of_kind("CSIDriver")]:
            self.err(where, f"StorageClass provisioner {doc.get('provisioner')!r} is no CSIDriver defined here")
        for k in (doc.get("parameters") or {}):
            if k not in SC_PARAMS and not k.startswith("csi.storage.k8s.io/"):
                self.err(where, f"StorageClass parameter {k!r} is not one tessera-csi takes")
        for k, v in (doc.get("parameters") or {}).items():
            if not isinstance(v, str):
                self.err(where, f"StorageClass parameter {k} is not a string ({v!r})")

    def check_VolumeSnapshotClass(self, where, doc, ns):
        if doc.get("driver") not in [d["metadata"]["name"] for d in self.of_kind("CSIDriver")]:
            self.err(where, f"VolumeSnapshotClass driver {doc.get('driver')!r} is no CSIDriver defined here")

    def check_VolumeSnapshot(self, where, doc, ns):
        spec = doc.get("spec") or {}
        cls = spec.get("volumeSnapshotClassName")
        if cls and not self.has("VolumeSnapshotClass", None, cls):
            self.err(where, f"VolumeSnapshotClass {cls} is not defined")
        src = (spec.get("source") or {}).get("persistentVolumeClaimName")
        if not src or not self.has("PersistentVolumeClaim", ns, src):
            self.err(where, f"source PVC {src!r} is not defined in namespace {ns}")

    def check_PersistentVolumeClaim(self, where, doc, ns):
        spec = doc.get("spec") or {}
        sc = spec.get("storageClassName")
        if not sc or not self.has("StorageClass", None, sc):
            self.err(where, f"storageClassName {sc!r} is not defined")
        for field in ("dataSource", "dataSourceRef"):
            ds = spec.get(field)
            if not ds:
                continue
            kind, name = ds.get("kind"), ds.get("name")
            if kind == "VolumeSnapshot":
                if ds.get("apiGroup") != "snapshot.storage.k8s.io":
                    self.err(where, f"{field} VolumeSnapshot needs apiGroup snapshot.storage.k8s.io")
            elif kind != "PersistentVolumeClaim":
                self.err(where, f"{field} kind {kind!r} is not a snapshot or a PVC")
            if not self.has(kind, ns, name):
                self.err(where, f"{field} {kind}/{name} is not defined in namespace {ns}")

    def check_Service(self, where, doc, ns):
        sel = (doc.get("spec") or {}).get("selector") or {}
        if not sel:
            return
        for d in self.pods_in(ns):
            labels = (d["_pod"].get("metadata") or {}).get("labels") or {}
            if all(labels.get(k) == v for k, v in sel.items()):
                return
        self.err(where, f"Service selector {sel} matches no pod template in {ns}")

    def check_RoleBinding(self, where, doc, ns):
        self.check_binding(where, doc, ns)

    def check_ClusterRoleBinding(self, where, doc, ns):
        self.check_binding(where, doc, None)

    def check_binding(self, where, doc, ns):
        ref = doc.get("roleRef") or {}
        kind = ref.get("kind")
        if kind not in ("Role", "ClusterRole") or ref.get("apiGroup") != "rbac.authorization.k8s.io":
            self.err(where, f"bad roleRef {ref}")
        elif not self.has(kind, ns if kind == "Role" else None, ref.get("name")):
            self.err(where, f"roleRef {kind}/{ref.get('name')} is not defined")
        subjects = doc.get("subjects") or []
        if not subjects:
            self.err(where, "binding has no subjects")
        for s in subjects:
            if s.get("kind") != "ServiceAccount":
                continue
            sns = s.get("namespace") or ns
            if not self.has("ServiceAccount", sns, s.get("name")):
                self.err(where, f"subject ServiceAccount {sns}/{s.get('name')} is not defined")

    # ------------------------------------------------------------ pods
    def pod_spec(self, doc):
        if doc["kind"] == "Pod":
            return doc
        return (doc.get("spec") or {}).get("template") or {}

    def pods_in(self, ns):
        out = []
        for k in WORKLOADS:
            for d in self.of_kind(k):
                if d["metadata"].get("namespace") == ns:
                    d["_pod"] = self.pod_spec(d)
                    out.append(d)
        return out

    def check_StatefulSet(self, where, doc, ns):
        svc = (doc.get("spec") or {}).get("serviceName")
        if not svc or not self.has("Service", ns, svc):
            self.err(where, f"StatefulSet serviceName {svc!r} is not a Service in {ns}")
        elif (self.index[("Service", ns, svc)].get("spec") or {}).get("clusterIP") != "None":
            self.err(where, f"Service {svc} of a StatefulSet must be headless (clusterIP: None)")

    def check_workload(self, where, doc, ns):
        kind, name = doc["kind"], doc["metadata"]["name"]
        tmpl = self.pod_spec(doc)
        spec = tmpl.get("spec") or {}
        labels = (tmpl.get("metadata") or {}).get("labels") or {}
        if kind != "Pod":
            sel = ((doc.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
            if not sel or any(labels.get(k) != v for k, v in sel.items()):
                self.err(where, f"{kind}/{name} selector {sel} does not match its pod labels {labels}")
        sa = spec.get("serviceAccountName")
        if sa and not self.has("ServiceAccount", ns, sa):
            self.err(where, f"serviceAccountName {sa} is not defined in {ns}")
        vols = {}
        for v in spec.get("volumes") or []:
            vols[v.get("name")] = v
            if "configMap" in v and not self.has("ConfigMap", ns, v["configMap"].get("name")):
                self.err(where, f"volume {v['name']}: ConfigMap {v['configMap'].get('name')} is not defined")
            if "secret" in v and not self.has("Secret", ns, v["secret"].get("secretName")):
                self.err(where, f"volume {v['name']}: Secret {v['secret'].get('secretName')} is not defined")
            if "persistentVolumeClaim" in v:
                c = v["persistentVolumeClaim"].get("claimName")
                if not self.has("PersistentVolumeClaim", ns, c):
                    self.err(where, f"volume {v['name']}: PVC {c} is not defined in {ns}")
        containers = (spec.get("initContainers") or []) + (spec.get("containers") or [])
        if not spec.get("containers"):
            self.err(where, f"{kind}/{name} has no containers")
        used = set()
        for c in containers:
            cw = f"{where} container {c.get('name')}"
            if not c.get("image"):
                self.err(cw, "no image")
            mounts = {}
            for m in c.get("volumeMounts") or []:
                used.add(m.get("name"))
                if m.get("name") not in vols:
                    self.err(cw, f"volumeMount {m.get('name')} is no volume of the pod")
                else:
                    mounts[m.get("mountPath")] = vols[m["name"]]
                if m.get("mountPropagation") == "Bidirectional" and not \
                        (c.get("securityContext") or {}).get("privileged"):
                    self.err(cw, "Bidirectional mount propagation needs a privileged container")
            for m in c.get("volumeDevices") or []:
                used.add(m.get("name"))
                if m.get("name") not in vols:
                    self.err(cw, f"volumeDevice {m.get('name')} is no volume of the pod")
            for e in c.get("env") or []:
                vf = e.get("valueFrom") or {}
                for key, kk in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
                    if key in vf:
                        ref = vf[key]
                        if not self.has(kk, ns, ref.get("name")):
                            self.err(cw, f"env {e.get('name')}: {kk} {ref.get('name')} is not defined")
                        elif ref.get("key") not in self.keys_of(kk, ns, ref.get("name")):
                            self.err(cw, f"env {e.get('name')}: {kk} {ref.get('name')} has no key {ref.get('key')}")
            text = " ".join(str(x) for x in (c.get("command") or []) + (c.get("args") or []))
            self.check_files_read(cw, text, mounts, ns)
            self.check_dns_names(cw, text)
        for v in vols:
            if v not in used:
                self.err(where, f"volume {v} is mounted by no container")
        self.check_csi_socket(where, spec, vols)
        self.check_sidecar_rbac(where, spec, ns, sa)

    def keys_of(self, kind, ns, name):
        d = self.index.get((kind, ns, name)) or {}
        return set((d.get("data") or {}).keys()) | set((d.get("stringData") or {}).keys())

    def check_files_read(self, cw, text, mounts, ns):
        """A path under the mountPath of a ConfigMap/Secret volume names one of its keys."""
        for path, vol in mounts.items():
            if "configMap" in vol:
                kind, name = "ConfigMap", vol["configMap"].get("name")
            elif "secret" in vol:
                kind, name = "Secret", vol["secret"].get("secretName")
            else:
                continue
            for m in re.finditer(re.escape(path.rstrip("/")) + r"/([A-Za-z0-9._\-]+)", text):
                if m.group(1) not in self.keys_of(kind, ns, name):
                    self.err(cw, f"reads {m.group(0)} but {kind} {name} has no key {m.group(1)}")

    def check_dns_names(self, cw, text):
        """<sts>-<i>.<svc>.<ns>.svc... and <svc>.<ns>.svc names resolve to objects defined here."""
        for m in re.finditer(r"\b([a-z0-9\-]+?)-(\d+)\.([a-z0-9\-]+)\.([a-z0-9\-]+)\.svc\b", text):
            sts, idx, svc, ns = m.group(1), int(m.group(2)), m.group(3), m.group(4)
            d = self.index.get(("StatefulSet", ns, sts))
            if d is None:
                self.err(cw, f"{m.group(0)}: no StatefulSet {ns}/{sts}")
            elif (d.get("spec") or {}).get("serviceName") != svc:
                self.err(cw, f"{m.group(0)}: StatefulSet {sts} has serviceName {d['spec'].get('serviceName')}")
            elif idx >= int((d.get("spec") or {}).get("replicas", 1)):
                self.err(cw, f"{m.group(0)}: StatefulSet {sts} has fewer than {idx + 1} replicas")

    def csi_args(self, c):
        args = [str(x) for x in (c.get("command") or []) + (c.get("args") or [])]
        return " ".join(args)

    def check_csi_socket(self, where, spec, vols):
        """The sidecars' --csi-address is tessera-csi's --endpoint, on a volume both mount."""
        containers = spec.get("containers") or []
        driver = [c for c in containers if "tessera-csi" in self.csi_args(c)]
        sidecars = [c for c in containers if SIDECAR_IMAGE.match(c.get("image", ""))]
        if not sidecars:
            return
        if len(driver) != 1:
            self.err(where, "CSI sidecars without exactly one tessera-csi container")
            return
        m = re.search(r"--endpoint[= ]\"?unix://(/[^\s\"]+)", self.csi_args(driver[0]))
        if not m:
            self.err(where, "tessera-csi has no --endpoint unix://PATH")
            return
        sock = m.group(1)

        def vol_at(c, path):
            best = None
            for mt in c.get("volumeMounts") or []:
                mp = mt.get("mountPath", "").rstrip("/")
                if path.startswith(mp + "/") and (best is None or len(mp) > len(best[0])):
                    best = (mp, mt.get("name"))
            return best

        dv = vol_at(driver[0], sock)
        if dv is None:
            self.err(where, f"tessera-csi socket {sock} is on no mounted volume")
            return
        for c in sidecars:
            a = self.csi_args(c)
            m2 = re.search(r"--csi-address[= ](\S+)", a)
            if not m2:
                self.err(where, f"sidecar {c.get('name')} has no --csi-address")
                continue
            addr = m2.group(1).replace("unix://", "")
            sv = vol_at(c, addr)
            if sv is None or sv[1] != dv[1] or addr[len(sv[0]):] != sock[len(dv[0]):]:
                self.err(where, f"sidecar {c.get('name')} --csi-address {addr} is not tessera-csi's socket {sock}")
            if "node-driver-registrar" in c.get("image", ""):
                m3 = re.search(r"--kubelet-registration-path[= ](\S+)", a)
                hp = (vols.get(dv[1]) or {}).get("hostPath", {}).get("path", "")
                if not m3 or m3.group(1) != hp.rstrip("/") + sock[len(dv[0]):]:
                    self.err(where, f"node-driver-registrar --kubelet-registration-path is not the host path "
                                    f"of the socket ({hp}{sock[len(dv[0]):]})")
                if DRIVER not in hp:
                    self.err(where, f"plugin socket dir {hp} is not named after {DRIVER}")
            if "csi-provisioner" in c.get("image", ""):
                for flag in ("--feature-gates=Topology=true", "--extra-create-metadata"):
                    if flag not in a.split():
                        self.err(where, f"csi-provisioner lacks {flag}")
        da = self.csi_args(driver[0])
        if any("node-driver-registrar" in c.get("image", "") for c in sidecars):
            if not re.search(r"--mode[= ]\"?node", da):
                self.err(where, "node plugin's tessera-csi is not --mode node")
            if not (driver[0].get("securityContext") or {}).get("privileged"):
                self.err(where, "node plugin's tessera-csi is not privileged")
            props = {mt.get("mountPath"): mt.get("mountPropagation") for mt in driver[0].get("volumeMounts") or []}
            if props.get("/var/lib/kubelet") != "Bidirectional":
                self.err(where, "node plugin does not mount /var/lib/kubelet with Bidirectional propagation")
            if "/dev" not in props:
                self.err(where, "node plugin does not mount /dev")
        elif not re.search(r"--mode[= ]\"?controller", da):
            self.err(where, "controller's tessera-csi is not --mode controller")

    def rules_of(self, kind, ns, name):
        d = self.index.get((kind, ns, name)) or {}
        for r in d.get("rules") or []:
            for g in r.get("apiGroups") or []:
                for res in r.get("resources") or []:
                    for v in r.get("verbs") or []:
                        yield (g, res, v)

    def granted(self, ns, sa):
        out = set()
        for kind, bns in (("ClusterRoleBinding", None), ("RoleBinding", ns)):
            for b in self.of_kind(kind):
                if kind == "RoleBinding" and b["metadata"].get("namespace") != ns:
                    continue
                if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa and
                           (s.get("namespace") or bns) == ns for s in b.get("subjects") or []):
                    continue
                ref = b.get("roleRef") or {}
                rns = ns if ref.get("kind") == "Role" else None
                out |= set(self.rules_of(ref.get("kind"), rns, ref.get("name")))
        return out

    def check_sidecar_rbac(self, where, spec, ns, sa):
        have = None
        for c in spec.get("containers") or []:
            m = SIDECAR_IMAGE.match(c.get("image", ""))
            if not m or m.group(1) not in SIDECAR_RULES:
                continue
            if have is None:
                have = self.granted(ns, sa or "default")
            need = list(SIDECAR_RULES[m.group(1)])
            if "--leader-election" in self.csi_args(c).split():
                need.append(LEASE_RULE)
            for rule in need:
                if rule not in have and (rule[0], rule[1], "*") not in have:
                    self.err(where, f"{m.group(1)} needs {rule[2]} on {rule[0] or 'core'}/{rule[1]}; "
                                    f"ServiceAccount {sa} is not granted it")

    def check_images(self):
        ours = set()
        for where, doc in self.objs:
            if doc["kind"] not in WORKLOADS:
                continue
            spec = self.pod_spec(doc).get("spec") or {}
            for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
                img = c.get("image", "")
                if "tessera" in img.split("/")[-1].split(":")[0]:
                    if not OUR_IMAGE.match(img):
                        self.err(where, f"image {img} is not REGISTRY/tessera:TAG")
                    ours.add(img)
                elif img.endswith(":latest") or ":" not in img.split("/")[-1]:
                    self.err(where, f"image {img} has no pinned tag")
        if len(ours) > 1:
            self.err("images", f"the Tessera image is named inconsistently: {sorted(ours)}")
        if not ours:
            self.err("images", "no container runs the Tessera image")

    def check_kustomization(self):
        for rel, k in self.kustomizations:
            base = os.path.dirname(os.path.join(self.root, rel))
            listed = set()
            for r in k.get("resources") or []:
                p = os.path.normpath(os.path.join(base, r))
                listed.add(p)
                if not os.path.exists(p):
                    self.err(rel, f"resource {r} does not exist")
            for n in os.listdir(base):
                p = os.path.join(base, n)
                if n.endswith(".yaml") and p not in listed and os.path.basename(p) != os.path.basename(rel):
                    self.err(rel, f"{n} is not listed in resources")


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "deploy/kubernetes"
    c = Checker(root)
    c.load()
    if not c.errors:
        c.check()
    for e in c.errors:
        print(e)
    print(f"{len(c.objs)} objects in {root}: {len(c.errors)} problem(s)")
    return 1 if c.errors else 0


if __name__ == "__main__":
    sys.exit(main())
