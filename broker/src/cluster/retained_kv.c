/*
 * Retained messages over a JetStream KV bucket (retained_kv.h).
 *
 * Record headers (the KV value is the raw MQTT payload):
 *   Wisp-Node     the writing node
 *   Wisp-Seq      <run id>-<number>, this module's own numbering (a write
 *                 restored from the store keeps its first run's)
 *   Nats-Msg-Id   the same: the bucket's stream drops a second copy of a
 *                 write sent again within its duplicate window
 *   Wisp-QoS      0, 1 or 2 (absent: 0)
 *   Wisp-Expires  Unix time the Message Expiry Interval ends (absent: never);
 *                 absolute, since a node may read the record much later
 *   Wisp-Props    forwarded v5 properties, base64 of the MQTT encoding
 *   KV-Operation  DEL for a deletion (the KV convention, so `nats kv` reads it)
 *
 * Threads: the set-up thread sets up, then reads the consumer (a
 * synchronous subscription) and only tags and hands over the records; the
 * sender thread publishes the jobs in `todo`, one at a time, each until
 * JetStream acknowledges it, and hands the answers back in `done`. Both
 * touch only the fields under `mu`, the immutable ones, nc, js and sub
 * (set-up) and the jobs' NATS messages. Everything else (the pending
 * table, the outbox, the store's marks) runs on the loop thread.
 */
#include "retained_kv.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "broker.h"
#include "err.h"
#include "groups.h"
#include "retire.h"
#include "hash.h"
#include "inbox.h"
#include "log.h"
#include "persist.h"
#include "retained.h"
#include "store.h"
#include "rules.h"
#include "sender.h"
#include "subject.h"
#include "wire.h"

#define TAG_HEADER "Wisp-KV"
#define LAST_HEADER "Wisp-KV-Last"
/* The pending table's first size; it doubles while it holds more
 * entries than buckets (a node writing many topics while the bucket is
 * slow or away: up to the stored retained messages plus 65,536). */
#define PENDING_BUCKETS_MIN 256u
/* Entries beyond the stored retained messages: deletions (they have no
 * stored message to be bounded by) and writes the store refused. */
#define RETAINED_KV_PENDING_MAX 65536u
/* An acknowledged write whose echo has not come back by then is forgotten
 * (the bucket was purged or made anew: its sequences start again). */
#define PENDING_STALE_S 30u
/* Writes handed to the sender thread at a time: the rest wait in the
 * outbox as references to their messages, not as NATS copies. */
#define SEND_JOBS_MAX 16u
/* The longest subject sent: the PUB line (subject, reply inbox, sizes)
 * must stay within nats-server's default max_control_line, 4096. */
#define RETAINED_KV_SUBJECT_MAX 3968
#define SEND_WAIT_MS 1000 /* bounds a stop's wait for the sender too */
#define SEND_RETRY_MS 500
#define SETUP_WAIT_MS 2000
#define SETUP_RETRY_S 1
#define READ_WAIT_MS 200

/* One per topic this node wrote whose write is not yet known to be
 * passed in the bucket's stream: unsent (JetStream has not acknowledged
 * its last write), or acknowledged at acked_seq and its echo not yet read. */
struct pending {
	struct pending *next;     /* hash chain */
	struct pending *out_next, *out_prev; /* the outbox, oldest first, while queued */
	struct msg *m;            /* the write to send: the retained message; NULL: a deletion */
	char *id;                 /* restored from the store: the Nats-Msg-Id it was first sent with */
	uint64_t seq;             /* this run's number of the topic's last write */
	uint64_t acked_seq;       /* its stream sequence once acknowledged */
	uint64_t at;              /* loop second of the acknowledgement */
	unsigned jobs;            /* the sender's jobs naming this entry */
	bool queued, unsent;
	uint32_t hash;
	uint16_t len;
	char topic[];
};

/* job.refused for a write cnats refuses as over NATS's max_payload
 * (JetStream's own error codes are positive). */
#define REFUSED_TOO_LARGE (-1)

/* A write handed to the sender thread, and its answer. */
struct job {
	struct job *next;
	natsMsg *nm;              /* the sender publishes a copy per try */
	struct pending *p;
	uint64_t seq;
	uint64_t stream_seq;      /* answer: where JetStream stored it */
	int refused;              /* answer: JetStream's error code (or REFUSED_TOO_LARGE), the write is not stored */
};

enum setup_state { SETUP_TRYING, SETUP_READY, SETUP_FAILED };

struct retained_kv {
	struct broker *b;
	natsConnection *nc;
	struct inbox *inbox;
	const void *origin;
	char *node;
	char *subject_prefix;   /* "$KV.<bucket>" */
	char *bucket;
	int replicas;
	char run[17];
	char secret[17];
	uint64_t seq;
	bool synced, ready_logged, failed_logged, waiting_logged, untracked_logged;
	struct pending **pending; /* pending_cap chains, a power of two */
	size_t pending_cap;
	size_t npending;
	struct pending *out_head, *out_tail;
	size_t njobs;             /* handed to the sender and not yet answered */
	uint64_t read_seq;        /* highest stream sequence read from the consumer */
	char *buf;
	size_t buf_cap;
	/* the set-up thread */
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;               /* under mu */
	enum setup_state state;      /* under mu */
	bool empty_at_start;         /* under mu: the bucket had no record when followed */
	char error[160];             /* under mu */
	jsCtx *js;                   /* the thread's until it ends */
	natsSubscription *sub;
	/* Followed anew after a reconnect found the consumer ahead of the
	 * bucket's stream (follow_check): the count (under mu) and the
	 * subscriptions replaced, the thread's until it ends (retire.h). */
	uint64_t refollowed;
	uint64_t refollowed_said;    /* the loop's */
	struct nats_retire retired;
	/* the sender thread */
	pthread_t sender;
	bool sender_started;
	struct sender *untracked; /* the node's (sender.h): writes past the outbox */
	pthread_cond_t send_cv;
	struct job *todo, *todo_tail; /* under mu: oldest first; the head is the one being sent */
	struct job *done, *done_tail; /* under mu: answered, for the loop */
	bool send_failing;           /* under mu: the last try failed */
	char send_error[160];        /* under mu */
};

