/*
 * Every heap allocation of the broker goes through here, so that memory in
 * use is counted (for $SYS and limits), a configured ceiling fails the
 * current operation instead of the process, and tests can inject failures.
 * Besides the C heap: headerless small objects (wisp_small_alloc) for what
 * every connection holds, and mapped doubling tables (wisp_table_zalloc),
 * both sized by the caller again at free (issue 18).
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

/*
 * Small objects the broker holds one or a few of per connection (struct
 * conn, struct session, a subscription, a topic-tree node): carved from
 * 64 KiB chunks in 8-byte size classes, with no per-object header. The C
 * heap puts an 8-byte header before each block and rounds it to 16 bytes,
 * 8 to 23 bytes on each of these (issue 18, docs/cost-connection.md); here
 * a 200-byte connection takes 200. The caller passes the same size to
 * wisp_small_free (its class is not stored); sizes over WISP_SMALL_MAX go
 * to the C heap. A chunk whose objects are all freed goes back to the heap
 * (one empty chunk per class is kept, so one connection coming and going
 * does not allocate a chunk each time). Counted, limited and failed like
 * wisp_malloc, by the class's size; the unused rest of a chunk is not
 * counted in wisp_mem_used. Loop thread only.
 */
#define WISP_SMALL_MAX 256u
void *wisp_small_alloc(size_t size);
/* Zeroed. */
void *wisp_small_zalloc(size_t size);
void wisp_small_free(void *ptr, size_t size);

/*
 * Tables that grow by doubling (the session hash, a topic level's child
 * table): from WISP_TABLE_MAP_MIN bytes on mapped apart, so that the table
 * a doubling replaces goes back to the OS when it is freed. From the C
 * heap (blocks under WISP_MEM_MMAP_MAX come from it) the predecessors of a
 * table stay resident once nothing reuses their space, and with the small
 * objects off the heap nothing does: a 256 KiB child table's predecessors,
 * 256 KiB together, were 13.8 bytes of every idle connection at 19,000
 * (issue 18, docs/cost-connection.md). Zeroed; the caller passes the size
 * again at free. Counted, limited and failed like wisp_malloc.
 */
#define WISP_TABLE_MAP_MIN ((size_t)64 << 10)
void *wisp_table_zalloc(size_t size);
void wisp_table_free(void *ptr, size_t size);

/* Bytes currently allocated (usable sizes as the C library reports them). */
size_t wisp_mem_used(void);
/* 0 means unlimited. */
void wisp_mem_set_limit(size_t bytes);
/*
 * mbed TLS's allocator. Debian's mbed TLS has no MBEDTLS_PLATFORM_MEMORY,
 * so the build links copies of its static archives whose calls to calloc
 * and free are renamed to these (cmake/FindMbedTLS.cmake). On the thread
 * that started the process (the loop) they count, fail and inject faults
 * like wisp_calloc; on a helper thread (password hashing) they count
 * without the limit check, since only the loop thread owns it: what mbed
 * TLS allocates there is a hash context for the length of one call.
 * Counted with an atomic, so a block may be freed on another thread.
 */
void *wisp_tls_calloc(size_t n, size_t size);
void wisp_tls_free(void *ptr);
/*
 * Memory a library allocates behind our back with no way to route it here
 * (a library context from malloc): its owner charges an estimate
 * before the library allocates, so that it counts in wisp_mem_used and
 * against the limit. 0, or WISP_ENOMEM if the charge would pass the limit
 * (nothing is charged then). Uncharging counts towards the next trim.
 */
int wisp_mem_charge(size_t bytes);
void wisp_mem_uncharge(size_t bytes);
/* True if `bytes` more would stay within memory_limit (or there is none):
 * lets a caller refuse work it cannot finish before starting it. */
bool wisp_mem_has_room(size_t bytes);

/*
 * Hands free heap pages back to the OS (malloc_trim; under ASan, its
 * allocator's purge) once at least `threshold` bytes were freed by mbed TLS
 * in large blocks (record buffers) or uncharged since the last time: after a burst of TLS
 * connections closes, the C heap keeps them otherwise. True if it trimmed.
 * The caller calls it at most about once a second: a trim walks the heap.
 */
bool wisp_mem_trim(size_t threshold);
/* Bytes freed in large mbed TLS blocks or uncharged since the last trim. */
size_t wisp_mem_untrimmed(void);

/*
 * Fixes the C library's thresholds for large blocks (call once, before
 * the loop runs): blocks up to WISP_MEM_MMAP_MAX come from the heap, and
 * free() keeps up to WISP_MEM_KEEP_FREE bytes of free heap top for the
 * next ones instead of handing each back to the OS. glibc's own dynamic
 * thresholds otherwise return a large message's pages when it is freed and
 * fault fresh ones in for the next (measured: a third of the broker's CPU
 * per 1 MiB message). What the heap keeps beyond that still goes back
 * through free() past the threshold, and through wisp_mem_trim.
 */
void wisp_mem_tune_large_blocks(void);
#define WISP_MEM_MMAP_MAX (32u << 20)
#define WISP_MEM_KEEP_FREE (16u << 20)

/* Tests: make allocation number n (1-based, counted from now) and every one
 * after it fail if `sticky`; 0 turns injection off. */
void wisp_mem_fail_after(uint64_t n, int sticky);

#endif
