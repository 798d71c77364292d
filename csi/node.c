/*
 * CSI Node service: make a Tessera volume a block device on this node and
 * mount it where the CO asks.
 *
 * Stage: attach the volume here (tesserad becomes its coordinator and
 * exports it over NBD), serve the NBD export as a file with nbdfuse in a
 * FUSE mount under --state-dir, put a loop device on that file, and for a
 * mount volume make a file system when the device has none and mount it at
 * the staging path.  Publish: bind-mount the staging path (or, for raw
 * block, the loop device onto a file) at the target path, read-only on
 * request.  What was done is recorded per volume in STATE_DIR/<volume>.state
 * (written to a temporary file and renamed), so that unstage, publish and
 * expansion work after a restart of tessera-csi.  Kernel nbd (/dev/nbdN) is
 * not used yet: nbdfuse + loop works where the nbd module is absent.
 *
 * Every step runs an external tool through csi_run (fork/execvp); its
 * stderr becomes the gRPC message when it fails.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "tessera/common.h"

#define MAX_TARGETS 16
#define PATH_LEN    4096

/* What NodeStageVolume did for one volume (STATE_DIR/<volume>.state, "key=value" lines). */
struct node_state {
	char volume[CSI_NAME_MAX];
	char staging[PATH_LEN];  /* staging_target_path */
	bool block;              /* raw block access type (no file system) */
	char fs[16];             /* mount: "ext4" | "xfs" */
	char mount_flags[1024];  /* mount: -o value used at stage ("" = none) */
	char uri[512];           /* NBD URI nbdfuse serves */
	char fuse_dir[PATH_LEN]; /* FUSE mount point; the file is fuse_dir/disk */
	int fuse_pid;            /* nbdfuse; 0 = none */
	char device[64];         /* loop device, "" = none */
	size_t ntargets;         /* published targets */
	struct {
		char path[PATH_LEN];
		bool ro;
	} targets[MAX_TARGETS];
};

/* ---- small helpers ----------------------------------------------------- */

static int run(struct csi_call *c, const char *what, char *const argv[])
{
	char err[768];
	int ret = csi_run(argv, NULL, 0, err, sizeof(err));

	if (ret < 0)
		return csi_fail(c, GRPC_INTERNAL, "%s: cannot run %s: %s", what, argv[0],
				strerror(-ret));
	if (ret)
		return csi_fail(c, GRPC_INTERNAL, "%s: %s exited with %d: %s", what, argv[0], ret,
				err[0] ? err : "(no message)");
	return GRPC_OK;
}

/* Is path a mount point?  Compares with /proc/self/mountinfo's field 5 (octal escapes). */
static bool is_mounted(const char *path)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[8192], real[PATH_LEN];
	bool found = false;

	if (f == NULL)
		return false;
	if (realpath(path, real) == NULL)
		snprintf(real, sizeof(real), "%s", path);
	while (!found && fgets(line, sizeof(line), f)) {
		char *p = line, mp[PATH_LEN];
		size_t o = 0;
		int field;

		for (field = 0; field < 4 && p; field++) {
			p = strchr(p, ' ');
			if (p)
				p++;
		}
		if (p == NULL)
			continue;
		while (*p && *p != ' ' && o + 1 < sizeof(mp)) {
			if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] && p[3]) {
				mp[o++] =
				    (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
				p += 4;
			} else {
				mp[o++] = *p++;
			}
		}
		mp[o] = '\0';
		found = strcmp(mp, real) == 0;
	}
	fclose(f);
	return found;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char tmp[PATH_LEN];
	char *p;

	snprintf(tmp, sizeof(tmp), "%s", path);
	for (p = tmp + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(tmp, mode) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	if (mkdir(tmp, mode) && errno != EEXIST)
		return -errno;
	return 0;
}

static uint64_t device_size(const char *dev)
{
	uint64_t size = 0;
	int fd = open(dev, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return 0;
	if (ioctl(fd, BLKGETSIZE64, &size))
		size = 0;
	close(fd);
	return size;
}

static bool pid_alive(int pid)
{
	int st;

	if (pid <= 0)
		return false;
	if (waitpid(pid, &st, WNOHANG) == pid)
		return false; /* our child, now reaped */
	return kill(pid, 0) == 0;
}

/* ---- state files ------------------------------------------------------- */

static void state_path(const struct csi_plugin *p, const char *vol, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%s.state", p->state_dir, vol);
}

static int state_save(struct csi_call *c, const struct node_state *s)
{
	char path[PATH_LEN], tmp[PATH_LEN + 8];
	FILE *f;
	size_t i;

	state_path(c->plugin, s->volume, path, sizeof(path));
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "we");
	if (f == NULL)
		return csi_fail(c, GRPC_INTERNAL, "state file %s: %s", tmp, strerror(errno));
	fprintf(f,
		"volume=%s\nstaging=%s\nblock=%d\nfs=%s\nmount_flags=%s\nuri=%s\n"
		"fuse_dir=%s\nfuse_pid=%d\ndevice=%s\n",
		s->volume, s->staging, s->block, s->fs, s->mount_flags, s->uri, s->fuse_dir,
		s->fuse_pid, s->device);
	for (i = 0; i < s->ntargets; i++)
		fprintf(f, "target=%d %s\n", s->targets[i].ro, s->targets[i].path);
	if (fflush(f) || fsync(fileno(f))) {
		fclose(f);
		return csi_fail(c, GRPC_INTERNAL, "state file %s: %s", tmp, strerror(errno));
	}
	fclose(f);
	if (rename(tmp, path))
		return csi_fail(c, GRPC_INTERNAL, "state file %s: %s", path, strerror(errno));
	return GRPC_OK;
}

