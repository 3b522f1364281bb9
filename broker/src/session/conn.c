#include "conn.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <unistd.h>
#include <string.h>

#include "alloc.h"
#include "err.h"

void conn_addr_set(struct conn_addr *a, const struct sockaddr *sa)
{
	memset(a, 0, sizeof *a);
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
		a->family = AF_INET;
		a->port = ntohs(in->sin_port);
		memcpy(a->addr, &in->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
		a->family = AF_INET6;
		a->port = ntohs(in6->sin6_port);
		memcpy(a->addr, &in6->sin6_addr, 16);
	}
}

const char *conn_format_addr(const struct conn_addr *a)
{
	static char bufs[4][INET6_ADDRSTRLEN + 10];
	static unsigned next;
	char *buf = bufs[next++ % 4];
	char host[INET6_ADDRSTRLEN] = "?";
	if (a->family == AF_INET || a->family == AF_INET6)
		inet_ntop(a->family, a->addr, host, sizeof host);
	snprintf(buf, sizeof bufs[0], a->family == AF_INET6 ? "[%s]:%u" : "%s:%u", host, a->port);
	return buf;
}

const char *conn_peer(const struct conn *c) { return conn_format_addr(&c->peer); }

struct conn *conn_new(struct conn_origin *origin, struct transport *t, int fd, const struct sockaddr *peer)
{
	struct conn_set *set = origin->set;
	struct conn *c = wisp_small_zalloc(sizeof *c);
	if (!c) {
		if (t)
			transport_close(t);
		else
			close(fd);
		return NULL;
	}
	if (t) {
		c->tr.ext = t;
		c->ext_transport = true;
	} else {
		tcp_transport_init(&c->tr.tcp, fd);
	}
	c->origin = origin;
	c->io.fd = conn_t(c)->fd;
	c->state = CONN_HANDSHAKE;
	outq_init(&c->out);
	list_init(&c->work_link);
	list_init(&c->read_link);
	list_init(&c->timer.link);
	conn_addr_set(&c->peer, peer);
	list_push_back(&set->all, &c->all_link);
	set->count++;
	return c;
}

void conn_mark_dirty(struct conn *c)
{
	if (c->state != CONN_CLOSING && !list_linked(&c->work_link))
		list_push_back(&conn_set_of(c)->dirty, &c->work_link);
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

int conn_send_publish(struct conn *c, struct msg *m, const struct outq_delivery *d)
{
	if (c->state == CONN_CLOSING)
		return WISP_ECLOSED;
	int rc = outq_push_publish(&c->out, m, c->version, d);
	if (rc == 0)
		conn_mark_dirty(c);
	return rc;
}

static bool is_unauthenticated(const struct conn *c)
{
	return c->state == CONN_HANDSHAKE || c->state == CONN_AWAIT_CONNECT;
}

void conn_unauth_release(struct conn *c)
{
	if (c->input_counted) {
		conn_set_of(c)->unauth_bytes -= conn_rcap(c);
		c->input_counted = false;
	}
}

void conn_account_rbuf(struct conn *c, size_t new_cap)
{
	conn_set_of(c)->input_bytes = conn_set_of(c)->input_bytes - conn_rcap(c) + new_cap;
	conn_unauth_release(c);
	if (is_unauthenticated(c)) {
		conn_set_of(c)->unauth_bytes += new_cap;
		c->input_counted = true;
	}
}

void conn_close(struct loop *l, struct conn *c)
{
	if (c->state == CONN_CLOSING)
		return;
	conn_unauth_release(c); /* going away: no longer counted */
	c->state = CONN_CLOSING;
	loop_io_stop(l, &c->io);
	loop_timer_stop(l, &c->timer);
	if (list_linked(&c->work_link))
		list_remove(&c->work_link);
	list_push_back(&conn_set_of(c)->closing, &c->work_link);
	if (list_linked(&c->read_link))
		list_remove(&c->read_link);
}

struct conn_rare *conn_rare(struct conn *c)
{
	if (!c->rare) {
		c->rare = wisp_malloc(sizeof *c->rare);
		if (c->rare)
			memset(c->rare, 0, sizeof *c->rare);
	}
	return c->rare;
}

void conn_rare_trim(struct conn *c)
{
	struct conn_rare *r = c->rare;
	if (r && !r->will && !r->auth_job && !r->gate_held_acks && !r->held_acks &&
	    (!r->ack_owner || !r->ack_owner->refs)) {
		wisp_free(r->ack_owner);
		wisp_free(r);
		c->rare = NULL;
	}
}

struct ack_owner *conn_ack_owner_ref(struct conn *c)
{
	struct conn_rare *r = conn_rare(c);
	if (!r)
		return NULL;
	if (!r->ack_owner) {
		r->ack_owner = wisp_malloc(sizeof *r->ack_owner);
		if (!r->ack_owner)
			return NULL;
		*r->ack_owner = (struct ack_owner){c, 0};
	}
	r->ack_owner->refs++;
	return r->ack_owner;
}

void ack_owner_unref(struct ack_owner *o)
{
	if (--o->refs == 0 && !o->c)
		wisp_free(o);
}

void conn_ack_owner_detach(struct conn *c)
{
	struct ack_owner *o = c->rare ? c->rare->ack_owner : NULL;
	if (!o)
		return;
	c->rare->ack_owner = NULL;
	if (o->refs)
		o->c = NULL; /* the last entry naming it frees it */
	else
		wisp_free(o);
}

void conn_free(struct conn *c)
{
	if (list_linked(&c->work_link))
		list_remove(&c->work_link);
	list_remove(&c->all_link);
	conn_set_of(c)->count--;
	outq_clear(&c->out);
	if (c->rare) {
		conn_ack_owner_detach(c);
		msg_unref(c->rare->will);
		wisp_free(c->rare);
	}
	if (c->rbuf) {
		conn_set_of(c)->input_bytes -= conn_rcap(c);
		wisp_free(c->rbuf - CONN_RBUF_HEADROOM);
	}
	transport_close(conn_t(c));
	wisp_small_free(c, sizeof *c);
}