/* ---- the pending table and the outbox (loop thread) ---- */

static struct pending **pending_find(struct retained_kv *r, const char *topic, size_t len, uint32_t h)
{
	struct pending **pp = &r->pending[h & (r->pending_cap - 1)];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->topic, topic, len) == 0)
			break;
	return pp;
}

/* Doubles the table; out of memory, it stays as it is (longer chains). */
static void pending_grow(struct retained_kv *r)
{
	size_t cap = r->pending_cap * 2;
	struct pending **v = wisp_calloc(cap, sizeof *v);
	if (!v)
		return;
	for (size_t i = 0; i < r->pending_cap; i++)
		for (struct pending *p = r->pending[i], *next; p; p = next) {
			next = p->next;
			p->next = v[p->hash & (cap - 1)];
			v[p->hash & (cap - 1)] = p;
		}
	wisp_free(r->pending);
	r->pending = v;
	r->pending_cap = cap;
}

static struct pending *pending_add(struct retained_kv *r, const char *topic, size_t len)
{
	uint32_t h = hash_bytes(0, topic, len);
	struct pending **pp = pending_find(r, topic, len, h);
	if (*pp)
		return *pp;
	/* The bound: one entry per stored retained message, plus as many
	 * again for deletions and refused writes. */
	if (r->npending >= RETAINED_KV_PENDING_MAX + retained_count(r->b->retained) || len > UINT16_MAX)
		return NULL;
	struct pending *p = wisp_calloc(1, sizeof *p + len);
	if (!p)
		return NULL;
	p->hash = h;
	p->len = (uint16_t)len;
	memcpy(p->topic, topic, len);
	*pp = p;
	if (++r->npending > r->pending_cap)
		pending_grow(r);
	return p;
}

static void outbox_unlink(struct retained_kv *r, struct pending *p)
{
	if (!p->queued)
		return;
	*(p->out_prev ? &p->out_prev->out_next : &r->out_head) = p->out_next;
	*(p->out_next ? &p->out_next->out_prev : &r->out_tail) = p->out_prev;
	p->out_next = p->out_prev = NULL;
	p->queued = false;
}

static void outbox_append(struct retained_kv *r, struct pending *p)
{
	outbox_unlink(r, p);
	p->out_prev = r->out_tail;
	*(r->out_tail ? &r->out_tail->out_next : &r->out_head) = p;
	r->out_tail = p;
	p->queued = true;
}

static void pending_free(struct pending *p)
{
	msg_unref(p->m);
	wisp_free(p->id);
	wisp_free(p);
}

/* Forgets the entry once nothing waits on it. */
static void pending_done(struct retained_kv *r, struct pending *p)
{
	if (p->unsent || p->queued || p->jobs)
		return;
	struct pending **pp = pending_find(r, p->topic, p->len, p->hash);
	*pp = p->next;
	pending_free(p);
	r->npending--;
}

static void set_unsent(struct retained_kv *r, struct pending *p, bool unsent)
{
	if (p->unsent == unsent)
		return;
	p->unsent = unsent;
	if (unsent)
		r->b->stats.cluster.retained_unsent++;
	else
		r->b->stats.cluster.retained_unsent--;
}

/* ---- out: a retained write to the bucket ---- */

/* The record for the entry's write: the retained message (or a deletion)
 * to the topic's subject, with the Nats-Msg-Id that lets the bucket's
 * stream drop a second copy within its duplicate window. */
static natsMsg *record_build(struct retained_kv *r, const char *topic, size_t len, const struct msg *m,
			     const char *id)
{
	ssize_t n = subject_from_topic(r->subject_prefix, topic, len, r->buf, r->buf_cap);
	size_t plen = m ? m->payload_len : 0;
	if (n < 0 || plen > INT_MAX)
		return NULL;
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, r->buf, NULL, m ? (const char *)msg_payload(m) : NULL, (int)plen);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", r->node);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Seq", id);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Nats-Msg-Id", id);
	if (st == NATS_OK && plen == 0)
		st = natsMsgHeader_Set(nm, "KV-Operation", "DEL");
	if (st == NATS_OK && plen && m->qos) {
		char q[2] = {(char)('0' + m->qos), '\0'};
		st = natsMsgHeader_Set(nm, "Wisp-QoS", q);
	}
	if (st == NATS_OK && plen && m->expires_at) {
		char at[24];
		uint64_t left = msg_expiry_left(m, loop_now_s(r->b->loop));
		snprintf(at, sizeof at, "%" PRIu64, (uint64_t)time(NULL) + left);
		st = natsMsgHeader_Set(nm, "Wisp-Expires", at);
	}
	if (st == NATS_OK && plen && m->props_len)
		st = wire_set_props(nm, msg_props(m), m->props_len);
	if (st != NATS_OK) {
		natsMsg_Destroy(nm);
		return NULL;
	}
	return nm;
}