/* 0 loaded, -ENOENT not staged, -EINVAL unreadable. */
static int state_load(const struct csi_plugin *p, const char *vol, struct node_state *s)
{
	char path[PATH_LEN], line[PATH_LEN + 64];
	FILE *f;

	memset(s, 0, sizeof(*s));
	if (!tsr_valid_name(vol))
		return -ENOENT;
	state_path(p, vol, path, sizeof(path));
	f = fopen(path, "re");
	if (f == NULL)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char *eq = strchr(line, '='), *v;
		size_t n = strlen(line);

		if (n && line[n - 1] == '\n')
			line[n - 1] = '\0';
		if (eq == NULL)
			continue;
		*eq = '\0';
		v = eq + 1;
		if (strcmp(line, "volume") == 0)
			snprintf(s->volume, sizeof(s->volume), "%s", v);
		else if (strcmp(line, "staging") == 0)
			snprintf(s->staging, sizeof(s->staging), "%s", v);
		else if (strcmp(line, "fs") == 0)
			snprintf(s->fs, sizeof(s->fs), "%s", v);
		else if (strcmp(line, "mount_flags") == 0)
			snprintf(s->mount_flags, sizeof(s->mount_flags), "%s", v);
		else if (strcmp(line, "uri") == 0)
			snprintf(s->uri, sizeof(s->uri), "%s", v);
		else if (strcmp(line, "fuse_dir") == 0)
			snprintf(s->fuse_dir, sizeof(s->fuse_dir), "%s", v);
		else if (strcmp(line, "device") == 0)
			snprintf(s->device, sizeof(s->device), "%s", v);
		else if (strcmp(line, "block") == 0)
			s->block = atoi(v) != 0;
		else if (strcmp(line, "fuse_pid") == 0)
			s->fuse_pid = atoi(v);
		else if (strcmp(line, "target") == 0 && s->ntargets < MAX_TARGETS &&
			 strlen(v) > 2) {
			/* "target=<ro 0|1> <path>" */
			s->targets[s->ntargets].ro = v[0] == '1';
			snprintf(s->targets[s->ntargets].path, PATH_LEN, "%s", v + 2);
			s->ntargets++;
		}
	}
	fclose(f);
	return s->volume[0] ? 0 : -EINVAL;
}

static void state_remove(const struct csi_plugin *p, const char *vol)
{
	char path[PATH_LEN];

	state_path(p, vol, path, sizeof(path));
	unlink(path);
}

/* ---- the device chain: attach, nbdfuse, loop --------------------------- */

static int admin_attach(struct csi_call *c, const char *vol, char *uri, size_t uri_len)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeAttach va = TESSERA__ADMIN__VOLUME_ATTACH__INIT;
	Tessera__Admin__VolumeShow vs = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__Response *r = NULL;
	const char *best = NULL;
	size_t i;
	int code;

	va.name = (char *)vol;
	va.node = (char *)c->plugin->node_id;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_ATTACH;
	req.volume_attach = &va;
	code = csi_admin_ok(c, &req, "volume attach", &r);
	if (code == GRPC_NOT_FOUND)
		return csi_fail(c, code, "volume %s does not exist", vol);
	if (code)
		return code;
	tessera__admin__response__free_unpacked(r, NULL);
	vs.name = (char *)vol;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &vs;
	code = csi_admin_ok(c, &req, "volume show", &r);
	if (code)
		return code;
	for (i = 0; r->n_volumes && i < r->volumes[0]->n_nbd_uris; i++) {
		const char *u = r->volumes[0]->nbd_uris[i];

		if (best == NULL || strncmp(u, "nbd+unix:", 9) == 0)
			best = u; /* prefer the unix socket: no TCP stack in the data path */
		if (strncmp(u, "nbd+unix:", 9) == 0)
			break;
	}
	if (best == NULL) {
		tessera__admin__response__free_unpacked(r, NULL);
		return csi_fail(c, GRPC_UNAVAILABLE,
				"volume %s is attached but tesserad reports no "
				"NBD export for it",
				vol);
	}
	snprintf(uri, uri_len, "%s", best);
	tessera__admin__response__free_unpacked(r, NULL);
	return GRPC_OK;
}

/*
 * Detach vol when this node is its coordinator.  GRPC_OK, also when it is
 * not ours or not attached, or tesserad fails otherwise (best effort: the
 * volume stays usable from another node); GRPC_FAILED_PRECONDITION when
 * tesserad refuses it busy (NBD clients still connected, or another detach
 * of it waiting): the volume stays attached, why says so, and the caller
 * fails its call so that the CO retries it (CSI: a volume in use).
 */
static int admin_detach(struct csi_call *c, const char *vol, char *why, size_t why_len)
{
	int code = GRPC_OK;

	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow vs = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__VolumeDetach vd = TESSERA__ADMIN__VOLUME_DETACH__INIT;
	Tessera__Admin__Response *r = NULL;
	bool ours = false;

	/* only our own attachment: a late unstage must not take the volume from another node */
	vs.name = (char *)vol;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &vs;
	if (csi_admin_ok(c, &req, "volume show", &r) == GRPC_OK) {
		ours =
		    r->n_volumes && strcmp(r->volumes[0]->attached_node, c->plugin->node_id) == 0;
		tessera__admin__response__free_unpacked(r, NULL);
		r = NULL;
	}
	if (ours) {
		vd.name = (char *)vol;
		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_DETACH;
		req.volume_detach = &vd;
		if (csi_admin(c, &req, &r) == GRPC_OK) {
			if (r->error == -EBUSY) {
				code = GRPC_FAILED_PRECONDITION;
				snprintf(why, why_len, "volume %s stays attached on this node: %s",
					 vol, r->message);
				tsr_warn("csi: %s", why);
			} else if (r->error && r->error != -ENOENT) {
				tsr_warn("csi: volume detach %s: %s", vol, r->message);
			}
			tessera__admin__response__free_unpacked(r, NULL);
		}
	}
	c->code = GRPC_OK; /* best effort: the volume stays usable from another node */
	return code;
}

