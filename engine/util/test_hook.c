/*
 * Test hooks shared by the layers (include/tessera/test_hook.h).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tessera/test_hook.h"

void tsr_test_hold_file(const char *env, bool mark_held)
{
	const char *path = getenv(env);
	char held[PATH_MAX];
	int fd;

	if (path == NULL || path[0] == '\0' || access(path, F_OK) != 0)
		return;
	if (mark_held) {
		snprintf(held, sizeof(held), "%s.held", path);
		fd = open(held, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
		if (fd >= 0)
			close(fd);
	}
	for (int i = 0; i < 3000 && access(path, F_OK) == 0; i++)
		usleep(10000);
}

bool tsr_test_env_on(const char *env)
{
	const char *v = getenv(env);

	return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

int tsr_test_env_ms(const char *env, int lo, int hi, int dflt)
{
	const char *v = getenv(env);
	char *end;
	long ms;

	if (v == NULL || v[0] == '\0')
		return dflt;
	ms = strtol(v, &end, 10);
	return *end == '\0' && ms >= lo && ms <= hi ? (int)ms : dflt;
}
