/*
 * Every heap allocation of the broker goes through here, so that memory in
 * use is counted (for $SYS and limits), a configured ceiling fails the
 * current operation instead of the process, and tests can inject failures.
 * Single-threaded: called from the loop thread only.
 */
#ifndef WISP_CORE_ALLOC_H
#define WISP_CORE_ALLOC_H

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
/* Tests: make allocation number n (1-based, counted from now) and every one
 * after it fail if `sticky`; 0 turns injection off. */
void wisp_mem_fail_after(uint64_t n, int sticky);

#endif