/* Start nbdfuse serving s->uri as s->fuse_dir/disk; wait until the file is there. */
static int fuse_start(struct csi_call *c, struct node_state *s)
{
	char file[PATH_LEN + 8], pidfile[PATH_LEN + 16], log[PATH_LEN + 16];
	char *argv[] = {"nbdfuse", "-P", pidfile, file, s->uri, NULL};
	struct stat sb;
	int pid, ret, i;

	ret = mkdir_p(s->fuse_dir, 0700);
	if (ret)
		return csi_fail(c, GRPC_INTERNAL, "mkdir %s: %s", s->fuse_dir, strerror(-ret));
	snprintf(file, sizeof(file), "%s/disk", s->fuse_dir);
	snprintf(pidfile, sizeof(pidfile), "%s.pid", s->fuse_dir);
	snprintf(log, sizeof(log), "%s.log", s->fuse_dir);
	unlink(pidfile);
	ret = csi_spawn(argv, log, &pid);
	if (ret)
		return csi_fail(c, GRPC_INTERNAL, "cannot start nbdfuse: %s", strerror(-ret));
	for (i = 0; i < 200; i++) { /* 10 s */
		if (stat(pidfile, &sb) == 0 && sb.st_size > 0 && stat(file, &sb) == 0 &&
		    is_mounted(s->fuse_dir)) {
			s->fuse_pid = pid;
			return GRPC_OK;
		}
		if (!pid_alive(pid))
			break;
		usleep(50000);
	}
	kill(pid, SIGTERM);
	waitpid(pid, NULL, 0);
	return csi_fail(c, GRPC_INTERNAL, "nbdfuse could not serve %s (see %s)", s->uri, log);
}

static void fuse_stop(struct node_state *s)
{
	char *argv[] = {"fusermount3", "-u", s->fuse_dir, NULL};
	int i;

	if (s->fuse_dir[0] && is_mounted(s->fuse_dir))
		csi_run(argv, NULL, 0, NULL, 0);
	for (i = 0; i < 100 && pid_alive(s->fuse_pid); i++)
		usleep(50000);
	if (pid_alive(s->fuse_pid)) {
		kill(s->fuse_pid, SIGKILL);
		waitpid(s->fuse_pid, NULL, WNOHANG);
	}
	if (s->fuse_dir[0] && is_mounted(s->fuse_dir)) {
		char *lazy[] = {"fusermount3", "-u", "-z", s->fuse_dir, NULL};

		csi_run(lazy, NULL, 0, NULL, 0);
	}
	s->fuse_pid = 0;
}

/*
 * Detach every loop device backed by our FUSE file: a losetup that failed
 * half-way (e.g. setting the sector size) can leave one attached, and we
 * must not leak it.
 */
static void loop_sweep(const char *file)
{
	char *list[] = {"losetup", "-j", (char *)file, "-n", "-O", "NAME", NULL};
	char out[1024], *line, *save = NULL;

	if (access(file, F_OK) || csi_run(list, out, sizeof(out), NULL, 0))
		return;
	for (line = strtok_r(out, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char *detach[] = {"losetup", "-d", line, NULL};

		if (strncmp(line, "/dev/", 5) == 0)
			csi_run(detach, NULL, 0, NULL, 0);
	}
}

static int loop_start(struct csi_call *c, struct node_state *s)
{
	char file[PATH_LEN + 8], out[64], err[512];
	/*
	 * 4 KiB logical sectors: Tessera's block size, and direct I/O through
	 * FUSE then never sees a sub-block request (512-byte ones fail there).
	 * Direct I/O keeps the page cache from holding a second copy.
	 */
	char *dio[] = {"losetup", "--find",         "--show", "--sector-size",
		       "4096",    "--direct-io=on", file,     NULL};
	char *sect[] = {"losetup", "--find", "--show", "--sector-size", "4096", file, NULL};
	char *plain[] = {"losetup", "--find", "--show", file, NULL};
	char **tries[] = {dio, sect, plain};
	int ret = -1;
	size_t i;

	snprintf(file, sizeof(file), "%s/disk", s->fuse_dir);
	for (i = 0; i < 3; i++) {
		ret = csi_run(tries[i], out, sizeof(out), err, sizeof(err));
		if (ret == 0 && strncmp(out, "/dev/", 5) == 0)
			break;
		loop_sweep(file); /* a failed try may still have attached a device */
	}
	if (i == 3)
		return csi_fail(c, GRPC_RESOURCE_EXHAUSTED, "losetup %s: %s", file,
				err[0] ? err : "no loop device");
	snprintf(s->device, sizeof(s->device), "%s", out);
	return GRPC_OK;
}

static void loop_stop(struct node_state *s)
{
	char *argv[] = {"losetup", "-d", s->device, NULL};
	char file[PATH_LEN + 8];

	if (s->device[0])
		csi_run(argv, NULL, 0, NULL, 0);
	s->device[0] = '\0';
	if (s->fuse_dir[0]) {
		snprintf(file, sizeof(file), "%s/disk", s->fuse_dir);
		loop_sweep(file);
	}
}

static int fs_mount(struct csi_call *c, const struct node_state *s)
{
	char *argv[8], opts[sizeof(s->mount_flags) + 16];
	int n = 0;

	/*
	 * xfs: nouuid, because a clone or snapshot copy carries its source's
	 * file system UUID and xfs refuses a second mount of one UUID.
	 */
	snprintf(opts, sizeof(opts), "%s%s%s", strcmp(s->fs, "xfs") ? "" : "nouuid",
		 strcmp(s->fs, "xfs") || !s->mount_flags[0] ? "" : ",", s->mount_flags);
	argv[n++] = "mount";
	argv[n++] = "-t";
	argv[n++] = (char *)s->fs;
	if (opts[0]) {
		argv[n++] = "-o";
		argv[n++] = opts;
	}
	argv[n++] = (char *)s->device;
	argv[n++] = (char *)s->staging;
	argv[n] = NULL;
	return run(c, "mount", argv);
}

static int umount_path(struct csi_call *c, const char *path)
{
	char *argv[] = {"umount", (char *)path, NULL};

	if (!is_mounted(path))
		return GRPC_OK;
	return run(c, "umount", argv);
}

/* Publish one target (bind mount, then read-only remount when asked). */
static int bind_target(struct csi_call *c, const struct node_state *s, const char *target, bool ro)
{
	char *bind[] = {"mount", "--bind", (char *)(s->block ? s->device : s->staging),
			(char *)target, NULL};
	char *remount[] = {"mount", "-o", "remount,bind,ro", (char *)target, NULL};
	int code = run(c, "bind mount", bind);

	if (code == GRPC_OK && ro) {
		code = run(c, "read-only remount", remount);
		if (code)
			umount_path(c, target);
	}
	return code;
}

/*
 * Tear down what stage built (any prefix of it); the state file goes too.
 * With detach, the volume is detached last: GRPC_FAILED_PRECONDITION when
 * tesserad refuses that (why: its message), the state file then kept so
 * that the CO's retry detaches again; else GRPC_OK.  c's code and message
 * are left as they were.
 */
static int teardown(struct csi_call *c, struct node_state *s, bool detach, char *why,
		    size_t why_len)
{
	int saved = c->code, code = GRPC_OK;
	char msg[sizeof(c->message)];

	memcpy(msg, c->message, sizeof(msg));
	if (!s->block && s->staging[0])
		umount_path(c, s->staging);
	loop_stop(s);
	fuse_stop(s);
	if (s->fuse_dir[0]) {
		char f[PATH_LEN + 16];

		rmdir(s->fuse_dir);
		snprintf(f, sizeof(f), "%s.pid", s->fuse_dir);
		unlink(f);
		if (detach) { /* done with the volume: its nbdfuse log too */
			snprintf(f, sizeof(f), "%s.log", s->fuse_dir);
			unlink(f);
		}
	}
	if (detach)
		code = admin_detach(c, s->volume, why, why_len);
	if (code == GRPC_OK)
		state_remove(c->plugin, s->volume);
	c->code = saved;
	memcpy(c->message, msg, sizeof(msg));
	return code;
}

/* The volume's size as tesserad reports it, 0 when unknown. */
static uint64_t volume_size(struct csi_call *c, const char *vol)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow vs = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__Response *r = NULL;
	uint64_t size = 0;

	vs.name = (char *)vol;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &vs;
	if (csi_admin_ok(c, &req, "volume show", &r) == GRPC_OK) {
		if (r->n_volumes)
			size = r->volumes[0]->size;
		tessera__admin__response__free_unpacked(r, NULL);
	}
	return size;
}

