#include "alloc.h"

#include <stdlib.h>
#include <string.h>

/*
 * A size header in front of each block lets wisp_free account without
 * malloc_usable_size (which is not portable and over-reports). 16 bytes keep
 * the block max_align_t-aligned.
 */
#define HDR 16
_Static_assert(HDR >= sizeof(size_t) && HDR % _Alignof(max_align_t) == 0, "header keeps alignment");

static size_t used;
static size_t limit;
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
	if (size > SIZE_MAX - HDR || should_fail(size))
		return NULL;
	unsigned char *p = malloc(size + HDR);
	if (!p)
		return NULL;
	memcpy(p, &size, sizeof size);
	used += size;
	return p + HDR;
}

void *wisp_calloc(size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size)
		return NULL;
	void *p = wisp_malloc(n * size);
	if (p)
		memset(p, 0, n * size);
	return p;
}

void *wisp_realloc(void *ptr, size_t size)
{
	if (!ptr)
		return wisp_malloc(size);
	unsigned char *base = (unsigned char *)ptr - HDR;
	size_t old;
	memcpy(&old, base, sizeof old);
	if (size > SIZE_MAX - HDR || (size > old && should_fail(size - old)))
		return NULL;
	unsigned char *p = realloc(base, size + HDR);
	if (!p)
		return NULL;
	memcpy(p, &size, sizeof size);
	used = used - old + size;
	return p + HDR;
}

void wisp_free(void *ptr)
{
	if (!ptr)
		return;
	unsigned char *base = (unsigned char *)ptr - HDR;
	size_t size;
	memcpy(&size, base, sizeof size);
	used -= size;
	free(base);
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

size_t wisp_mem_used(void) { return used; }
void wisp_mem_set_limit(size_t bytes) { limit = bytes; }

void wisp_mem_fail_after(uint64_t n, int sticky)
{
	fail_countdown = n;
	fail_sticky = sticky;
}
