/*
 * nbd_hold: hold an NBD connection open until killed.
 *
 *   nbd_hold URI [READY_FILE]
 *
 * Connects with libnbd, reads the first block (so the export is really in
 * use), creates READY_FILE (when given) and waits for a signal.  Used by the
 * integration tests to keep a volume "in use" (e.g. delete must be refused).
 * Exit 0 on SIGTERM/SIGINT, 1 if the connection cannot be made.
 */
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include <libnbd.h>

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
	g_stop = 1;
}

int main(int argc, char **argv)
{
	struct nbd_handle *h;
	char buf[4096];
	int fd;

	if (argc < 2 || argc > 3) {
		fprintf(stderr, "usage: nbd_hold URI [READY_FILE]\n");
		return 2;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	h = nbd_create();
	if (!h || nbd_connect_uri(h, argv[1]) < 0 || nbd_pread(h, buf, sizeof(buf), 0, 0) < 0) {
		fprintf(stderr, "nbd_hold: %s: %s\n", argv[1], nbd_get_error());
		return 1;
	}
	if (argc == 3) {
		fd = open(argv[2], O_WRONLY | O_CREAT, 0644);
		if (fd >= 0)
			close(fd);
	}
	while (!g_stop)
		pause();
	nbd_shutdown(h, 0);
	nbd_close(h);
	return 0;
}