static void write_id(const struct retained_kv *r, uint64_t seq, char *out, size_t cap)
{
	snprintf(out, cap, "%s-%" PRIu64, r->run, seq);
}

/* Hands the outbox's oldest writes to the sender, up to SEND_JOBS_MAX. */
static void outbox_feed(struct retained_kv *r)
{
	while (r->out_head && r->njobs < SEND_JOBS_MAX) {
		struct pending *p = r->out_head;
		char id[48];
		if (!p->id)
			write_id(r, p->seq, id, sizeof id);
		struct job *j = wisp_calloc(1, sizeof *j);
		natsMsg *nm = j ? record_build(r, p->topic, p->len, p->m, p->id ? p->id : id) : NULL;
		if (!nm) {
			wisp_free(j);
			return; /* tried again at the next write or answer */
		}
		j->nm = nm;
		j->p = p;
		j->seq = p->seq;
		outbox_unlink(r, p);
		p->jobs++;
		r->njobs++;
		pthread_mutex_lock(&r->mu);
		*(r->todo_tail ? &r->todo_tail->next : &r->todo) = j;
		r->todo_tail = j;
		pthread_cond_signal(&r->send_cv);
		pthread_mutex_unlock(&r->mu);
	}
}

/* Past the bound: the old way, one plain publish the node never hears of,
 * through the node's QoS 0 sender (never on the loop thread: sender.h). */
static void publish_untracked(struct retained_kv *r, const struct msg *m)
{
	struct broker *b = r->b;
	char id[48];
	write_id(r, ++r->seq, id, sizeof id);
	natsMsg *nm = record_build(r, msg_topic(m), m->topic_len, m->payload_len ? m : NULL, id);
	size_t fill = 0;
	if (!nm) {
		b->stats.cluster.send_failed++;
	} else if (!sender_push(r->untracked, r->nc, nm, m->payload_len + 2u * m->topic_len + 256, &fill)) {
		b->stats.cluster.send_dropped++;
		natsMsg_Destroy(nm);
	}
	b->stats.cluster.retained_untracked++;
	if (!r->untracked_logged) {
		r->untracked_logged = true;
		log_msg(LOG_WARNING, "cluster", "retained writes past the bucket's outbox (%zu waiting): sent to bucket "
			"'%s' at most once; counted in $SYS/broker/cluster/retained/untracked", r->npending, r->bucket);
	}
}

void retained_kv_publish(struct retained_kv *r, const struct msg *m)
{
	/* nats-server closes a connection whose PUB line passes its
	 * max_control_line (4 KiB by default): such a write, sent again and
	 * again, would cut the node off NATS every time. */
	ssize_t n = subject_from_topic(r->subject_prefix, msg_topic(m), m->topic_len, r->buf, r->buf_cap);
	if (n < 0 || n > RETAINED_KV_SUBJECT_MAX) {
		r->b->stats.cluster.send_failed++;
		log_limited("cluster_dropped", LOG_WARNING, "cluster", "retained write to '%.*s' not sent to bucket '%s': "
			    "its subject is longer than %d bytes (nats-server's max_control_line)", (int)m->topic_len,
			    msg_topic(m), r->bucket, RETAINED_KV_SUBJECT_MAX);
		return;
	}
	struct pending *p = pending_add(r, msg_topic(m), m->topic_len);
	if (!p) {
		publish_untracked(r, m);
		return;
	}
	p->seq = ++r->seq;
	p->acked_seq = 0;
	msg_unref(p->m);
	p->m = m->payload_len ? msg_ref((struct msg *)m) : NULL;
	wisp_free(p->id);
	p->id = NULL;
	set_unsent(r, p, true);
	outbox_append(r, p);
	/* After the write's own RETAIN_SET or RETAIN_DEL, in the same turn:
	 * the PUBACK waits for both (docs/persistence.md). A value the local
	 * store refused (limits.max_retained) has no record to mark: after a
	 * restart the topic's stored value is what the mark would send. */
	if (!m->payload_len || retained_get(r->b->retained, msg_topic(m), m->topic_len) == m) {
		char id[48];
		write_id(r, p->seq, id, sizeof id);
		persist_retain_mark(r->b, p->topic, p->len, id, strlen(id));
	}
	outbox_feed(r);
}