/*
 * For the spec's NOT_FOUND on a node call about a volume with nothing here:
 * true only when tesserad says the volume does not exist (unreachable:
 * false, the call goes on as for a known volume).
 */
static bool volume_missing(struct csi_call *c, const char *vol)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeShow vs = TESSERA__ADMIN__VOLUME_SHOW__INIT;
	Tessera__Admin__Response *r = NULL;
	int code;

	if (!tsr_valid_name(vol))
		return true;
	vs.name = (char *)vol;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_SHOW;
	req.volume_show = &vs;
	code = csi_admin_ok(c, &req, "volume show", &r);
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	c->code = GRPC_OK;
	return code == GRPC_NOT_FOUND;
}

/* ---- NodeStageVolume / NodeUnstageVolume ------------------------------- */

static void join_flags(char *buf, size_t len, size_t n, char **flags)
{
	size_t i, o = 0;

	buf[0] = '\0';
	for (i = 0; i < n && o < len; i++)
		o += (size_t)snprintf(buf + o, len - o, "%s%s", o ? "," : "", flags[i]);
}

int csi_node_stage_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__NodeStageVolumeRequest *req = (const void *)m;
	Csi__V1__NodeStageVolumeResponse *r;
	const Csi__V1__VolumeCapability *cap = req->volume_capability;
	struct node_state *s = csi_alloc(c, sizeof(*s)), *old = csi_alloc(c, sizeof(*old));
	char key[CSI_NAME_MAX + 8], type[32], err[256], busy[512];
	const char *why;
	int code, ret;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->staging_target_path == NULL || req->staging_target_path[0] != '/')
		return csi_fail(c, GRPC_INVALID_ARGUMENT,
				"staging_target_path is required (an "
				"absolute path)");
	if (cap == NULL)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capability is required");
	why = csi_capability_check(cap);
	if (why)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capability: %s", why);
	if (!tsr_valid_name(req->volume_id))
		return csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", req->volume_id);
	if (strlen(req->staging_target_path) >= PATH_LEN)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "staging_target_path too long");

	snprintf(key, sizeof(key), "node:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	if (state_load(c->plugin, req->volume_id, old) == 0) {
		bool same_path = strcmp(old->staging, req->staging_target_path) == 0;
		bool block = cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
		const char *fs =
		    !block && cap->mount && cap->mount->fs_type && cap->mount->fs_type[0]
			? cap->mount->fs_type
			: "ext4";

		if (!same_path || old->block != block || (!block && strcmp(old->fs, fs))) {
			code =
			    csi_fail(c, GRPC_ALREADY_EXISTS,
				     "volume %s is already staged at %s "
				     "as a %s volume%s%s: unstage it first",
				     req->volume_id, old->staging, old->block ? "block" : "mount",
				     old->block ? "" : " with ", old->block ? "" : old->fs);
			goto out;
		}
		if (pid_alive(old->fuse_pid) && old->device[0] &&
		    (block || is_mounted(old->staging))) {
			code = GRPC_OK; /* staged already: idempotent */
			goto done;
		}
		/* half-built or broken (e.g. after a crash): rebuild it */
		teardown(c, old, false, NULL, 0);
	}

	snprintf(s->volume, sizeof(s->volume), "%s", req->volume_id);
	snprintf(s->staging, sizeof(s->staging), "%s", req->staging_target_path);
	s->block = cap->access_type_case == CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK;
	if (!s->block) {
		const char *fs = cap->mount && cap->mount->fs_type && cap->mount->fs_type[0]
				     ? cap->mount->fs_type
				     : "ext4";

		snprintf(s->fs, sizeof(s->fs), "%s", fs);
		if (cap->mount)
			join_flags(s->mount_flags, sizeof(s->mount_flags),
				   cap->mount->n_mount_flags, cap->mount->mount_flags);
	}
	snprintf(s->fuse_dir, sizeof(s->fuse_dir), "%s/%s.fuse", c->plugin->state_dir, s->volume);

	code = admin_attach(c, s->volume, s->uri, sizeof(s->uri));
	if (code)
		goto out;
	code = fuse_start(c, s);
	if (code)
		goto fail;
	code = loop_start(c, s);
	if (code)
		goto fail;
	code = state_save(c, s); /* from here on unstage can undo it all */
	if (code)
		goto fail;
	if (!s->block) {
		char *blkid[] = {"blkid", "-p", "-o", "value", "-s", "TYPE", s->device, NULL};

		ret = csi_run(blkid, type, sizeof(type), err, sizeof(err));
		if (ret == 2 || (ret == 0 && type[0] == '\0')) {
			char *ext4[] = {"mkfs.ext4", "-q",        "-F",      "-b", "4096",
					"-E",        "nodiscard", s->device, NULL};
			char *xfs[] = {"mkfs.xfs", "-q", "-f", "-K", s->device, NULL};

			code = run(c, "make file system", strcmp(s->fs, "xfs") ? ext4 : xfs);
			if (code)
				goto fail;
		} else if (ret != 0) {
			code = csi_fail(c, GRPC_INTERNAL, "blkid %s: %s", s->device, err);
			goto fail;
		} else if (strcmp(type, s->fs)) {
			code = csi_fail(c, GRPC_FAILED_PRECONDITION,
					"volume %s already holds a %s "
					"file system, not %s: stage it with fsType %s",
					s->volume, type, s->fs, type);
			goto fail;
		}
		ret = mkdir_p(s->staging, 0750);
		if (ret) {
			code =
			    csi_fail(c, GRPC_INTERNAL, "mkdir %s: %s", s->staging, strerror(-ret));
			goto fail;
		}
		code = fs_mount(c, s);
		if (code)
			goto fail;
	}
	goto done;
