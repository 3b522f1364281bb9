#include "alloc.h"

#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
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
#include <sanitizer/asan_interface.h>
void __sanitizer_purge_allocator(void);
#define SMALL_POISON(p, n) ASAN_POISON_MEMORY_REGION((p), (n))
#define SMALL_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION((p), (n))
#else
#define SMALL_POISON(p, n) ((void)(p), (void)(n))
#define SMALL_UNPOISON(p, n) ((void)(p), (void)(n))
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

/*
 * Small objects (alloc.h). A chunk is CHUNK bytes aligned to CHUNK, so an
 * object's chunk is its address with the low bits cleared; its header
 * holds the free slots (a list through the slots themselves), the count
 * in use and how far slots were ever carved (the pages past that are never
 * touched, so a fresh chunk costs RSS only as it fills). Chunks with a free
 * slot are on their class's list; a full one is on none until a slot of
 * it is freed.
 */
#define SMALL_GRAIN 8u
#define SMALL_CLASSES (WISP_SMALL_MAX / SMALL_GRAIN)
#define SMALL_CHUNK ((size_t)64 << 10)

struct small_chunk {
	struct small_chunk *prev, *next; /* in its class's list while it has room */
	void *free;                      /* freed slots */
	uint32_t live;                   /* slots in use */
	uint32_t top;                    /* offset of the first slot never carved */
	uint32_t slot;                   /* the class's size */
	bool listed;
};
#define SMALL_FIRST ((sizeof(struct small_chunk) + 15u) & ~(size_t)15u)

struct small_class {
	struct small_chunk *room;  /* chunks with a free or uncarved slot */
	struct small_chunk *spare; /* an empty chunk kept for the next */
};
static struct small_class small_classes[SMALL_CLASSES];

static void chunk_unlist(struct small_class *k, struct small_chunk *c)
{
	if (c->prev)
		c->prev->next = c->next;
	else
		k->room = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	c->listed = false;
}

static void chunk_list(struct small_class *k, struct small_chunk *c)
{
	c->prev = NULL;
	c->next = k->room;
	if (k->room)
		k->room->prev = c;
	k->room = c;
	c->listed = true;
}

/*
 * A chunk's memory. From mmap, over-mapped and trimmed to its alignment:
 * an aligned block from the C heap (posix_memalign) leaves a free fragment
 * before it whose header and footer pages are touched, which measured 28
 * bytes more per idle connection, not 32 fewer. Under ASan from the heap,
 * so that LeakSanitizer scans the objects in it for pointers to blocks.
 */
static struct small_chunk *chunk_map(void)
{
#ifdef WISP_ASAN
	void *p = NULL;
	return posix_memalign(&p, SMALL_CHUNK, SMALL_CHUNK) == 0 ? p : NULL;
#else
	char *p = mmap(NULL, 2 * SMALL_CHUNK, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uintptr_t at = ((uintptr_t)p + SMALL_CHUNK - 1) & ~(uintptr_t)(SMALL_CHUNK - 1);
	size_t head = (size_t)(at - (uintptr_t)p);
	if (head)
		munmap(p, head);
	munmap((char *)at + SMALL_CHUNK, SMALL_CHUNK - head);
	return (struct small_chunk *)at;
#endif
}

static void chunk_unmap(struct small_chunk *c)
{
#ifdef WISP_ASAN
	free(c);
#else
	munmap(c, SMALL_CHUNK);
#endif
}

static struct small_chunk *chunk_new(struct small_class *k, uint32_t slot)
{
	struct small_chunk *c = k->spare;
	if (c) {
		k->spare = NULL;
	} else {
		if (!(c = chunk_map()))
			return NULL;
		SMALL_POISON((char *)c + SMALL_FIRST, SMALL_CHUNK - SMALL_FIRST);
	}
	c->free = NULL;
	c->live = 0;
	c->top = (uint32_t)SMALL_FIRST;
	c->slot = slot;
	chunk_list(k, c);
	return c;
}

void *wisp_small_alloc(size_t size)
{
	if (size == 0 || size > WISP_SMALL_MAX)
		return wisp_malloc(size);
	size_t ci = (size - 1) / SMALL_GRAIN;
	uint32_t slot = (uint32_t)((ci + 1) * SMALL_GRAIN);
	if (should_fail(slot))
		return NULL;
	struct small_class *k = &small_classes[ci];
	struct small_chunk *c = k->room ? k->room : chunk_new(k, slot);
	if (!c)
		return NULL;
	char *p;
	if (c->free) {
		p = c->free;
		SMALL_UNPOISON(p, slot);
		memcpy(&c->free, p, sizeof c->free);
	} else {
		p = (char *)c + c->top;
		SMALL_UNPOISON(p, slot);
		c->top += slot;
	}
	c->live++;
	if (!c->free && c->top + slot > SMALL_CHUNK)
		chunk_unlist(k, c);
	used += slot;
	return p;
}

void *wisp_small_zalloc(size_t size)
{
	void *p = wisp_small_alloc(size);
	if (p)
		memset(p, 0, size);
	return p;
}

void wisp_small_free(void *ptr, size_t size)
{
	if (!ptr)
		return;
	if (size == 0 || size > WISP_SMALL_MAX) {
		wisp_free(ptr);
		return;
	}
	size_t ci = (size - 1) / SMALL_GRAIN;
	struct small_class *k = &small_classes[ci];
	struct small_chunk *c = (struct small_chunk *)((uintptr_t)ptr & ~(uintptr_t)(SMALL_CHUNK - 1));
	used -= c->slot;
	memcpy(ptr, &c->free, sizeof c->free);
	SMALL_POISON(ptr, c->slot);
	c->free = ptr;
	if (--c->live > 0) {
		if (!c->listed)
			chunk_list(k, c);
		return;
	}
	if (c->listed)
		chunk_unlist(k, c);
	if (!k->spare) {
		k->spare = c;
		return;
	}
	/* The header must be readable by the heap and by the next user. */
	SMALL_UNPOISON((char *)c + SMALL_FIRST, SMALL_CHUNK - SMALL_FIRST);
	chunk_unmap(c);
}

#ifndef WISP_ASAN
static size_t page_round(size_t size) { return (size + 4095u) & ~(size_t)4095u; }
#endif

void *wisp_table_zalloc(size_t size)
{
#ifndef WISP_ASAN
	if (size >= WISP_TABLE_MAP_MIN) {
		if (should_fail(size))
			return NULL;
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return NULL;
		used += page_round(size);
		return p;
	}
#endif
	return wisp_calloc(1, size);
}

void wisp_table_free(void *ptr, size_t size)
{
	if (!ptr)
		return;
#ifndef WISP_ASAN
	if (size >= WISP_TABLE_MAP_MIN) {
		used -= page_round(size);
		munmap(ptr, size);
		return;
	}
#endif
	wisp_free(ptr);
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