/* Loop thread: the sender's answers. */
static void take_answers(struct retained_kv *r)
{
	pthread_mutex_lock(&r->mu);
	struct job *j = r->done;
	r->done = r->done_tail = NULL;
	bool failing = r->send_failing;
	char error[sizeof r->send_error];
	memcpy(error, r->send_error, sizeof error);
	pthread_mutex_unlock(&r->mu);
	struct broker *b = r->b;
	while (j) {
		struct job *next = j->next;
		struct pending *p = j->p;
		p->jobs--;
		r->njobs--;
		if (j->seq == p->seq && p->unsent) {
			if (j->refused == REFUSED_TOO_LARGE) {
				b->stats.cluster.too_large++;
				log_limited("cluster_retained_too_large", LOG_WARNING, "cluster", "retained write to '%.*s' "
					    "not written to bucket '%s': over NATS's max_payload; the other nodes keep the "
					    "topic's earlier one", (int)p->len, p->topic, r->bucket);
			} else if (j->refused) {
				b->stats.cluster.send_failed++;
				log_limited("cluster_dropped", LOG_WARNING, "cluster", "retained write to '%.*s' refused by "
					    "bucket '%s' (JetStream error %d): the bucket keeps its value", (int)p->len,
					    p->topic, r->bucket, j->refused);
			}
			p->acked_seq = j->refused ? 0 : j->stream_seq;
			p->at = loop_now_s(b->loop);
			msg_unref(p->m);
			p->m = NULL;
			set_unsent(r, p, false);
			persist_retain_mark(b, p->topic, p->len, NULL, 0);
			/* Its echo already read (and skipped while unsent), or none will come. */
			if (j->refused || r->read_seq >= p->acked_seq)
				pending_done(r, p);
		}
		natsMsg_Destroy(j->nm);
		wisp_free(j);
		j = next;
	}
	uint64_t unsent = b->stats.cluster.retained_unsent;
	if (failing && unsent && !r->waiting_logged) {
		r->waiting_logged = true;
		log_msg(LOG_WARNING, "cluster", "retained messages wait for the bucket: %" PRIu64 " (%s); sent once "
			"JetStream answers, counted in $SYS/broker/cluster/retained/unsent", unsent, error);
	} else if (!unsent && r->waiting_logged) {
		r->waiting_logged = false;
		log_msg(LOG_NOTICE, "cluster", "retained messages all in bucket '%s' again", r->bucket);
	}
	if (!unsent && r->untracked_logged && r->npending < RETAINED_KV_PENDING_MAX)
		r->untracked_logged = false;
	outbox_feed(r);
}

/* Loop thread, at start: the writes the store restored as not yet in the
 * bucket go first, with their first Nats-Msg-Id and the store's value now
 * (the mark follows its write, so that is the write it marks). */
static void take_restored(struct retained_kv *r)
{
	struct broker *b = r->b;
	const char *topic, *id;
	size_t len;
	for (size_t i = 0; persist_retain_unsent_get(b, i, &topic, &len, &id); i++) {
		struct pending *p = pending_add(r, topic, len);
		char *copy = p ? wisp_strndup(id, strlen(id)) : NULL;
		if (!copy) {
			log_msg(LOG_WARNING, "cluster", "retained write to '%.*s' not published to the bucket again: "
				"out of memory or past the outbox's bound", (int)len, topic);
			continue;
		}
		p->seq = ++r->seq;
		p->id = copy;
		struct msg *m = retained_get(b->retained, topic, len);
		p->m = m ? msg_ref(m) : NULL;
		set_unsent(r, p, true);
		outbox_append(r, p);
	}
	persist_retain_unsent_forget(b);
	outbox_feed(r);
}

static int by_seq(const void *x, const void *y)
{
	uint64_t a = (*(struct pending *const *)x)->seq, b = (*(struct pending *const *)y)->seq;
	return a < b ? -1 : a > b;
}

/* Compaction: the marks of the writes still unsent, oldest first (the
 * order they go out again after a restart). */
static int emit_marks(void *ctx, struct store *st)
{
	struct retained_kv *r = ctx;
	uint64_t n = r->b->stats.cluster.retained_unsent;
	struct pending **v = n ? wisp_malloc((size_t)n * sizeof *v) : NULL;
	if (n && !v)
		return WISP_ENOMEM;
	size_t k = 0;
	for (size_t i = 0; i < r->pending_cap; i++)
		for (struct pending *p = r->pending[i]; p; p = p->next)
			if (p->unsent && k < n)
				v[k++] = p;
	if (k)
		qsort(v, k, sizeof *v, by_seq);
	int rc = 0;
	for (size_t i = 0; !rc && i < k; i++) {
		char id[48];
		const char *mid = v[i]->id;
		if (!mid) {
			write_id(r, v[i]->seq, id, sizeof id);
			mid = id;
		}
		rc = store_append_retain_unsent(st, v[i]->topic, v[i]->len, mid, strlen(mid));
	}
	wisp_free(v);
	return rc;
}

/* ---- the sender thread ---- */

static natsStatus copy_msg(natsMsg **out, natsMsg *nm)
{
	natsStatus st = natsMsg_Create(out, natsMsg_GetSubject(nm), NULL, natsMsg_GetData(nm),
				       natsMsg_GetDataLength(nm));
	const char **keys = NULL;
	int nkeys = 0;
	if (st == NATS_OK)
		st = natsMsgHeader_Keys(nm, &keys, &nkeys);
	for (int i = 0; st == NATS_OK && i < nkeys; i++) {
		const char *v = NULL;
		st = natsMsgHeader_Get(nm, keys[i], &v);
		if (st == NATS_OK)
			st = natsMsgHeader_Set(*out, keys[i], v);
	}
	free((void *)keys);
	if (st != NATS_OK) {
		natsMsg_Destroy(*out);
		*out = NULL;
	}
	return st;
}

