/*
 * Retained messages over a JetStream KV bucket (retained_kv.h).
 *
 * Record headers (the KV value is the raw MQTT payload):
 *   Wisp-Node     the writing node
 *   Wisp-Seq      <run id>-<number>, this module's own numbering
 *   Wisp-QoS      0, 1 or 2 (absent: 0)
 *   Wisp-Expires  Unix time the Message Expiry Interval ends (absent: never);
 *                 absolute, since a node may read the record much later
 *   Wisp-Props    forwarded v5 properties, base64 of the MQTT encoding
 *   KV-Operation  DEL for a deletion (the KV convention, so `nats kv` reads it)
 *
 * Threads: this module's thread sets up, then reads the consumer (a
 * synchronous subscription) and only tags and hands over the records; it
 * touches only the fields under `mu`, the immutable ones, js and sub.
 * Everything else runs on the loop thread.
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
#include "rules.h"
#include "subject.h"
#include "wire.h"

#define TAG_HEADER "Wisp-KV"
#define LAST_HEADER "Wisp-KV-Last"
#define PENDING_BUCKETS 256u
#define RETAINED_KV_PENDING_MAX 65536u
/* A pending write whose echo has not come back by then is forgotten (the
 * record was lost on its way: JetStream went away). */
#define PENDING_STALE_S 30u
#define SETUP_WAIT_MS 2000
#define SETUP_RETRY_S 1
#define READ_WAIT_MS 200

struct pending {
	struct pending *next;
	uint64_t seq;
	uint64_t at;    /* loop second of the write */
	uint32_t hash;
	uint16_t len;
	char topic[];
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
	bool synced, ready_logged, failed_logged;
	struct pending *pending[PENDING_BUCKETS];
	size_t npending;
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
};

/* ---- the pending table (loop thread) ---- */

static struct pending **pending_find(struct retained_kv *r, const char *topic, size_t len, uint32_t h)
{
	struct pending **pp = &r->pending[h % PENDING_BUCKETS];
	for (; *pp; pp = &(*pp)->next)
		if ((*pp)->hash == h && (*pp)->len == len && memcmp((*pp)->topic, topic, len) == 0)
			break;
	return pp;
}

static void pending_set(struct retained_kv *r, const char *topic, size_t len, uint64_t seq, uint64_t now)
{
	uint32_t h = hash_bytes(0, topic, len);
	struct pending **pp = pending_find(r, topic, len, h);
	if (!*pp) {
		/* Over the cap the topic is not tracked: its store may step
		 * back to an older record until its own echo arrives. */
		if (r->npending >= RETAINED_KV_PENDING_MAX || len > UINT16_MAX)
			return;
		struct pending *p = wisp_malloc(sizeof *p + len);
		if (!p)
			return;
		p->next = NULL;
		p->hash = h;
		p->len = (uint16_t)len;
		memcpy(p->topic, topic, len);
		*pp = p;
		r->npending++;
	}
	(*pp)->seq = seq;
	(*pp)->at = now;
}

static void pending_drop(struct retained_kv *r, struct pending **pp)
{
	struct pending *p = *pp;
	*pp = p->next;
	wisp_free(p);
	r->npending--;
}

/* ---- out: a retained message to the bucket ---- */

