#include "conn.h"

#include <stdio.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

struct conn *conn_new(struct conn_set *set, struct transport *t, void *listener, const char *peer)
{
	struct conn *c = wisp_calloc(1, sizeof *c);
	if (!c) {
		transport_close(t);
		return NULL;
	}
	c->t = t;
	c->set = set;
	c->listener = listener;
	c->io.fd = t->fd;
	c->state = CONN_HANDSHAKE;
	outq_init(&c->out);
	list_init(&c->work_link);
	list_init(&c->read_link);
	list_init(&c->timer.link);
	snprintf(c->peer, sizeof c->peer, "%s", peer);
	list_push_back(&set->all, &c->all_link);
	set->count++;
	return c;
}

void conn_mark_dirty(struct conn *c)
{
	if (c->state != CONN_CLOSING && !list_linked(&c->work_link))
		list_push_back(&c->set->dirty, &c->work_link);
}

int conn_send_bytes(struct conn *c, const uint8_t *bytes, size_t len)
{
	if (c->state == CONN_CLOSING)
		return WISP_ECLOSED;
	int rc = outq_push_bytes(&c->out, bytes, len);
	if (rc == 0)
		conn_mark_dirty(c);
	return rc;
}

int conn_send_publish(struct conn *c, struct msg *m, uint8_t qos, bool retain, bool dup,
		      uint16_t packet_id)
{
	if (c->state == CONN_CLOSING)
		return WISP_ECLOSED;
	int rc = outq_push_publish(&c->out, m, c->version, qos, retain, dup, packet_id);
	if (rc == 0)
		conn_mark_dirty(c);
	return rc;
}

void conn_close(struct loop *l, struct conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	c->state = CONN_CLOSING;
	loop_io_stop(l, &c->io);
	loop_timer_stop(l, &c->timer);
	if (list_linked(&c->work_link))
		list_remove(&c->work_link);
	list_push_back(&c->set->closing, &c->work_link);
	if (list_linked(&c->read_link))
		list_remove(&c->read_link);
}

void conn_free(struct conn *c)
{
	if (list_linked(&c->work_link))
		list_remove(&c->work_link);
	list_remove(&c->all_link);
	c->set->count--;
	outq_clear(&c->out);
	msg_unref(c->will);
	wisp_free(c->rbuf);
	transport_close(c->t);
	wisp_free(c);
}
