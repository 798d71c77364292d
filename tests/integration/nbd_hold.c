/*
 * nbd_hold: hold an NBD connection open until killed.
 *
 *   nbd_hold URI [READY_FILE [watch]]
 *
 * Connects with libnbd, reads the first block (so the export is really in
 * use), creates READY_FILE (when given) and waits for a signal.  Used by the
 * integration tests to keep a volume "in use" (e.g. delete must be refused).
 * Exit 0 on SIGTERM/SIGINT, 1 if the connection cannot be made.
 *
 * watch: the client also watches its connection and acts on SIGUSR1, each
 * step appended as a line to READY_FILE.log:
 *   SIGUSR1: write block 1 (4096 bytes at 4096) filled with byte 0x41 + N
 *     (N: 0, 1, ... per SIGUSR1) with FUA, read it back and compare:
 *     "write N 0xBB ok" (acknowledged and read back) or "write N failed: ...";
 *   the server ends the connection: "closed", exit 3.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <libnbd.h>

static volatile sig_atomic_t g_stop, g_writes_asked;

static void on_signal(int sig)
{
	g_stop = 1;
}

static void on_usr1(int sig)
{
	g_writes_asked++;
}

/* Append one line to the log (READY_FILE.log). */
static void note(const char *log, const char *line)
{
	FILE *f = fopen(log, "a");

	if (f) {
		fprintf(f, "%s\n", line);
		fclose(f);
	}
}

/* watch mode: until SIGTERM/SIGINT (0) or the connection ends (3). */
static int watch(struct nbd_handle *h, const char *log)
{
	static char out[4096], in[4096];
	char line[512];
	int done = 0;

	while (!g_stop) {
		while (done < g_writes_asked) {
			unsigned char b = (unsigned char)(0x41 + done % 26);

			memset(out, b, sizeof(out));
			if (nbd_pwrite(h, out, sizeof(out), 4096, LIBNBD_CMD_FLAG_FUA) < 0 ||
			    nbd_pread(h, in, sizeof(in), 4096, 0) < 0)
				snprintf(line, sizeof(line), "write %d failed: %s", done,
					 nbd_get_error());
			else if (memcmp(in, out, sizeof(in)) != 0)
				snprintf(line, sizeof(line), "write %d failed: read back differs",
					 done);
			else
				snprintf(line, sizeof(line), "write %d 0x%02x ok", done, b);
			note(log, line);
			done++;
		}
		if (nbd_aio_is_closed(h) || nbd_aio_is_dead(h)) {
			note(log, "closed");
			return 3;
		}
		/* a signal ends the wait early (EINTR: 0 or -1, then checked) */
		nbd_poll(h, 100);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct nbd_handle *h;
	char buf[4096];
	int fd;

	if (argc < 2 || argc > 4 || (argc == 4 && strcmp(argv[3], "watch") != 0)) {
		fprintf(stderr, "usage: nbd_hold URI [READY_FILE [watch]]\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGUSR1, on_usr1);
	h = nbd_create();
	if (!h || nbd_connect_uri(h, argv[1]) < 0 || nbd_pread(h, buf, sizeof(buf), 0, 0) < 0) {
		fprintf(stderr, "nbd_hold: %s: %s\n", argv[1], nbd_get_error());
		return 1;
	}
	if (argc >= 3) {
		fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
		if (fd >= 0)
			close(fd);
	}
	if (argc == 4) {
		char log[4096];
		int rc;

		snprintf(log, sizeof(log), "%s.log", argv[2]);
		rc = watch(h, log);
		if (rc) {
			nbd_close(h);
			return rc;
		}
	}
	while (!g_stop)
		pause();
	nbd_shutdown(h, 0);
	nbd_close(h);
	return 0;
}