void retained_kv_publish(struct retained_kv *r, const struct msg *m)
{
	ssize_t n = subject_from_topic(r->subject_prefix, msg_topic(m), m->topic_len, r->buf, r->buf_cap);
	if (n < 0 || m->payload_len > INT_MAX)
		return;
	natsMsg *nm = NULL;
	natsStatus st = natsMsg_Create(&nm, r->buf, NULL, (const char *)msg_payload(m), (int)m->payload_len);
	if (st == NATS_OK)
		st = natsMsgHeader_Set(nm, "Wisp-Node", r->node);
	uint64_t seq = ++r->seq;
	if (st == NATS_OK) {
		char s[48];
		snprintf(s, sizeof s, "%s-%" PRIu64, r->run, seq);
		st = natsMsgHeader_Set(nm, "Wisp-Seq", s);
	}
	if (st == NATS_OK && m->payload_len == 0)
		st = natsMsgHeader_Set(nm, "KV-Operation", "DEL");
	if (st == NATS_OK && m->payload_len && m->qos) {
		char q[2] = {(char)('0' + m->qos), '\0'};
		st = natsMsgHeader_Set(nm, "Wisp-QoS", q);
	}
	uint64_t now = loop_now_s(r->b->loop);
	if (st == NATS_OK && m->payload_len && m->expires_at) {
		char at[24];
		snprintf(at, sizeof at, "%" PRIu64, (uint64_t)time(NULL) + msg_expiry_left(m, now));
		st = natsMsgHeader_Set(nm, "Wisp-Expires", at);
	}
	if (st == NATS_OK && m->payload_len && m->props_len) {
		st = wire_set_props(nm, msg_props(m), m->props_len);
	}
	/* A plain publish: JetStream stores it (the bucket's stream listens
	 * on the subject) and the loop never waits for its answer. */
	if (st == NATS_OK)
		st = natsConnection_PublishMsg(r->nc, nm);
	natsMsg_Destroy(nm);
	if (st != NATS_OK) {
		r->b->stats.cluster.send_failed++;
		return;
	}
	pthread_mutex_lock(&r->mu);
	bool ready = r->state == SETUP_READY;
	pthread_mutex_unlock(&r->mu);
	if (ready) /* else no echo will come to clear it */
		pending_set(r, msg_topic(m), m->topic_len, seq, now);
}

/* ---- in: a record from the bucket (loop thread) ---- */


/* Whether the record should not be applied, because one of this node's own
 * writes to the topic comes after it in the stream. */
static bool superseded(struct retained_kv *r, natsMsg *nm, const char *topic, size_t len)
{
	struct pending **pp = pending_find(r, topic, len, hash_bytes(0, topic, len));
	if (!*pp)
		return false;
	if ((*pp)->at + PENDING_STALE_S < loop_now_s(r->b->loop)) {
		pending_drop(r, pp);
		return false;
	}
	const char *node = wire_header(nm, "Wisp-Node");
	const char *seq = wire_header(nm, "Wisp-Seq");
	const char *dash = seq ? strrchr(seq, '-') : NULL;
	bool own = node && dash && strcmp(node, r->node) == 0 && (size_t)(dash - seq) == strlen(r->run) &&
		   memcmp(seq, r->run, strlen(r->run)) == 0;
	switch (retained_record_verdict(true, (*pp)->seq, own, own ? strtoull(dash + 1, NULL, 10) : 0)) {
	case RECORD_APPLY:
		return false;
	case RECORD_SKIP_ARRIVED:
		pending_drop(r, pp);
		return true;
	case RECORD_SKIP:
		break;
	}
	return true;
}

static const char *apply(struct retained_kv *r, natsMsg *nm)
{
	struct broker *b = r->b;
	const char *subj = natsMsg_GetSubject(nm);
	ssize_t tlen = subject_to_topic(r->subject_prefix, subj, strlen(subj), r->buf, r->buf_cap);
	if (tlen <= 0 || tlen > UINT16_MAX || !mqtt_utf8_valid((const uint8_t *)r->buf, (size_t)tlen))
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
	pthread_mutex_lock(&r->mu);
	enum setup_state state = r->state;
	bool empty = r->empty_at_start;
	char error[sizeof r->error];
	memcpy(error, r->error, sizeof error);
	pthread_mutex_unlock(&r->mu);
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
	    (last && natsMsgHeader_Set(msg, LAST_HEADER, "1") != NATS_OK) || !inbox_push(r->inbox, msg))
		natsMsg_Destroy(msg); /* a full inbox counts it */
}