fail:
	/* the stage's error stands; a refused detach is logged (admin_detach) */
	teardown(c, s, true, busy, sizeof(busy));
	goto out;
done:
	r = csi_alloc(c, sizeof(*r));
	csi__v1__node_stage_volume_response__init(r);
	*resp = &r->base;
	code = GRPC_OK;
out:
	csi_key_unlock(c->plugin, key);
	return code;
}

int csi_node_unstage_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__NodeUnstageVolumeRequest *req = (const void *)m;
	Csi__V1__NodeUnstageVolumeResponse *r;
	struct node_state *s = csi_alloc(c, sizeof(*s));
	char key[CSI_NAME_MAX + 8], busy[512];
	size_t i;
	int code = GRPC_OK;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->staging_target_path == NULL || req->staging_target_path[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "staging_target_path is required");
	snprintf(key, sizeof(key), "node:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	if (state_load(c->plugin, req->volume_id, s) == 0) {
		for (i = 0; i < s->ntargets; i++) {
			if (is_mounted(s->targets[i].path)) {
				code = csi_fail(c, GRPC_FAILED_PRECONDITION,
						"volume %s is still "
						"published at %s: unpublish it first",
						req->volume_id, s->targets[i].path);
				goto out;
			}
		}
		if (!s->block && is_mounted(s->staging)) {
			code = umount_path(c, s->staging);
			if (code)
				goto out; /* busy: nothing torn down, the CO retries */
		}
		code = teardown(c, s, true, busy, sizeof(busy));
		if (code) {
			/* the device is gone but another NBD client holds the volume:
			 * it stays attached and staged (state kept), the CO retries */
			code = csi_fail(c, code, "%s", busy);
			goto out;
		}
	} else if (is_mounted(req->staging_target_path)) {
		/* no record (state dir lost): at least release the mount */
		code = umount_path(c, req->staging_target_path);
		if (code)
			goto out;
	} else if (volume_missing(c, req->volume_id)) {
		code = csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", req->volume_id);
		goto out;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__node_unstage_volume_response__init(r);
	*resp = &r->base;
out:
	csi_key_unlock(c->plugin, key);
	return code;
}

/* ---- NodePublishVolume / NodeUnpublishVolume --------------------------- */

int csi_node_publish_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__NodePublishVolumeRequest *req = (const void *)m;
	Csi__V1__NodePublishVolumeResponse *r;
	struct node_state *s = csi_alloc(c, sizeof(*s));
	char key[CSI_NAME_MAX + 8];
	const char *why;
	bool ro;
	size_t i;
	int code, ret;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->target_path == NULL || req->target_path[0] != '/' ||
	    strlen(req->target_path) >= PATH_LEN)
		return csi_fail(c, GRPC_INVALID_ARGUMENT,
				"target_path is required (an absolute "
				"path)");
	if (req->volume_capability == NULL)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capability is required");
	why = csi_capability_check(req->volume_capability);
	if (why)
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_capability: %s", why);
	if (req->staging_target_path == NULL || req->staging_target_path[0] == '\0')
		return csi_fail(c, GRPC_FAILED_PRECONDITION,
				"staging_target_path is required: "
				"tessera-csi stages volumes (STAGE_UNSTAGE_VOLUME): call "
				"NodeStageVolume first and pass its staging path");
	ro = req->readonly ||
	     (req->volume_capability->access_mode->mode ==
	      CSI__V1__VOLUME_CAPABILITY__ACCESS_MODE__MODE__SINGLE_NODE_READER_ONLY);

	snprintf(key, sizeof(key), "node:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	if (state_load(c->plugin, req->volume_id, s)) {
		if (volume_missing(c, req->volume_id))
			code =
			    csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", req->volume_id);
		else
			code = csi_fail(c, GRPC_FAILED_PRECONDITION,
					"volume %s is not staged on this "
					"node: call NodeStageVolume first",
					req->volume_id);
		goto out;
	}
	if (strcmp(s->staging, req->staging_target_path)) {
		code = csi_fail(c, GRPC_FAILED_PRECONDITION, "volume %s is staged at %s, not %s",
				req->volume_id, s->staging, req->staging_target_path);
		goto out;
	}
	if (s->block != (req->volume_capability->access_type_case ==
			 CSI__V1__VOLUME_CAPABILITY__ACCESS_TYPE_BLOCK)) {
		code = csi_fail(c, GRPC_INVALID_ARGUMENT, "volume %s was staged as a %s volume",
				req->volume_id, s->block ? "block" : "mount");
		goto out;
	}
	for (i = 0; i < s->ntargets; i++) {
		if (strcmp(s->targets[i].path, req->target_path))
			continue;
		if (is_mounted(req->target_path)) {
			if (s->targets[i].ro != ro)
				code = csi_fail(c, GRPC_ALREADY_EXISTS,
						"volume %s is published at %s "
						"%s",
						req->volume_id, req->target_path,
						s->targets[i].ro ? "read-only" : "read-write");
			else
				code = GRPC_OK;
			goto reply;
		}
		break; /* recorded but not mounted: mount again */
	}
	if (i == s->ntargets && s->ntargets == MAX_TARGETS) {
		code = csi_fail(c, GRPC_RESOURCE_EXHAUSTED,
				"volume %s is published at %d targets "
				"already",
				req->volume_id, MAX_TARGETS);
		goto out;
	}
	if (s->block) {
		char parent[PATH_LEN], *slash;
		int fd;

		snprintf(parent, sizeof(parent), "%s", req->target_path);
		slash = strrchr(parent, '/');
		if (slash && slash != parent) {
			*slash = '\0';
			mkdir_p(parent, 0750);
		}
		fd = open(req->target_path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		if (fd < 0) {
			code = csi_fail(c, GRPC_INTERNAL, "create %s: %s", req->target_path,
					strerror(errno));
			goto out;
		}
		close(fd);
	} else {
		ret = mkdir_p(req->target_path, 0750);
		if (ret) {
			code = csi_fail(c, GRPC_INTERNAL, "mkdir %s: %s", req->target_path,
					strerror(-ret));
			goto out;
		}
	}
	code = bind_target(c, s, req->target_path, ro);
	if (code)
		goto out;
	if (i == s->ntargets)
		s->ntargets++;
	snprintf(s->targets[i].path, PATH_LEN, "%s", req->target_path);
	s->targets[i].ro = ro;
	code = state_save(c, s);
	if (code) {
		umount_path(c, req->target_path);
		goto out;
	}
reply:
	if (code == GRPC_OK) {
		r = csi_alloc(c, sizeof(*r));
		csi__v1__node_publish_volume_response__init(r);
		*resp = &r->base;
	}
out:
	csi_key_unlock(c->plugin, key);
	return code;
}

