#include "alloc.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "err.h"

/* ASan owns the heap in sanitizer builds; malloc_trim would only trim
 * glibc's, which ASan does not use. */
#if defined(__SANITIZE_ADDRESS__)
#define WISP_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WISP_ASAN 1
#endif
#endif
#ifdef WISP_ASAN
void __sanitizer_purge_allocator(void);
#endif

/*
 * Accounting asks the C library for each block's usable size instead of
 * keeping a size header in front of it: a header would cost 16 bytes on
 * every allocation, several per connection. Linux-only, like the loop.
 */
static size_t used;
static _Atomic size_t tls_used; /* mbed TLS's blocks, from any thread */
static size_t limit;
static size_t untrimmed;
static uint64_t fail_countdown;
static int fail_sticky;

static int should_fail(size_t size)
{
	if (limit && used + atomic_load_explicit(&tls_used, memory_order_relaxed) + size > limit)
		return 1;
	if (fail_countdown) {
		if (fail_countdown == 1) {
			if (!fail_sticky)
				fail_countdown = 0;
			return 1;
		}
		fail_countdown--;
	}
	return 0;
}

void *wisp_malloc(size_t size)
{
	if (should_fail(size))
		return NULL;
	void *p = malloc(size ? size : 1);
	if (p)
		used += malloc_usable_size(p);
	return p;
}

void *wisp_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	if (should_fail(n * size))
		return NULL;
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p)
		used += malloc_usable_size(p);
	return p;
}

void *wisp_realloc(void *ptr, size_t size)
{
	if (!ptr)
		return wisp_malloc(size);
	size_t old = malloc_usable_size(ptr);
	if (size > old && should_fail(size - old))
		return NULL;
	void *p = realloc(ptr, size ? size : 1);
	if (!p)
		return NULL;
	used = used - old + malloc_usable_size(p);
	return p;
}

void wisp_free(void *ptr)
{
	if (!ptr)
		return;
	used -= malloc_usable_size(ptr);
	free(ptr);
}

char *wisp_strndup(const char *s, size_t len)
{
	char *p = wisp_malloc(len + 1);
	if (p) {
		memcpy(p, s, len);
		p[len] = '\0';
	}
	return p;
}

/* The thread that ran the constructors: the one main() and the loop run
 * on (the broker, the tools and the tests never move the loop). */
static pthread_t loop_thread;

__attribute__((constructor)) static void remember_loop_thread(void)
{
	loop_thread = pthread_self();
}

static bool on_loop_thread(void)
{
	return pthread_equal(pthread_self(), loop_thread) != 0;
}

/* Frees of blocks this large (mbed TLS's 16 KiB record buffers, the
 * handshake state) count towards the next trim; the small bignum churn of a
 * handshake would only make trims more frequent. */
#define TRIM_BLOCK_MIN 4096

void *wisp_tls_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	if (on_loop_thread() && should_fail(n * size))
		return NULL;
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (p)
		atomic_fetch_add_explicit(&tls_used, malloc_usable_size(p), memory_order_relaxed);
	return p;
}

void wisp_tls_free(void *ptr)
{
	if (!ptr)
		return;
	size_t n = malloc_usable_size(ptr);
	atomic_fetch_sub_explicit(&tls_used, n, memory_order_relaxed);
	if (n >= TRIM_BLOCK_MIN && on_loop_thread())
		untrimmed += n;
	free(ptr);
}

int wisp_mem_charge(size_t bytes)
{
	if (!wisp_mem_has_room(bytes))
		return WISP_ENOMEM;
	used += bytes;
	return 0;
}

void wisp_mem_uncharge(size_t bytes)
{
	used -= bytes < used ? bytes : used;
	untrimmed += bytes;
}

bool wisp_mem_has_room(size_t bytes)
{
	return !limit || used + atomic_load_explicit(&tls_used, memory_order_relaxed) + bytes <= limit;
}

bool wisp_mem_trim(size_t threshold)
{
	if (untrimmed == 0 || untrimmed < threshold)
		return false;
	untrimmed = 0;
#ifdef WISP_ASAN
	__sanitizer_purge_allocator();
#else
	malloc_trim(0);
#endif
	return true;
}

size_t wisp_mem_untrimmed(void) { return untrimmed; }

void wisp_mem_tune_large_blocks(void)
{
#ifndef WISP_ASAN
	mallopt(M_MMAP_THRESHOLD, (int)WISP_MEM_MMAP_MAX);
	mallopt(M_TRIM_THRESHOLD, (int)WISP_MEM_KEEP_FREE);
#endif
}

size_t wisp_mem_used(void) { return used + atomic_load_explicit(&tls_used, memory_order_relaxed); }
void wisp_mem_set_limit(size_t bytes) { limit = bytes; }

void wisp_mem_fail_after(uint64_t n, int sticky)
{
	fail_countdown = n;
	fail_sticky = sticky;
}