/* One try: JetStream's answer in *j, or why not. */
static natsStatus send_one(struct retained_kv *r, jsCtx **js, struct job *j, char *err, size_t errlen)
{
	if (natsConnection_Status(r->nc) != NATS_CONN_STATUS_CONNECTED) {
		snprintf(err, errlen, "NATS connection down");
		return NATS_CONNECTION_DISCONNECTED;
	}
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = SEND_WAIT_MS;
	natsStatus st = *js ? NATS_OK : natsConnection_JetStream(js, r->nc, &jo);
	natsMsg *copy = NULL;
	if (st == NATS_OK)
		st = copy_msg(&copy, j->nm);
	jsPubAck *pa = NULL;
	jsErrCode jerr = 0;
	if (st == NATS_OK)
		st = js_PublishMsg(&pa, *js, copy, NULL, &jerr);
	natsMsg_Destroy(copy);
	if (st == NATS_OK) {
		j->stream_seq = pa->Sequence;
		jsPubAck_Destroy(pa);
		return NATS_OK;
	}
	if (jerr) { /* JetStream answered no: trying again would not change it */
		j->refused = (int)jerr;
		return NATS_OK;
	}
	/* Over NATS's max_payload (cluster.c checked the main connection's;
	 * a server with a smaller one since): refused at every try. */
	if (st == NATS_MAX_PAYLOAD) {
		j->refused = REFUSED_TOO_LARGE;
		return NATS_OK;
	}
	snprintf(err, errlen, "%s", natsStatus_GetText(st));
	return st;
}

static void *sender_main(void *arg)
{
	struct retained_kv *r = arg;
	jsCtx *js = NULL;
	pthread_mutex_lock(&r->mu);
	while (!r->stopping) {
		struct job *j = r->todo;
		if (!j) {
			pthread_cond_wait(&r->send_cv, &r->mu);
			continue;
		}
		pthread_mutex_unlock(&r->mu);
		char err[sizeof r->send_error] = "";
		natsStatus st = send_one(r, &js, j, err, sizeof err);
		pthread_mutex_lock(&r->mu);
		if (st == NATS_OK) {
			r->todo = j->next;
			if (!r->todo)
				r->todo_tail = NULL;
			j->next = NULL;
			*(r->done_tail ? &r->done_tail->next : &r->done) = j;
			r->done_tail = j;
			r->send_failing = false;
			inbox_raise(r->inbox, RETAINED_KV_EVENT);
			continue;
		}
		/* The same write again, after a pause: the outbox keeps the
		 * node's order, and the Nats-Msg-Id drops a copy that did land. */
		if (!r->send_failing) {
			r->send_failing = true;
			memcpy(r->send_error, err, sizeof r->send_error);
			inbox_raise(r->inbox, RETAINED_KV_EVENT);
		}
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += (long)SEND_RETRY_MS * 1000000L;
		if (until.tv_nsec >= 1000000000L) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000L;
		}
		while (!r->stopping && pthread_cond_timedwait(&r->send_cv, &r->mu, &until) != ETIMEDOUT)
			;
	}
	pthread_mutex_unlock(&r->mu);
	jsCtx_Destroy(js);
	return NULL;
}

/* ---- in: a record from the bucket (loop thread) ---- */


/* Whether the record should not be applied, because one of this node's own
 * writes to the topic comes after it in the stream (or will: unsent). */
static bool superseded(struct retained_kv *r, natsMsg *nm, const char *topic, size_t len)
{
	jsMsgMetaData *meta = NULL;
	uint64_t seq = 0;
	if (natsMsg_GetMetaData(&meta, nm) == NATS_OK)
		seq = meta->Sequence.Stream;
	jsMsgMetaData_Destroy(meta);
	if (seq > r->read_seq)
		r->read_seq = seq;
	struct pending *p = *pending_find(r, topic, len, hash_bytes(0, topic, len));
	if (!p)
		return false;
	enum record_verdict v = retained_record_verdict(true, p->unsent, p->acked_seq, seq);
	if (!p->unsent && p->at + PENDING_STALE_S < loop_now_s(r->b->loop))
		v = RECORD_APPLY;
	if (v == RECORD_SKIP)
		return true;
	pending_done(r, p); /* acknowledged and passed: the bucket leads again */
	return v == RECORD_SKIP_ARRIVED;
}

static const char *apply(struct retained_kv *r, natsMsg *nm)
{
	struct broker *b = r->b;
	const char *subj = natsMsg_GetSubject(nm);
	ssize_t tlen = subject_to_topic(r->subject_prefix, subj, strlen(subj), r->buf, r->buf_cap);
	if (tlen <= 0 || tlen > UINT16_MAX || mqtt_utf8_scan((const uint8_t *)r->buf, (size_t)tlen) != 0)
		return "a subject that maps to no valid topic";
	if (broker_topic_bound(b, r->buf, (size_t)tlen) != TOPIC_WITHIN_LIMITS)
		return "a topic over limits.max_topic_length or max_topic_levels";
	if (superseded(r, nm, r->buf, (size_t)tlen)) {
		b->stats.cluster.retained_applied++; /* taken in: the store holds what follows it */
		return NULL;
	}
	int dlen = natsMsg_GetDataLength(nm);
	const char *op = wire_header(nm, "KV-Operation");
	bool clear = dlen <= 0 || (op && (strcmp(op, "DEL") == 0 || strcmp(op, "PURGE") == 0));
	uint64_t expires_at = 0;
	const char *exp = wire_header(nm, "Wisp-Expires");
	if (!clear && exp) {
		uint64_t at = strtoull(exp, NULL, 10);
		uint64_t now = (uint64_t)time(NULL);
		if (at <= now)
			clear = true; /* expired while in the bucket */
		else
			expires_at = loop_now_s(b->loop) + (at - now);
	}
	uint8_t *props = NULL;
	size_t props_len = 0;
	const char *bad = clear ? NULL : wire_get_props(nm, &props, &props_len);
	if (bad)
		return bad;
	const char *q = wire_header(nm, "Wisp-QoS");
	struct msg_spec spec = {
		.topic = r->buf,
		.topic_len = (size_t)tlen,
		.props = props,
		.props_len = props_len,
		.payload = clear ? NULL : natsMsg_GetData(nm),
		.payload_len = clear ? 0 : (size_t)dlen,
		.qos = q && q[0] >= '0' && q[0] <= '2' && !q[1] ? (uint8_t)(q[0] - '0') : 0,
		.retain = true,
		.expires_at = expires_at,
		.origin = r->origin,
	};
	struct msg *m = msg_create(&spec);
	wisp_free(props);
	if (!m)
		return "out of memory";
	broker_retain(b, m);
	msg_unref(m);
	b->stats.cluster.retained_applied++;
	return NULL;
}