int csi_node_unpublish_volume(struct csi_call *c, const ProtobufCMessage *m,
			      ProtobufCMessage **resp)
{
	const Csi__V1__NodeUnpublishVolumeRequest *req = (const void *)m;
	Csi__V1__NodeUnpublishVolumeResponse *r;
	struct node_state *s = csi_alloc(c, sizeof(*s));
	char key[CSI_NAME_MAX + 8];
	struct stat sb;
	size_t i;
	int code = GRPC_OK;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->target_path == NULL || req->target_path[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "target_path is required");
	snprintf(key, sizeof(key), "node:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	if (!is_mounted(req->target_path) && state_load(c->plugin, req->volume_id, s) == -ENOENT &&
	    volume_missing(c, req->volume_id)) {
		code = csi_fail(c, GRPC_NOT_FOUND, "volume %s does not exist", req->volume_id);
		goto out;
	}
	code = umount_path(c, req->target_path);
	if (code)
		goto out;
	if (lstat(req->target_path, &sb) == 0) {
		if (S_ISDIR(sb.st_mode))
			rmdir(req->target_path);
		else
			unlink(req->target_path);
	}
	if (state_load(c->plugin, req->volume_id, s) == 0) {
		for (i = 0; i < s->ntargets; i++) {
			if (strcmp(s->targets[i].path, req->target_path))
				continue;
			memmove(&s->targets[i], &s->targets[i + 1],
				(s->ntargets - i - 1) * sizeof(s->targets[0]));
			s->ntargets--;
			code = state_save(c, s);
			break;
		}
	}
	if (code == GRPC_OK) {
		r = csi_alloc(c, sizeof(*r));
		csi__v1__node_unpublish_volume_response__init(r);
		*resp = &r->base;
	}
out:
	csi_key_unlock(c->plugin, key);
	return code;
}

/* ---- stats, expansion -------------------------------------------------- */

static Csi__V1__VolumeUsage *usage_new(struct csi_call *c, Csi__V1__VolumeUsage__Unit unit,
				       uint64_t total, uint64_t avail, uint64_t used)
{
	Csi__V1__VolumeUsage *u = csi_alloc(c, sizeof(*u));

	csi__v1__volume_usage__init(u);
	u->unit = unit;
	u->total = (int64_t)total;
	u->available = (int64_t)avail;
	u->used = (int64_t)used;
	return u;
}

