/*
 * Tests: the log (stderr) into a file between log_begin and log_end, to
 * assert on the lines logged (site_tls_ut, site_server_ut).  Include after
 * cmocka.h.
 */
#ifndef TSR_TEST_LOG_CAPTURE_H
#define TSR_TEST_LOG_CAPTURE_H

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

struct log_capture {
	int saved, fd;
};

/* The capture going on, if any (a copy: log_capture_abort runs after
 * the test's frame is gone). */
static struct log_capture log_capture_cur = {-1, -1};

/* From here the log goes to path (created or emptied). */
static inline void log_begin(struct log_capture *lc, const char *path)
{
	lc->fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(lc->fd >= 0);
	fflush(stderr);
	lc->saved = dup(2);
	dup2(lc->fd, 2);
	log_capture_cur = *lc;
}

/* What was logged so far (up to loglen - 1 bytes), the capture going on. */
static inline void log_peek(struct log_capture *lc, char *log, size_t loglen)
{
	ssize_t n;

	fflush(stderr);
	n = pread(lc->fd, log, loglen - 1, 0);
	log[n > 0 ? n : 0] = '\0';
}

/* The lines logged since log_begin, also shown in the test output. */
static inline void log_end(struct log_capture *lc, char *log, size_t loglen)
{
	log_peek(lc, log, loglen);
	dup2(lc->saved, 2);
	close(lc->saved);
	close(lc->fd);
	log_capture_cur.fd = -1;
	fprintf(stderr, "%s", log);
}

/* For a teardown: a capture a failed assertion left going is ended, and
 * what it caught (the failure's message with it) shown. */
static inline void log_capture_abort(void)
{
	static char log[1 << 16];
	struct log_capture lc = log_capture_cur;

	if (lc.fd >= 0)
		log_end(&lc, log, sizeof(log));
}

#endif