bool retained_kv_message(struct retained_kv *r, natsMsg *nm)
{
	const char *tag = r ? wire_header(nm, TAG_HEADER) : NULL;
	if (!tag || strcmp(tag, r->secret) != 0)
		return false;
	const char *why = apply(r, nm);
	if (why) {
		r->b->stats.cluster.dropped++;
		log_limited("cluster_dropped", LOG_INFO, "cluster", "retained record '%s' not applied: %s",
			    natsMsg_GetSubject(nm), why);
	}
	if (!r->synced && wire_header(nm, LAST_HEADER)) {
		r->synced = true;
		log_msg(LOG_NOTICE, "cluster", "retained messages in step with bucket '%s' (%zu stored here)",
			r->bucket, retained_count(r->b->retained));
	}
	return true;
}

void retained_kv_event(struct retained_kv *r)
{
	if (!r)
		return;
	take_answers(r);
	pthread_mutex_lock(&r->mu);
	enum setup_state state = r->state;
	bool empty = r->empty_at_start;
	char error[sizeof r->error];
	memcpy(error, r->error, sizeof error);
	uint64_t refollowed = r->refollowed;
	pthread_mutex_unlock(&r->mu);
	if (refollowed != r->refollowed_said) {
		r->refollowed_said = refollowed;
		log_msg(LOG_WARNING, "cluster", "bucket '%s': this node's consumer of it was past the end of its stream "
			"(the NATS server lost its last writes, killed before it wrote them? retained writes it had "
			"acknowledged may be gone) or was gone; following the bucket anew from its last records, so that "
			"new ones reach this node", r->bucket);
	}
	if (state == SETUP_FAILED && !r->failed_logged) {
		r->failed_logged = true;
		log_msg(LOG_WARNING, "cluster", "retained messages stay on this node until JetStream answers: %s "
			"(retrying every %us)", error, SETUP_RETRY_S);
	}
	if (state == SETUP_READY && !r->ready_logged) {
		r->ready_logged = true;
		log_msg(LOG_NOTICE, "cluster", "retained messages shared through JetStream bucket '%s' (%d replica%s)",
			r->bucket, r->replicas, r->replicas == 1 ? "" : "s");
		if (empty && !r->synced) {
			r->synced = true;
			log_msg(LOG_NOTICE, "cluster", "retained messages in step with bucket '%s' (%zu stored here)",
				r->bucket, retained_count(r->b->retained));
		}
	}
}

/* ---- the consumer's records (this module's thread) ---- */

static void on_record(struct retained_kv *r, natsMsg *msg)
{
	jsMsgMetaData *meta = NULL;
	bool last = natsMsg_GetMetaData(&meta, msg) == NATS_OK && meta->NumPending == 0;
	jsMsgMetaData_Destroy(meta);
	if (natsMsgHeader_Set(msg, TAG_HEADER, r->secret) != NATS_OK ||
	    (last && natsMsgHeader_Set(msg, LAST_HEADER, "1") != NATS_OK) ||
	    !inbox_push_sized(r->inbox, msg, wire_msg_bytes(msg)))
		natsMsg_Destroy(msg); /* a full inbox counts it */
}

/* ---- the set-up thread ---- */

/* Subscribes to the bucket's records: the last of each topic, then every
 * new one. */
static natsStatus follow(struct retained_kv *r, jsErrCode *jerr)
{
	char stream[128], subject[160];
	snprintf(stream, sizeof stream, "KV_%s", r->bucket);
	snprintf(subject, sizeof subject, "%s.>", r->subject_prefix);
	jsSubOptions so;
	jsSubOptions_Init(&so);
	so.Stream = stream;
	so.Config.AckPolicy = js_AckNone;
	so.Config.DeliverPolicy = js_DeliverLastPerSubject;
	/* Synchronous: this module's thread reads it (setup_main), so no
	 * record waits in cnats's shared delivery queue at exit, where cnats
	 * would never free it. */
	return js_SubscribeSync(&r->sub, r->js, subject, NULL, &so, jerr);
}

/*
 * After a reconnect: a NATS server killed before it wrote its last
 * records comes back with a bucket stream that ends below what the
 * consumer was given (the node consumer's case, jetstream.c's
 * remake_if_ahead), and gives those sequences to new records, which the
 * consumer would skip. Followed anew then (the bucket's last records read
 * again, as at start); so too when the consumer is gone (nats-server
 * without it after its restart), or nothing would come any more. False:
 * JetStream did not answer, try again.
 */
