/*
 * Logging: one line per event on stderr, "2026-11-25T23:10:01.123Z INFO worker0: ...".
 * The level is process-wide; the thread name is per thread.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tessera/common.h"

static enum tsr_log_level g_log_level = TSR_LOG_INFO;
static __thread char t_thread_name[16] = "main";

void tsr_log_set_level(enum tsr_log_level level)
{
	g_log_level = level;
}

void tsr_log_set_thread_name(const char *name)
{
	snprintf(t_thread_name, sizeof(t_thread_name), "%s", name);
}

void tsr_log(enum tsr_log_level level, const char *fmt, ...)
{
	static const char *const names[] = { "DEBUG", "INFO", "WARN", "ERROR" };
	char line[1024];
	struct timespec ts;
	struct tm tm;
	va_list ap;
	int n;

	if (level < g_log_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %s %s: ",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
		     tm.tm_sec, ts.tv_nsec / 1000000, names[level], t_thread_name);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	/* one write per line so lines of different threads never interleave */
	n = (int)strlen(line);
	line[n++] = '\n';
	fwrite(line, 1, (size_t)n, stderr);
}
