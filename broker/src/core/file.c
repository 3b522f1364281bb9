#include "file.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

int wisp_read_file(const char *path, size_t max, char **out, size_t *len)
{
	*out = NULL;
	*len = 0;
	FILE *fp = fopen(path, "rbe");
	if (!fp)
		return WISP_ENOENT;
	char *buf = NULL;
	size_t n = 0, cap = 0;
	int rc = 0;
	for (;;) {
		if (n == cap) {
			if (cap >= max) {
				rc = WISP_ELIMIT;
				break;
			}
			cap = cap ? cap * 2 : 4096;
			if (cap > max)
				cap = max + 1; /* one byte more tells "larger than max" */
			char *nb = wisp_realloc(buf, cap);
			if (!nb) {
				rc = WISP_ENOMEM;
				break;
			}
			buf = nb;
		}
		size_t got = fread(buf + n, 1, cap - n, fp);
		n += got;
		if (got == 0) {
			if (ferror(fp))
				rc = WISP_EIO;
			break;
		}
	}
	int saved = errno;
	fclose(fp);
	errno = saved;
	if (rc == 0 && n > max)
		rc = WISP_ELIMIT;
	if (rc != 0) {
		if (buf)
			memset(buf, 0, n); /* it may have held secrets (password hashes) */
		wisp_free(buf);
		errno = saved;
		return rc;
	}
	*out = buf;
	*len = n;
	return 0;
}