static bool follow_check(struct retained_kv *r)
{
	char stream[128];
	snprintf(stream, sizeof stream, "KV_%s", r->bucket);
	jsConsumerInfo *ci = NULL;
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	if (!r->sub)
		goto again; /* the last try to follow anew failed */
	natsStatus st = natsSubscription_GetConsumerInfo(&ci, r->sub, NULL, &jerr);
	bool gone = st == NATS_NOT_FOUND;
	if (st == NATS_OK)
		st = js_GetStreamInfo(&si, r->js, stream, NULL, &jerr);
	bool ahead = st == NATS_OK && ci->Delivered.Stream > si->State.LastSeq;
	jsConsumerInfo_Destroy(ci);
	jsStreamInfo_Destroy(si);
	if (st != NATS_OK && !gone)
		return false;
	if (!ahead && !gone)
		return true;
	natsSubscription_Unsubscribe(r->sub); /* its ephemeral consumer goes */
	nats_retire_sub(&r->retired, &r->sub);
again:
	if (follow(r, &jerr) != NATS_OK)
		return false; /* r->sub NULL: tried again at the next wake-up */
	pthread_mutex_lock(&r->mu);
	r->refollowed++;
	pthread_mutex_unlock(&r->mu);
	inbox_raise(r->inbox, RETAINED_KV_EVENT);
	return true;
}

/* The connection's reconnects so far, read into stats (0 if cnats cannot
 * say, or stats is NULL: no memory for it). */
static uint64_t reconnects(natsConnection *nc, natsStatistics *stats)
{
	uint64_t n = 0;
	if (stats && natsConnection_GetStats(nc, stats) == NATS_OK)
		natsStatistics_GetCounts(stats, NULL, NULL, NULL, NULL, &n);
	return n;
}

static natsStatus setup(struct retained_kv *r, bool *empty, char *err, size_t errlen)
{
	jsOptions jo;
	jsOptions_Init(&jo);
	jo.Wait = SETUP_WAIT_MS;
	natsStatus st = r->js ? NATS_OK : natsConnection_JetStream(&r->js, r->nc, &jo);
	kvStore *kv = NULL;
	if (st == NATS_OK) {
		kvConfig kc;
		kvConfig_Init(&kc);
		kc.Bucket = r->bucket;
		kc.History = 1;
		kc.Replicas = r->replicas;
		kc.Description = "Wisp retained messages";
		st = js_CreateKeyValue(&kv, r->js, &kc);
		if (st != NATS_OK) /* made by another node, perhaps with other settings: use it */
			st = js_KeyValue(&kv, r->js, r->bucket);
	}
	kvStore_Destroy(kv);
	char stream[128];
	snprintf(stream, sizeof stream, "KV_%s", r->bucket);
	jsStreamInfo *si = NULL;
	jsErrCode jerr = 0;
	if (st == NATS_OK)
		st = js_GetStreamInfo(&si, r->js, stream, NULL, &jerr);
	if (st == NATS_OK) {
		*empty = si->State.Msgs == 0;
		jsStreamInfo_Destroy(si);
		st = follow(r, &jerr);
	}
	if (st != NATS_OK)
		snprintf(err, errlen, "%s (JetStream error %d)", natsStatus_GetText(st), (int)jerr);
	return st;
}

static void *setup_main(void *arg)
{
	struct retained_kv *r = arg;
	pthread_mutex_lock(&r->mu);
	while (!r->stopping) {
		pthread_mutex_unlock(&r->mu);
		char err[sizeof r->error] = "";
		bool empty = false;
		natsStatus st = setup(r, &empty, err, sizeof err);
		pthread_mutex_lock(&r->mu);
		r->state = st == NATS_OK ? SETUP_READY : SETUP_FAILED;
		r->empty_at_start = empty;
		memcpy(r->error, err, sizeof r->error);
		inbox_raise(r->inbox, RETAINED_KV_EVENT);
		if (st == NATS_OK)
			break;
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += SETUP_RETRY_S;
		while (!r->stopping && pthread_cond_timedwait(&r->cv, &r->mu, &until) != ETIMEDOUT)
			;
	}
	bool stopping = r->stopping;
	pthread_mutex_unlock(&r->mu);
	/* Then the records, until retained_kv_stop: the wait bounds how long
	 * a stop waits for this thread. Each reconnect (looked for every
	 * READ_WAIT_MS) is followed by a check of the consumer. */
	natsStatistics *stats = NULL;
	if (natsStatistics_Create(&stats) != NATS_OK)
		stats = NULL;
	uint64_t reconnects_seen = reconnects(r->nc, stats);
	int64_t looked_at = nats_Now();
	bool check = false;
	while (!stopping) {
		natsMsg *msg = NULL;
		natsStatus st = r->sub ? natsSubscription_NextMsg(&msg, r->sub, READ_WAIT_MS) : NATS_TIMEOUT;
		if (st == NATS_OK)
			on_record(r, msg);
		else if (st != NATS_TIMEOUT || !r->sub)
			nats_Sleep(READ_WAIT_MS); /* the connection is away: cnats reconnects it */
		if (nats_Now() - looked_at >= READ_WAIT_MS) {
			looked_at = nats_Now();
			uint64_t n = reconnects(r->nc, stats);
			check = check || n != reconnects_seen || !r->sub;
			reconnects_seen = n;
			if (check && natsConnection_Status(r->nc) == NATS_CONN_STATUS_CONNECTED)
				check = !follow_check(r);
			nats_retire_due(&r->retired);
		}
		pthread_mutex_lock(&r->mu);
		stopping = r->stopping;
		pthread_mutex_unlock(&r->mu);
	}
	natsStatistics_Destroy(stats);
	return NULL;
}

