/*
 * Every heap allocation of the broker goes through here, so that memory in
 * use is counted (for $SYS and limits), a configured ceiling fails the
 * current operation instead of the process, and tests can inject failures.
 * Single-threaded: called from the loop thread only.
 */
#ifndef WISP_CORE_ALLOC_H
#define WISP_CORE_ALLOC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* NULL on failure, on reaching the limit, or when a test injects a fault. */
void *wisp_malloc(size_t size);
void *wisp_calloc(size_t n, size_t size);
void *wisp_realloc(void *ptr, size_t size);
void wisp_free(void *ptr);
/* A NUL-terminated copy of len bytes of s, or NULL. */
char *wisp_strndup(const char *s, size_t len);

/* Bytes currently allocated (usable sizes as the C library reports them). */
size_t wisp_mem_used(void);
/* 0 means unlimited. */
void wisp_mem_set_limit(size_t bytes);
/*
 * Memory a library allocates behind our back (mbed TLS, built without
 * MBEDTLS_PLATFORM_MEMORY): its owner charges an estimate before the
 * library allocates, so that it counts in wisp_mem_used and against the
 * limit. 0, or WISP_ENOMEM if the charge would pass the limit (nothing is
 * charged then). Uncharging counts towards the next trim.
 */
int wisp_mem_charge(size_t bytes);
void wisp_mem_uncharge(size_t bytes);
/*
 * Hands free heap pages back to the OS (malloc_trim; under ASan, its
 * allocator's purge) once at least `threshold` bytes were uncharged since
 * the last time: after a burst of TLS connections closes, the C heap keeps
 * their freed record buffers otherwise. True if it trimmed. The caller
 * calls it at most about once a second: a trim walks the whole heap.
 */
bool wisp_mem_trim(size_t threshold);
/* Bytes uncharged since the last trim. */
size_t wisp_mem_untrimmed(void);

/* Tests: make allocation number n (1-based, counted from now) and every one
 * after it fail if `sticky`; 0 turns injection off. */
void wisp_mem_fail_after(uint64_t n, int sticky);

#endif
