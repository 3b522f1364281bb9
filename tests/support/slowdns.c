/*
 * slowdns: an LD_PRELOAD shim that makes some host names resolve slowly,
 * so tests can watch the broker while a name server does not answer
 * (tests/e2e/27_bridge.py: a bridge whose name hangs must not stall the
 * broker's clients).
 *
 *   SLOWDNS_SUFFIX   names ending in it hang (e.g. ".slow.invalid"); every
 *                    other name goes to the real getaddrinfo().
 *   SLOWDNS_LOG      a file that gets the line "resolving NAME" when such
 *                    a lookup starts, so the test waits for that event.
 *   SLOWDNS_RELEASE  while this file does not exist the lookup hangs
 *                    (polled every 10 ms, at most 60 s); then it fails
 *                    with EAI_NONAME, as a dead name does.
 *
 * Built without sanitizers (it runs inside an ASan broker): put the ASan
 * runtime first in LD_PRELOAD, then this library; the call chain is then
 * broker -> ASan's interceptor -> slowdns -> libc.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef int (*gai_fn)(const char *, const char *, const struct addrinfo *, struct addrinfo **);

static int hangs(const char *node)
{
	const char *suffix = getenv("SLOWDNS_SUFFIX");
	if (!node || !suffix || !*suffix)
		return 0;
	size_t n = strlen(node), s = strlen(suffix);
	return n >= s && strcmp(node + n - s, suffix) == 0;
}

static void note(const char *node)
{
	const char *path = getenv("SLOWDNS_LOG");
	if (!path)
		return;
	int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
	if (fd < 0)
		return;
	char line[512];
	int len = snprintf(line, sizeof line, "resolving %s\n", node);
	if (len > 0 && (size_t)len < sizeof line && write(fd, line, (size_t)len) < 0)
		len = 0;
	close(fd);
}

int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res)
{
	if (!hangs(node)) {
		gai_fn real = (gai_fn)dlsym(RTLD_NEXT, "getaddrinfo");
		if (!real)
			abort();
		return real(node, service, hints, res);
	}
	note(node);
	const char *release = getenv("SLOWDNS_RELEASE");
	struct timespec ten_ms = {0, 10 * 1000 * 1000};
	for (int i = 0; i < 6000 && release && access(release, F_OK) != 0; i++)
		nanosleep(&ten_ms, NULL);
	return EAI_NONAME;
}