static int start_threads(struct retained_kv *r)
{
	nats_retire_init(&r->retired, nats_retire_monotonic_ms, NULL, NULL);
	r->retired.off_loop = true; /* the follower thread's (retire.h) */
	if (pthread_create(&r->thread, NULL, setup_main, r) != 0)
		return WISP_EIO;
	r->thread_started = true;
	if (pthread_create(&r->sender, NULL, sender_main, r) != 0)
		return WISP_EIO;
	r->sender_started = true;
	return 0;
}

int retained_kv_start(struct retained_kv **out, struct broker *b, natsConnection *nc, struct sender *untracked,
		      struct inbox *inbox, const char *node, const void *origin)
{
	const struct config_cluster *cfg = &b->cfg->cluster;
	*out = NULL;
	struct retained_kv *r = wisp_calloc(1, sizeof *r);
	if (!r)
		return WISP_ENOMEM;
	r->b = b;
	r->nc = nc;
	r->untracked = untracked;
	r->inbox = inbox;
	r->origin = origin;
	r->replicas = (int)cfg->retained_replicas;
	r->node = wisp_strndup(node, strlen(node));
	r->bucket = wisp_strndup(cfg->retained_bucket, strlen(cfg->retained_bucket));
	size_t plen = strlen("$KV.") + strlen(cfg->retained_bucket);
	r->subject_prefix = wisp_malloc(plen + 1);
	r->buf_cap = SUBJECT_MAX(plen, 65535);
	r->buf = wisp_malloc(r->buf_cap);
	r->pending = wisp_calloc(PENDING_BUCKETS_MIN, sizeof *r->pending);
	r->pending_cap = r->pending ? PENDING_BUCKETS_MIN : 0;
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	pthread_cond_init(&r->send_cv, NULL);
	if (!r->node || !r->bucket || !r->subject_prefix || !r->buf || !r->pending) {
		retained_kv_free(r);
		return WISP_ENOMEM;
	}
	snprintf(r->subject_prefix, plen + 1, "$KV.%s", cfg->retained_bucket);
	uint64_t rnd[2] = {0, 0};
	if (getentropy(rnd, sizeof rnd) != 0) {
		rnd[0] = (uint64_t)getpid() << 32 ^ (uint64_t)time(NULL);
		rnd[1] = rnd[0] * 0x9e3779b97f4a7c15u ^ (uint64_t)(uintptr_t)r;
	}
	snprintf(r->run, sizeof r->run, "%016" PRIx64, rnd[0]);
	snprintf(r->secret, sizeof r->secret, "%016" PRIx64, rnd[1]);
	if (start_threads(r) != 0) {
		retained_kv_free(r);
		return WISP_EIO;
	}
	take_restored(r);
	persist_retain_marks_by(b, emit_marks, r);
	*out = r;
	return 0;
}

int retained_kv_rebind(struct retained_kv *r, natsConnection *nc, struct nats_retire *retired)
{
	if (!r)
		return 0;
	/* The thread's sub and js belong to the closed connection: it ends,
	 * they go, and a new thread sets up (and follows the bucket) on nc. */
	retained_kv_stop(r, retired);
	r->nc = nc;
	pthread_mutex_lock(&r->mu);
	r->stopping = false;
	r->state = SETUP_TRYING;
	pthread_mutex_unlock(&r->mu);
	return start_threads(r);
}

void retained_kv_stop(struct retained_kv *r, struct nats_retire *retired)
{
	if (!r)
		return;
	pthread_mutex_lock(&r->mu);
	r->stopping = true;
	pthread_cond_signal(&r->cv);
	pthread_cond_signal(&r->send_cv);
	pthread_mutex_unlock(&r->mu);
	if (r->thread_started) {
		pthread_join(r->thread, NULL);
		r->thread_started = false;
	}
	/* Its write in flight stays at the head of todo: sent again on the
	 * next connection (rebind), the same Nats-Msg-Id. */
	if (r->sender_started) {
		pthread_join(r->sender, NULL);
		r->sender_started = false;
	}
	/* Not unsubscribed: that would ask JetStream to delete the consumer,
	 * and the answer, arriving as the connection closes, is never freed
	 * by cnats. The server drops the ephemeral consumer with the
	 * connection's interest. */
	nats_retire_sub(retired, &r->sub);
	if (retired)
		nats_retire_move(retired, &r->retired);
	else
		nats_retire_all(&r->retired);
	jsCtx_Destroy(r->js);
	r->js = NULL;
}

void retained_kv_free(struct retained_kv *r)
{
	if (!r)
		return;
	retained_kv_stop(r, NULL);
	/* Unsent marks stay in the store for the next start. */
	if (r->b->persist.emit_marks_ctx == r)
		persist_retain_marks_by(r->b, NULL, NULL);
	struct job *lists[2] = {r->todo, r->done};
	for (int k = 0; k < 2; k++)
		for (struct job *j = lists[k], *next; j; j = next) {
			next = j->next;
			natsMsg_Destroy(j->nm);
			wisp_free(j);
		}
	for (size_t i = 0; i < r->pending_cap; i++)
		for (struct pending *p = r->pending[i], *next; p; p = next) {
			next = p->next;
			pending_free(p);
		}
	wisp_free(r->pending);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	pthread_cond_destroy(&r->send_cv);
	wisp_free(r->buf);
	wisp_free(r->subject_prefix);
	wisp_free(r->bucket);
	wisp_free(r->node);
	wisp_free(r);
}
