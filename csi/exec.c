/*
 * External commands for the node service (mkfs, mount, losetup, nbdfuse...):
 * fork + execvp, never a shell, with stdout and stderr captured so that a
 * failure reaches the CO with the tool's own words.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

static void trim(char *s)
{
	size_t n = strlen(s);

	while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
		s[--n] = '\0';
}

int csi_run(char *const argv[], char *out, size_t out_len, char *err, size_t err_len)
{
	int po[2] = {-1, -1}, pe[2] = {-1, -1}, status, ret;
	size_t no = 0, ne = 0;
	pid_t pid;
	struct pollfd pfd[2];

	if (out && out_len)
		out[0] = '\0';
	if (err && err_len)
		err[0] = '\0';
	if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
		ret = -errno;
		goto close_pipes;
	}
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		goto close_pipes;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(po[1], 1);
		dup2(pe[1], 2);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		dprintf(2, "cannot run %s: %s", argv[0], strerror(errno));
		_exit(127);
	}
	close(po[1]);
	close(pe[1]);
	po[1] = pe[1] = -1;
	pfd[0].fd = po[0];
	pfd[1].fd = pe[0];
	pfd[0].events = pfd[1].events = POLLIN;
	while (pfd[0].fd >= 0 || pfd[1].fd >= 0) {
		char buf[4096];
		int i;

		if (poll(pfd, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		for (i = 0; i < 2; i++) {
			ssize_t r;
			char *dst = i == 0 ? out : err;
			size_t cap = i == 0 ? out_len : err_len, *used = i == 0 ? &no : &ne;

			if (pfd[i].fd < 0 || !(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
				continue;
			r = read(pfd[i].fd, buf, sizeof(buf));
			if (r <= 0) {
				if (r < 0 && errno == EINTR)
					continue;
				pfd[i].fd = -1;
				continue;
			}
			if (dst && cap > *used + 1) {
				size_t take =
				    (size_t)r < cap - 1 - *used ? (size_t)r : cap - 1 - *used;

				memcpy(dst + *used, buf, take);
				*used += take;
				dst[*used] = '\0';
			}
		}
	}
	while (waitpid(pid, &status, 0) < 0) {
		if (errno != EINTR) {
			ret = -errno;
			goto close_pipes;
		}
	}
	if (out)
		trim(out);
	if (err)
		trim(err);
	ret = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
close_pipes:
	for (int i = 0; i < 2; i++) {
		if (po[i] >= 0)
			close(po[i]);
		if (pe[i] >= 0)
			close(pe[i]);
	}
	return ret;
}

int csi_spawn(char *const argv[], const char *log_path, int *pid_out)
{
	int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	pid_t pid;

	if (logfd < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		int e = errno;

		close(logfd);
		return -e;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		setsid();
		if (devnull >= 0)
			dup2(devnull, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		signal(SIGPIPE, SIG_DFL);
		execvp(argv[0], argv);
		dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(logfd);
	*pid_out = pid;
	return 0;
}
