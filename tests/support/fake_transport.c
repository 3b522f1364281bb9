#include "fake_transport.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

static int fake_handshake(struct transport *t)
{
	(void)t;
	return 0;
}

static ssize_t fake_read(struct transport *t, void *buf, size_t len)
{
	struct fake_transport *f = (struct fake_transport *)t;
	f->read_calls++;
	size_t left = f->input_len - f->input_off;
	if (left == 0) {
		t->want = TRANSPORT_WANT_READ;
		return WISP_EAGAIN;
	}
	size_t n = len < left ? len : left;
	if (f->read_per_call && n > f->read_per_call)
		n = f->read_per_call;
	memcpy(buf, f->input + f->input_off, n);
	f->input_off += n;
	t->want = !f->read_per_call && n < len ? TRANSPORT_WANT_READ : 0;
	return (ssize_t)n;
}

static ssize_t fake_writev(struct transport *t, const struct iovec *iov, int iovcnt)
{
	struct fake_transport *f = (struct fake_transport *)t;
	size_t total = 0, asked = 0;
	size_t cap = f->per_call && f->per_call < f->accept_limit ? f->per_call : f->accept_limit;
	f->writev_calls++;
	f->last_iovcnt = iovcnt;
	for (int i = 0; i < iovcnt; i++)
		asked += iov[i].iov_len;
	for (int i = 0; i < iovcnt; i++) {
		size_t n = iov[i].iov_len;
		if (n > cap - total)
			n = cap - total;
		if (n == 0) {
			if (total == cap)
				break;
			continue;
		}
		uint8_t *w = realloc(f->written, f->written_len + n);
		if (!w)
			abort();
		f->written = w;
		memcpy(f->written + f->written_len, iov[i].iov_base, n);
		f->written_len += n;
		total += n;
	}
	if (f->accept_limit != SIZE_MAX)
		f->accept_limit -= total;
	if (total == 0 && asked > 0) {
		t->want = TRANSPORT_WANT_WRITE;
		return WISP_EAGAIN;
	}
	/* Short because the "socket" is full: say so. Short because of
	 * per_call: a record transport, call again. */
	t->want = total < asked && f->accept_limit == 0 ? TRANSPORT_WANT_WRITE : 0;
	return (ssize_t)total;
}

static size_t fake_pending(struct transport *t)
{
	(void)t;
	return 0;
}

static void fake_close(struct transport *t)
{
	struct fake_transport *f = (struct fake_transport *)t;
	free(f->written);
	free(f);
}

static const struct transport_ops fake_ops = {
	.name = "fake",
	.handshake = fake_handshake,
	.read = fake_read,
	.writev = fake_writev,
	.pending = fake_pending,
	.close = fake_close,
};

struct fake_transport *fake_transport_new(void)
{
	struct fake_transport *f = calloc(1, sizeof *f);
	if (!f)
		abort();
	f->base.ops = &fake_ops;
	f->base.fd = -1;
	f->accept_limit = SIZE_MAX;
	return f;
}

void fake_transport_reset(struct fake_transport *f)
{
	free(f->written);
	f->written = NULL;
	f->written_len = 0;
}
