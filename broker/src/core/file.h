/*
 * Reading a whole configuration-sized file (configuration, password file,
 * ACL) into memory, bounded so a wrong path to a huge file cannot exhaust
 * memory. Loop thread or start-up only: it blocks on the disk.
 */
#ifndef WISP_CORE_FILE_H
#define WISP_CORE_FILE_H

#include <stddef.h>

/*
 * Reads `path` into a wisp_malloc'd buffer: *out (NULL for an empty file;
 * caller frees with wisp_free) and *len. Returns 0; WISP_ENOENT when the
 * file cannot be opened and WISP_EIO when it cannot be read (errno says
 * why in both cases); WISP_ELIMIT when it is larger than `max` bytes;
 * WISP_ENOMEM. Nothing is allocated on failure.
 */
int wisp_read_file(const char *path, size_t max, char **out, size_t *len);

#endif
