/*
 * faultfs: an LD_PRELOAD shim that makes a directory's disk fail on demand,
 * so tests can watch the broker meet a full or broken disk
 * (tests/e2e/11_hostile_disk.py).
 *
 *   FAULTFS_DIR  canonical path of the directory whose files fail (the
 *                store's data directory); other files (the broker's log on
 *                stderr, sockets) are never touched.
 *   FAULTFS_CTL  path of a control file. While it exists, each of its lines
 *                "write ERRNO" or "fsync ERRNO" (ERRNO: EIO, ENOSPC, EDQUOT)
 *                makes write() or fsync()/fdatasync() on such files fail
 *                with that errno, writing nothing. Removing the file ends
 *                the fault at once: the shim keeps no state.
 *
 * Every intercepted call reads the control file and /proc/self/fd, which is
 * slow and fine for tests. Built without sanitizers (it runs inside an ASan
 * broker): put the ASan runtime first in LD_PRELOAD, then this library; the
 * call chain is then broker -> ASan's interceptor -> faultfs -> libc.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

typedef ssize_t (*write_fn)(int, const void *, size_t);
typedef int (*sync_fn)(int);

static write_fn real_write;
static sync_fn real_fsync, real_fdatasync;

static void *next_symbol(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);
	if (p == NULL) {
		static const char msg[] = "faultfs: cannot find the next definition of a symbol\n";
		ssize_t (*w)(int, const void *, size_t) = (write_fn)dlsym(RTLD_DEFAULT, "write");
		if (w)
			(void)w(2, msg, sizeof msg - 1);
		abort();
	}
	return p;
}

static int errno_named(const char *s)
{
	if (strncmp(s, "ENOSPC", 6) == 0)
		return ENOSPC;
	if (strncmp(s, "EDQUOT", 6) == 0)
		return EDQUOT;
	if (strncmp(s, "EIO", 3) == 0)
		return EIO;
	return 0;
}

/* The errno `op` ("write" or "fsync") must fail with on fd now, or 0. */
static int fault_for(int fd, const char *op)
{
	const char *dir = getenv("FAULTFS_DIR");
	const char *ctl = getenv("FAULTFS_CTL");
	char buf[512], link[64], path[4096];
	int err = 0;

	if (dir == NULL || ctl == NULL || fd <= 2)
		return 0;
	int cfd = open(ctl, O_RDONLY | O_CLOEXEC);
	if (cfd == -1)
		return 0;
	ssize_t n = read(cfd, buf, sizeof buf - 1);
	close(cfd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	size_t oplen = strlen(op);
	for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
		if (strncmp(line, op, oplen) == 0 && line[oplen] == ' ') {
			err = errno_named(line + oplen + 1);
			break;
		}
	}
	if (err == 0)
		return 0;
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t k = readlink(link, path, sizeof path - 1);
	if (k <= 0)
		return 0;
	path[k] = '\0';
	size_t dlen = strlen(dir);
	if (strncmp(path, dir, dlen) != 0 || (path[dlen] != '/' && path[dlen] != '\0'))
		return 0;
	return err;
}

/* Resolved before main, so the store's helper thread never races on them. */
__attribute__((constructor)) static void faultfs_init(void)
{
	real_write = (write_fn)next_symbol("write");
	real_fsync = (sync_fn)next_symbol("fsync");
	real_fdatasync = (sync_fn)next_symbol("fdatasync");
}

ssize_t write(int fd, const void *buf, size_t len)
{
	int err = fault_for(fd, "write");
	if (err != 0) {
		errno = err;
		return -1;
	}
	return real_write(fd, buf, len);
}

int fsync(int fd)
{
	int err = fault_for(fd, "fsync");
	if (err != 0) {
		errno = err;
		return -1;
	}
	return real_fsync(fd);
}

int fdatasync(int fd)
{
	int err = fault_for(fd, "fsync");
	if (err != 0) {
		errno = err;
		return -1;
	}
	return real_fdatasync(fd);
}