int csi_node_get_volume_stats(struct csi_call *c, const ProtobufCMessage *m,
			      ProtobufCMessage **resp)
{
	const Csi__V1__NodeGetVolumeStatsRequest *req = (const void *)m;
	Csi__V1__NodeGetVolumeStatsResponse *r;
	Csi__V1__VolumeCondition *cond;
	struct node_state *s = csi_alloc(c, sizeof(*s));
	struct stat sb;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->volume_path == NULL || req->volume_path[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_path is required");
	if (state_load(c->plugin, req->volume_id, s))
		return csi_fail(c, GRPC_NOT_FOUND, "volume %s is not staged on this node",
				req->volume_id);
	if (stat(req->volume_path, &sb))
		return csi_fail(c, GRPC_NOT_FOUND, "volume_path %s: %s", req->volume_path,
				strerror(errno));
	r = csi_alloc(c, sizeof(*r));
	csi__v1__node_get_volume_stats_response__init(r);
	cond = csi_alloc(c, sizeof(*cond));
	csi__v1__volume_condition__init(cond);
	if (!pid_alive(s->fuse_pid)) {
		cond->abnormal = 1;
		cond->message = csi_printf(c,
					   "nbdfuse (pid %d) serving %s has exited: unstage and "
					   "stage the volume again",
					   s->fuse_pid, s->uri);
	} else if (!s->device[0] || device_size(s->device) == 0) {
		cond->abnormal = 1;
		cond->message = csi_printf(c, "loop device %s is gone", s->device);
	} else if (!s->block && !is_mounted(s->staging)) {
		cond->abnormal = 1;
		cond->message = csi_printf(c, "staging path %s is not mounted", s->staging);
	} else {
		cond->message = csi_strdup(c, "device and mounts in place");
	}
	r->volume_condition = cond;
	if (s->block || S_ISBLK(sb.st_mode) || S_ISREG(sb.st_mode)) {
		uint64_t size = device_size(s->device);

		r->usage = csi_alloc(c, sizeof(*r->usage));
		r->usage[0] = usage_new(c, CSI__V1__VOLUME_USAGE__UNIT__BYTES, size, 0, 0);
		r->n_usage = 1;
	} else {
		struct statvfs vfs;

		if (statvfs(req->volume_path, &vfs))
			return csi_fail(c, GRPC_INTERNAL, "statvfs %s: %s", req->volume_path,
					strerror(errno));
		r->usage = csi_alloc(c, 2 * sizeof(*r->usage));
		r->usage[0] = usage_new(c, CSI__V1__VOLUME_USAGE__UNIT__BYTES,
					(uint64_t)vfs.f_blocks * vfs.f_frsize,
					(uint64_t)vfs.f_bavail * vfs.f_frsize,
					(uint64_t)(vfs.f_blocks - vfs.f_bfree) * vfs.f_frsize);
		r->usage[1] = usage_new(c, CSI__V1__VOLUME_USAGE__UNIT__INODES, vfs.f_files,
					vfs.f_favail, vfs.f_files - vfs.f_ffree);
		r->n_usage = 2;
	}
	*resp = &r->base;
	return GRPC_OK;
}

/*
 * nbdfuse learns the export's size when it connects, so a grown volume needs
 * the chain rebuilt: unmount (targets, staging), loop off, nbdfuse
 * restarted, loop on, mount again.  Refused while the file system is busy.
 */
static int admin_resize(struct csi_call *c, const char *vol, uint64_t size)
{
	Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
	Tessera__Admin__VolumeResize vr = TESSERA__ADMIN__VOLUME_RESIZE__INIT;
	Tessera__Admin__Response *r = NULL;
	int code;

	vr.name = (char *)vol;
	vr.size = size;
	req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_VOLUME_RESIZE;
	req.volume_resize = &vr;
	code = csi_admin_ok(c, &req, "volume resize", &r);
	if (r)
		tessera__admin__response__free_unpacked(r, NULL);
	return code;
}

static int chain_restart(struct csi_call *c, struct node_state *s, uint64_t grow_to)
{
	size_t i, unmounted = 0;
	int code = GRPC_OK;

	for (i = 0; i < s->ntargets; i++, unmounted++) {
		code = umount_path(c, s->targets[i].path);
		if (code)
			break;
	}
	if (code == GRPC_OK && !s->block)
		code = umount_path(c, s->staging);
	if (code) {
		char msg[sizeof(c->message)];

		memcpy(msg, c->message, sizeof(msg));
		for (i = 0; i < unmounted; i++) /* put back what we took away */
			bind_target(c, s, s->targets[i].path, s->targets[i].ro);
		return csi_fail(
		    c, GRPC_FAILED_PRECONDITION,
		    "the volume grew but its device "
		    "cannot: this node serves it through nbdfuse + loop, which must be "
		    "restarted, and the file system is busy (%s); retry when it is idle",
		    msg);
	}
	loop_stop(s);
	fuse_stop(s);
	if (grow_to) {
		/* tesserad grows detached volumes only: detach, resize, attach again */
		char why[512];
		bool detached = admin_detach(c, s->volume, why, sizeof(why)) == GRPC_OK;

		/* refused (other NBD clients hold it): still attached, served again below */
		code = detached ? admin_resize(c, s->volume, grow_to) :
				  csi_fail(c, GRPC_FAILED_PRECONDITION, "%s", why);
		if (detached && (code == GRPC_OK || code == GRPC_FAILED_PRECONDITION)) {
			char msg[sizeof(c->message)];
			int rc = code;

			memcpy(msg, c->message, sizeof(msg));
			code = admin_attach(c, s->volume, s->uri, sizeof(s->uri));
			if (code == GRPC_OK && rc)
				code = csi_fail(c, rc, "%s", msg);
		}
		if (code) {
			/* bring the volume back at its old size */
			char msg[sizeof(c->message)];
			int rc = code;

			memcpy(msg, c->message, sizeof(msg));
			if ((!detached ||
			     admin_attach(c, s->volume, s->uri, sizeof(s->uri)) == GRPC_OK) &&
			    fuse_start(c, s) == GRPC_OK && loop_start(c, s) == GRPC_OK &&
			    (s->block || fs_mount(c, s) == GRPC_OK))
				for (i = 0; i < s->ntargets; i++)
					bind_target(c, s, s->targets[i].path, s->targets[i].ro);
			state_save(c, s);
			return csi_fail(c, rc, "%s", msg);
		}
	}
	code = fuse_start(c, s);
	if (code == GRPC_OK)
		code = loop_start(c, s);
	if (code == GRPC_OK && !s->block && strcmp(s->fs, "ext4") == 0) {
		/*
		 * Unmounted anyway: grow ext4 offline (e2fsck -f first, as
		 * resize2fs asks), which needs no CAP_SYS_RESOURCE, unlike the
		 * online resize ioctl.
		 */
		char *fsck[] = {"e2fsck", "-f", "-p", s->device, NULL};
		char *grow[] = {"resize2fs", s->device, NULL};
		char err[512];
		int ret = csi_run(fsck, NULL, 0, err, sizeof(err));

		if (ret != 0 && ret != 1)
			code = csi_fail(c, GRPC_INTERNAL, "e2fsck %s exited with %d: %s", s->device,
					ret, err);
		else
			code = run(c, "grow file system", grow);
	}
	if (code == GRPC_OK && !s->block)
		code = fs_mount(c, s);
	for (i = 0; code == GRPC_OK && i < s->ntargets; i++)
		code = bind_target(c, s, s->targets[i].path, s->targets[i].ro);
	if (state_save(c, s) && code == GRPC_OK)
		code = c->code;
	return code;
}

int csi_node_expand_volume(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	const Csi__V1__NodeExpandVolumeRequest *req = (const void *)m;
	Csi__V1__NodeExpandVolumeResponse *r;
	struct node_state *s = csi_alloc(c, sizeof(*s));
	char key[CSI_NAME_MAX + 8];
	uint64_t want, have, grow_to = 0;
	int code = GRPC_OK;

	if (req->volume_id == NULL || req->volume_id[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_id is required");
	snprintf(c->volume, sizeof(c->volume), "%s", req->volume_id);
	if (req->volume_path == NULL || req->volume_path[0] == '\0')
		return csi_fail(c, GRPC_INVALID_ARGUMENT, "volume_path is required");
	snprintf(key, sizeof(key), "node:%s", req->volume_id);
	csi_key_lock(c->plugin, key);
	if (state_load(c->plugin, req->volume_id, s)) {
		code = csi_fail(c, GRPC_NOT_FOUND, "volume %s is not staged on this node",
				req->volume_id);
		goto out;
	}
	if (access(req->volume_path, F_OK)) {
		code = csi_fail(c, GRPC_NOT_FOUND, "volume_path %s: %s", req->volume_path,
				strerror(errno));
		goto out;
	}
	want = volume_size(c, s->volume);
	if (want == 0) {
		code = c->code ? c->code : csi_fail(c, GRPC_INTERNAL, "volume size unknown");
		goto out;
	}
	if (req->capacity_range && req->capacity_range->required_bytes > 0 &&
	    (uint64_t)req->capacity_range->required_bytes > want) {
		/* an attached volume: ControllerExpandVolume left the growing to us */
		if (csi_capacity(req->capacity_range->required_bytes,
				 req->capacity_range->limit_bytes, 0, &grow_to)) {
			code = csi_fail(c, GRPC_OUT_OF_RANGE,
					"capacity_range has no 4096-byte "
					"multiple");
			goto out;
		}
		want = grow_to;
	}
	have = device_size(s->device);
	if (have < want) {
		char *refresh[] = {"losetup", "-c", s->device, NULL};

		csi_run(refresh, NULL, 0, NULL, 0);
		have = device_size(s->device);
	}
	if (have < want) {
		code = chain_restart(c, s, grow_to);
		if (code)
			goto out;
		have = device_size(s->device);
	}
	if (!s->block) {
		char *ext4[] = {"resize2fs", s->device, NULL};
		char *xfs[] = {"xfs_growfs", s->staging, NULL};

		code = run(c, "grow file system", strcmp(s->fs, "xfs") ? ext4 : xfs);
		if (code)
			goto out;
	}
	r = csi_alloc(c, sizeof(*r));
	csi__v1__node_expand_volume_response__init(r);
	r->capacity_bytes = (int64_t)have;
	*resp = &r->base;
out:
	csi_key_unlock(c->plugin, key);
	return code;
}

/* ---- info, capabilities ------------------------------------------------ */

int csi_node_get_capabilities(struct csi_call *c, const ProtobufCMessage *m,
			      ProtobufCMessage **resp)
{
	static const Csi__V1__NodeServiceCapability__RPC__Type types[] = {
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__STAGE_UNSTAGE_VOLUME,
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__EXPAND_VOLUME,
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__GET_VOLUME_STATS,
	    CSI__V1__NODE_SERVICE_CAPABILITY__RPC__TYPE__VOLUME_CONDITION,
	};
	size_t n = sizeof(types) / sizeof(types[0]), i;
	Csi__V1__NodeGetCapabilitiesResponse *r = csi_alloc(c, sizeof(*r));

	csi__v1__node_get_capabilities_response__init(r);
	r->capabilities = csi_alloc(c, n * sizeof(*r->capabilities));
	for (i = 0; i < n; i++) {
		Csi__V1__NodeServiceCapability *cap = csi_alloc(c, sizeof(*cap));
		Csi__V1__NodeServiceCapability__RPC *rpc = csi_alloc(c, sizeof(*rpc));

		csi__v1__node_service_capability__init(cap);
		csi__v1__node_service_capability__rpc__init(rpc);
		rpc->type = types[i];
		cap->type_case = CSI__V1__NODE_SERVICE_CAPABILITY__TYPE_RPC;
		cap->rpc = rpc;
		r->capabilities[i] = cap;
	}
	r->n_capabilities = n;
	*resp = &r->base;
	return GRPC_OK;
}

int csi_node_get_info(struct csi_call *c, const ProtobufCMessage *m, ProtobufCMessage **resp)
{
	Csi__V1__NodeGetInfoResponse *r = csi_alloc(c, sizeof(*r));
	const char *zone = c->plugin->zone, *site = c->plugin->site;

	if (zone == NULL || site == NULL) {
		/* ask tesserad which zone and site this node was given */
		Tessera__Admin__Request req = TESSERA__ADMIN__REQUEST__INIT;
		Tessera__Admin__NodeList nl = TESSERA__ADMIN__NODE_LIST__INIT;
		Tessera__Admin__Response *ar = NULL;
		size_t i;

		req.command_case = TESSERA__ADMIN__REQUEST__COMMAND_NODE_LIST;
		req.node_list = &nl;
		if (csi_admin_ok(c, &req, "node list", &ar) == GRPC_OK) {
			for (i = 0; i < ar->n_nodes; i++) {
				if (strcmp(ar->nodes[i]->id, c->plugin->node_id))
					continue;
				if (zone == NULL)
					zone = csi_strdup(c, ar->nodes[i]->zone);
				if (site == NULL)
					site = csi_strdup(c, ar->nodes[i]->site);
			}
			tessera__admin__response__free_unpacked(ar, NULL);
		}
		c->code = GRPC_OK; /* standalone tesserad: the defaults */
	}
	csi__v1__node_get_info_response__init(r);
	r->node_id = csi_strdup(c, c->plugin->node_id);
	r->max_volumes_per_node = c->plugin->max_volumes;
	r->accessible_topology = csi_topology_new(c, zone, site);
	*resp = &r->base;
	return GRPC_OK;
}

/* ---- snapshots of volumes staged here ---------------------------------- */

void csi_node_sync(const struct csi_plugin *p, const char *vol)
{
	struct node_state *s;
	int fd;

	if (p->mode == CSI_MODE_CONTROLLER || p->state_dir == NULL)
		return;
	s = calloc(1, sizeof(*s));
	if (s == NULL)
		return;
	if (state_load(p, vol, s) == 0) {
		/* the file system's dirty pages and journal, then the loop device's */
		if (!s->block && is_mounted(s->staging)) {
			fd = open(s->staging, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (fd >= 0) {
				syncfs(fd);
				close(fd);
			}
		}
		if (s->device[0]) {
			fd = open(s->device, O_RDONLY | O_CLOEXEC);
			if (fd >= 0) {
				fsync(fd);
				close(fd);
			}
		}
	}
	free(s);
}
