/*
 * Test hooks shared by the layers (engine/util/test_hook.c): environment
 * switches a test sets on tesserad; unset, they cost a getenv.
 */
#ifndef TESSERA_TEST_HOOK_H
#define TESSERA_TEST_HOOK_H

#include <stdbool.h>

/*
 * Tests only: while the file named by $env exists (30 s at most), wait
 * (polled every 10 ms).  mark_held: FILE.held is made when the wait starts,
 * so that the test knows the call is held.  $env unset or empty, or no such
 * file: returns at once.
 */
void tsr_test_hold_file(const char *env, bool mark_held);

/* Tests only: $env set, not empty and not "0". */
bool tsr_test_env_on(const char *env);

/* Tests only: $env as a number of milliseconds when it lies in [lo, hi],
 * else dflt (unset, empty, not a number, out of range). */
int tsr_test_env_ms(const char *env, int lo, int hi, int dflt);

#endif