/* ---- the set-up thread ---- */

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
		char subject[160];
		snprintf(subject, sizeof subject, "%s.>", r->subject_prefix);
		jsSubOptions so;
		jsSubOptions_Init(&so);
		so.Stream = stream;
		so.Config.AckPolicy = js_AckNone;
		so.Config.DeliverPolicy = js_DeliverLastPerSubject;
		/* Synchronous: this module's thread reads it (setup_main), so
		 * no record waits in cnats's shared delivery queue at exit,
		 * where cnats would never free it. */
		st = js_SubscribeSync(&r->sub, r->js, subject, NULL, &so, &jerr);
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
	 * a stop waits for this thread. */
	while (!stopping) {
		natsMsg *msg = NULL;
		natsStatus st = natsSubscription_NextMsg(&msg, r->sub, READ_WAIT_MS);
		if (st == NATS_OK)
			on_record(r, msg);
		else if (st != NATS_TIMEOUT)
			nats_Sleep(READ_WAIT_MS); /* the connection is away: cnats reconnects it */
		pthread_mutex_lock(&r->mu);
		stopping = r->stopping;
		pthread_mutex_unlock(&r->mu);
	}
	return NULL;
}

int retained_kv_start(struct retained_kv **out, struct broker *b, natsConnection *nc, struct inbox *inbox,
		      const char *node, const void *origin)
{
	const struct config_cluster *cfg = &b->cfg->cluster;
	*out = NULL;
	struct retained_kv *r = wisp_calloc(1, sizeof *r);
	if (!r)
		return WISP_ENOMEM;
	r->b = b;
	r->nc = nc;
	r->inbox = inbox;
	r->origin = origin;
	r->replicas = (int)cfg->retained_replicas;
	r->node = wisp_strndup(node, strlen(node));
	r->bucket = wisp_strndup(cfg->retained_bucket, strlen(cfg->retained_bucket));
	size_t plen = strlen("$KV.") + strlen(cfg->retained_bucket);
	r->subject_prefix = wisp_malloc(plen + 1);
	r->buf_cap = SUBJECT_MAX(plen, 65535);
	r->buf = wisp_malloc(r->buf_cap);
	pthread_mutex_init(&r->mu, NULL);
	pthread_cond_init(&r->cv, NULL);
	if (!r->node || !r->bucket || !r->subject_prefix || !r->buf) {
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
	if (pthread_create(&r->thread, NULL, setup_main, r) != 0) {
		retained_kv_free(r);
		return WISP_EIO;
	}
	r->thread_started = true;
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
	if (pthread_create(&r->thread, NULL, setup_main, r) != 0)
		return WISP_EIO;
	r->thread_started = true;
	return 0;
}

void retained_kv_stop(struct retained_kv *r, struct nats_retire *retired)
{
	if (!r)
		return;
	if (r->thread_started) {
		pthread_mutex_lock(&r->mu);
		r->stopping = true;
		pthread_cond_signal(&r->cv);
		pthread_mutex_unlock(&r->mu);
		pthread_join(r->thread, NULL);
		r->thread_started = false;
	}
	/* Not unsubscribed: that would ask JetStream to delete the consumer,
	 * and the answer, arriving as the connection closes, is never freed
	 * by cnats. The server drops the ephemeral consumer with the
	 * connection's interest. */
	nats_retire_sub(retired, &r->sub);
	jsCtx_Destroy(r->js);
	r->js = NULL;
}

void retained_kv_free(struct retained_kv *r)
{
	if (!r)
		return;
	retained_kv_stop(r, NULL);
	for (size_t i = 0; i < PENDING_BUCKETS; i++)
		while (r->pending[i])
			pending_drop(r, &r->pending[i]);
	pthread_mutex_destroy(&r->mu);
	pthread_cond_destroy(&r->cv);
	wisp_free(r->buf);
	wisp_free(r->subject_prefix);
	wisp_free(r->bucket);
	wisp_free(r->node);
	wisp_free(r);
}
