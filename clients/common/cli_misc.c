/*
 * Topic matching and signal plumbing for the client tools; see cli_misc.h.
 */
#include "cli_misc.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "list.h"

bool cli_topic_matches(const char *filter, const char *topic, size_t tlen)
{
	if (tlen && topic[0] == '$' && (filter[0] == '+' || filter[0] == '#'))
		return false;
	const char *f = filter, *t = topic, *tend = topic + tlen;
	/* One pass per level; both strings get shorter every turn. */
	for (;;) {
		const char *fe = strchr(f, '/');
		size_t fl = fe ? (size_t)(fe - f) : strlen(f);
		if (fl == 1 && f[0] == '#')
			return true;
		const char *te = memchr(t, '/', (size_t)(tend - t));
		size_t tl = te ? (size_t)(te - t) : (size_t)(tend - t);
		bool plus = fl == 1 && f[0] == '+';
		if (!plus && (fl != tl || memcmp(f, t, fl) != 0))
			return false;
		if (!fe)
			return !te;
		if (!te) /* "a/#" also matches "a" [MQTT-4.7.1-2] */
			return strcmp(fe + 1, "#") == 0;
		f = fe + 1;
		t = te + 1;
	}
}

static void on_signalfd(struct loop *l, struct loop_io *io, uint32_t events)
{
	(void)l;
	(void)events;
	struct cli_signals *s = container_of(io, struct cli_signals, io);
	struct signalfd_siginfo si;
	for (int i = 0; i < 16; i++) {
		ssize_t n = read(io->fd, &si, sizeof si);
		if (n != (ssize_t)sizeof si)
			return;
		s->cb((int)si.ssi_signo, s->ud);
	}
}

int cli_signals_start(struct cli_signals *s, struct loop *l, cli_signal_fn cb, void *ud)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGALRM);
	signal(SIGPIPE, SIG_IGN);
	if (sigprocmask(SIG_BLOCK, &set, NULL) == -1)
		return -1;
	int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd == -1)
		return -1;
	s->cb = cb;
	s->ud = ud;
	if (loop_io_start(l, &s->io, fd, LOOP_READ, on_signalfd) != 0) {
		close(fd);
		return -1;
	}
	return 0;
}

void cli_signals_stop(struct cli_signals *s, struct loop *l)
{
	loop_io_stop(l, &s->io);
	close(s->io.fd);
}
