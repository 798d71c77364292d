/*
 * Private header of the tessera CLI (tools/tessera/).
 *   tessera.c  option parsing, the volume and status commands, output (text or JSON)
 *   demo.c     `tessera demo`: tesserad + a volume + tessera-bench, end to end
 */
#ifndef TESSERA_CLI_H
#define TESSERA_CLI_H

#include <stdbool.h>

#include "tessera/admin.h"

/* Exit codes. */
#define EXIT_FAIL 1   /* the operation failed; a message says why */
#define EXIT_USAGE 2  /* the command line is wrong */

#define CLI_TIMEOUT_MS 60000 /* longest wait for a tesserad reply */

/* Global options, before or after the command. */
struct cli {
	const char *data_dir;   /* --data, $TESSERA_DATA or /var/lib/tessera */
	bool data_explicit;     /* --data was given on the command line */
	const char *cluster;    /* --cluster HOST:PORT, or NULL: the unix socket in data_dir */
	const char *token;      /* --token */
	const char *token_file; /* --token-file */
	bool json;              /* --json: one JSON object on stdout */
};

/* Print "tessera: MESSAGE" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Connect as the global options say; on failure print why and return EXIT_FAIL. */
int cli_connect(const struct cli *cli, struct tsr_admin_client **out);
/*
 * One request/reply; on a failed call or an error reply print the message and
 * return EXIT_FAIL (*resp NULL); else 0 with *resp to free with
 * tessera__admin__response__free_unpacked.
 */
int cli_call(const struct cli *cli, struct tsr_admin_client *c, Tessera__Admin__Request *req,
	     Tessera__Admin__Response **resp);

/* The status report as `tessera status` prints it (text). */
void cli_print_status(const Tessera__Admin__Status *s);

/* tessera demo ARGS (argv[0] is "demo"); returns the exit code. */
int cli_demo(struct cli *cli, int argc, char **argv);

#endif
