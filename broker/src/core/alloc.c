#include "alloc.h"

#include <malloc.h>
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
static size_t limit;
static size_t untrimmed;
static uint64_t fail_countdown;
static int fail_sticky;

static int should_fail(size_t size)
{
	if (limit && used + size > limit)
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

int wisp_mem_charge(size_t bytes)
{
	if (limit && used + bytes > limit)
		return WISP_ENOMEM;
	used += bytes;
	return 0;
}

void wisp_mem_uncharge(size_t bytes)
{
	used -= bytes < used ? bytes : used;
	untrimmed += bytes;
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

size_t wisp_mem_used(void) { return used; }
void wisp_mem_set_limit(size_t bytes) { limit = bytes; }

void wisp_mem_fail_after(uint64_t n, int sticky)
{
	fail_countdown = n;
	fail_sticky = sticky;
}
