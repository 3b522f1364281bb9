/*
 * The metrics table (proto/metrics.c): $SYS and the Prometheus text render
 * the same figures from it. A real broker (no traffic) gets known counter
 * values; sys_publish stores the $SYS figures as retained messages, and
 * every one of them is found in the Prometheus rendering with the same
 * value, under a "# HELP" and a "# TYPE" line, in the exposition format.
 */
#include <CUnit/Basic.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unit_main.h"
#include "alloc.h"
#include "broker.h"
#include "drop.h"
#include "log.h"
#include "loop.h"
#include "metrics.h"
#include "sbuf.h"
#include "sys.h"

static const char config_json[] =
	"{\"listeners\": [{\"bind\": \"127.0.0.1\", \"port\": 0}, {\"bind\": \"127.0.0.1\", \"port\": 0}],"
	" \"persistence\": {\"enabled\": false}, \"log\": {\"level\": \"error\"}, \"sys_interval\": 0}";

static struct loop *loop;
static struct config *cfg;
static struct broker b;
static struct sbuf prom;

static int setup(void)
{
	char err[256];
	if (config_parse(config_json, strlen(config_json), "test", &cfg, err, sizeof err) != 0)
		return 1;
	log_set_level(LOG_ERROR);
	loop = loop_new();
	if (!loop || broker_init(&b, loop, cfg, err, sizeof err) != 0)
		return 1;
	/* Distinct values, so a row reading the wrong field shows. */
	uint64_t *stats = (uint64_t *)(void *)&b.stats;
	for (size_t i = 0; i < sizeof b.stats / sizeof(uint64_t); i++)
		stats[i] = 1000 + i;
	b.srv.listeners[1].conns_refused = 7;
	b.srv.listeners[0].conn_count = 3;
	sys_publish(&b);
	metrics_render_prometheus(&b, &prom);
	return prom.failed || !prom.data;
}

static int teardown(void)
{
	sbuf_free(&prom);
	broker_free(&b);
	loop_free(loop);
	config_free(cfg);
	return 0;
}

/* The value of the sample line `sample` ("wisp_x{l=\"v\"}"), or NULL. */
static const char *sample_value(const char *sample)
{
	size_t n = strlen(sample);
	for (const char *p = prom.data; (p = strstr(p, sample)) != NULL; p += n) {
		if ((p == prom.data || p[-1] == '\n') && p[n] == ' ')
			return p + n + 1;
	}
	return NULL;
}

/* "$SYS/broker/" + a row's topic (or alias), with the label's value for a family. */
static void sys_topic_of(const char *pattern, const char *lv, char *buf, size_t len)
{
	const char *pct = strstr(pattern, "%s");
	if (pct)
		snprintf(buf, len, "$SYS/broker/%.*s%s%s", (int)(pct - pattern), pattern, lv, pct + 2);
	else
		snprintf(buf, len, "$SYS/broker/%s", pattern);
}

/* Every $SYS topic a row publishes holds the value of its Prometheus sample. */
static void test_sys_and_prometheus_agree(void)
{
	struct metrics_snap snap;
	metrics_snapshot(&b, &snap);
	size_t checked = 0;
	for (size_t r = 0; r < metrics_count; r++) {
		const struct metric *m = &metrics_table[r];
		if (!m->sys || !metrics_shown(m, &snap))
			continue;
		for (size_t i = 0; i < metrics_label_count(&b, m); i++) {
			char topic[160], sample[200];
			const char *lv = metrics_label_value(&b, m, i);
			sys_topic_of(m->sys, lv, topic, sizeof topic);
			if (m->label == METRIC_LABEL_NONE)
				snprintf(sample, sizeof sample, "wisp_%s", m->name);
			else
				snprintf(sample, sizeof sample, "wisp_%s{%s=\"%s\"}", m->name,
					 m->label == METRIC_LABEL_REASON || m->label == METRIC_LABEL_DISCONNECT ? "reason"
					 : m->label == METRIC_LABEL_WINDOW ? "window" : "version", lv);
			struct msg *sys = retained_get(b.retained, topic, strlen(topic));
			const char *pv = sample_value(sample);
			CU_ASSERT_PTR_NOT_NULL(sys);
			CU_ASSERT_PTR_NOT_NULL(pv);
			if (!sys || !pv) {
				fprintf(stderr, "missing: %s / %s\n", topic, sample);
				continue;
			}
			char sv[64];
			snprintf(sv, sizeof sv, "%.*s", (int)sys->payload_len, (const char *)msg_payload(sys));
			/* These move as $SYS itself publishes: its retained figures
			 * and the heap they take. */
			bool moving = m->offset == offsetof(struct metrics_snap, retained) ||
				      m->offset == offsetof(struct metrics_snap, heap) ||
				      m->offset == offsetof(struct metrics_snap, heap_max);
			if (m->source == METRIC_FROM_SNAP && moving) {
				CU_ASSERT(strtoull(pv, NULL, 10) > 0);
			} else if (m->sys_format == METRIC_SYS_INT || m->sys_format == METRIC_SYS_SECONDS) {
				if (strtoull(sv, NULL, 10) != strtoull(pv, NULL, 10))
					fprintf(stderr, "differ: %s %s / %s %s", topic, sv, sample, pv);
				CU_ASSERT_EQUAL(strtoull(sv, NULL, 10), strtoull(pv, NULL, 10));
			} else if (m->sys_format == METRIC_SYS_FLOAT2) {
				CU_ASSERT_DOUBLE_EQUAL(strtod(sv, NULL), strtod(pv, NULL), 0.01);
			} else if (m->sys_format == METRIC_SYS_VERSION) {
				CU_ASSERT_PTR_NOT_NULL(strstr(sv, lv));
				CU_ASSERT_EQUAL(strtoull(pv, NULL, 10), 1);
			}
			if (m->sys_alias) {
				sys_topic_of(m->sys_alias, lv, topic, sizeof topic);
				struct msg *alias = retained_get(b.retained, topic, strlen(topic));
				CU_ASSERT_PTR_NOT_NULL(alias);
				if (alias)
					CU_ASSERT_EQUAL(alias->payload_len, sys->payload_len);
			}
			checked++;
		}
	}
	CU_ASSERT(checked >= 60);
}

/* Every drop reason of drop.h is a $SYS topic and a Prometheus sample with
 * the counter's value. */
static void test_every_drop_reason_in_both(void)
{
	for (int r = 0; r < DROP_REASON_COUNT; r++) {
		char topic[128], sample[128], want[32];
		const char *name = drop_reason_name((enum drop_reason)r);
		snprintf(topic, sizeof topic, "$SYS/broker/messages/dropped/%s", name);
		snprintf(sample, sizeof sample, "wisp_messages_dropped_total{reason=\"%s\"}", name);
		snprintf(want, sizeof want, "%llu\n", (unsigned long long)b.stats.dropped[r]);
		CU_ASSERT_PTR_NOT_NULL(retained_get(b.retained, topic, strlen(topic)));
		const char *pv = sample_value(sample);
		CU_ASSERT(pv && strncmp(pv, want, strlen(want)) == 0);
	}
}

/* Every disconnect and refusal reason of session/reason.h is a $SYS topic
 * and a Prometheus sample with the counter's value; the older aggregate
 * topics are the sums of their groups in both. */
static void test_every_disconnect_reason_in_both(void)
{
	uint64_t malformed = 0;
	for (int r = 0; r < REASON_COUNT; r++) {
		char topic[128], sample[128], want[32];
		const struct reason_info *ri = reason_info((enum reason)r);
		snprintf(topic, sizeof topic, "$SYS/broker/clients/disconnects/%s", ri->name);
		snprintf(sample, sizeof sample, "wisp_disconnects_total{reason=\"%s\"}", ri->name);
		snprintf(want, sizeof want, "%llu\n", (unsigned long long)b.stats.reasons[r]);
		CU_ASSERT_PTR_NOT_NULL(retained_get(b.retained, topic, strlen(topic)));
		const char *pv = sample_value(sample);
		CU_ASSERT(pv && strncmp(pv, want, strlen(want)) == 0);
		if (ri->group == REASON_G_MALFORMED)
			malformed += b.stats.reasons[r];
	}
	char want[32];
	snprintf(want, sizeof want, "%llu\n", (unsigned long long)malformed);
	const char *pv = sample_value("wisp_clients_malformed_total");
	CU_ASSERT(malformed > 0 && pv && strncmp(pv, want, strlen(want)) == 0);
}

/* Listener families carry the listener label, one sample per listener. */
static void test_listener_labels(void)
{
	char sample[160];
	snprintf(sample, sizeof sample, "wisp_listener_connections{listener=\"%s\"}", b.srv.listeners[0].net.name);
	const char *v = sample_value(sample);
	CU_ASSERT(v && strncmp(v, "3\n", 2) == 0);
	snprintf(sample, sizeof sample, "wisp_listener_connections_refused_total{listener=\"%s\"}",
		 b.srv.listeners[1].net.name);
	v = sample_value(sample);
	CU_ASSERT(v && strncmp(v, "7\n", 2) == 0);
	snprintf(sample, sizeof sample, "wisp_listener_up{listener=\"%s\"}", b.srv.listeners[1].net.name);
	v = sample_value(sample);
	CU_ASSERT(v && strncmp(v, "1\n", 2) == 0);
}

/*
 * The exposition format 0.0.4: every family has one HELP and one TYPE line
 * before its samples, names are unique and [a-zA-Z_:][a-zA-Z0-9_:]*,
 * counters end in _total, every line ends in '\n'.
 */
static void test_exposition_format(void)
{
	CU_ASSERT_EQUAL(prom.data[prom.len - 1], '\n');
	char current[128] = "";
	size_t families = 0;
	for (char *line = prom.data; *line;) {
		char *nl = strchr(line, '\n');
		CU_ASSERT_FATAL(nl != NULL);
		*nl = '\0';
		char name[128];
		if (strncmp(line, "# HELP ", 7) == 0) {
			CU_ASSERT_EQUAL(sscanf(line + 7, "%127s", name), 1);
			/* a family appears once: no HELP for it earlier */
			char needle[140];
			snprintf(needle, sizeof needle, "# HELP %s ", name);
			CU_ASSERT_PTR_EQUAL(strstr(prom.data, needle), line);
			snprintf(current, sizeof current, "%s", name);
			families++;
			for (const char *p = name; *p; p++)
				CU_ASSERT(isalnum((unsigned char)*p) || *p == '_' || *p == ':');
		} else if (strncmp(line, "# TYPE ", 7) == 0) {
			char type[32];
			CU_ASSERT_EQUAL(sscanf(line + 7, "%127s %31s", name, type), 2);
			CU_ASSERT_STRING_EQUAL(name, current);
			CU_ASSERT(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0);
			size_t n = strlen(name);
			if (strcmp(type, "counter") == 0)
				CU_ASSERT(n > 6 && strcmp(name + n - 6, "_total") == 0);
		} else {
			/* a sample of the current family */
			size_t n = strlen(current);
			CU_ASSERT(strncmp(line, current, n) == 0 && (line[n] == ' ' || line[n] == '{'));
		}
		*nl = '\n';
		line = nl + 1;
	}
	CU_ASSERT(families >= 45);
}

/* A label value with a quote, a backslash or a newline is escaped. */
static void test_label_escaping(void)
{
	char saved[sizeof b.srv.listeners[0].net.name];
	memcpy(saved, b.srv.listeners[0].net.name, sizeof saved);
	snprintf(b.srv.listeners[0].net.name, sizeof b.srv.listeners[0].net.name, "a\"b\\c\nd");
	struct sbuf out = {0};
	metrics_render_prometheus(&b, &out);
	CU_ASSERT_FALSE(out.failed);
	CU_ASSERT_PTR_NOT_NULL(strstr(out.data, "wisp_listener_up{listener=\"a\\\"b\\\\c\\nd\"} 1\n"));
	sbuf_free(&out);
	memcpy(b.srv.listeners[0].net.name, saved, sizeof saved);
}

/* Out of memory, or past max, the rendering reports failure, leaking nothing. */
static void test_render_fails_cleanly(void)
{
	for (uint64_t n = 1; n <= 4; n++) {
		struct sbuf out = {0};
		wisp_mem_fail_after(n, 1);
		metrics_render_prometheus(&b, &out);
		wisp_mem_fail_after(0, 0);
		CU_ASSERT_TRUE(out.failed);
		sbuf_free(&out);
	}
	struct sbuf small = {.max = 100};
	metrics_render_prometheus(&b, &small);
	CU_ASSERT_TRUE(small.failed);
	CU_ASSERT(small.len <= 100);
	sbuf_free(&small);
}

static void test_sbuf_json_escaping(void)
{
	struct sbuf s = {0};
	sbuf_add_json(&s, "a\"b\\c\n\x01\x7f" "d\xc3\xa9", 11);
	CU_ASSERT_STRING_EQUAL(s.data, "a\\\"b\\\\c\\u000a\\u0001\\u007fd\xc3\xa9");
	sbuf_free(&s);
}

/* RFC 8259 8.1: "JSON text exchanged between systems ... MUST be encoded
 * using UTF-8". Ill-formed bytes become U+FFFD, one per maximal subpart
 * (Unicode 15, 3.9), well-formed ones pass unchanged. */
static void test_sbuf_json_utf8(void)
{
	static const struct {
		const char *in;
		size_t len;
		const char *out;
	} cases[] = {
		{"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 9, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80"},
		{"a\xff" "b", 3, "a\\ufffdb"},
		{"\x80\x80", 2, "\\ufffd\\ufffd"},
		{"\xc3", 1, "\\ufffd"},                 /* cut short */
		{"\xe2\x82", 2, "\\ufffd"},            /* one maximal subpart */
		{"\xe2\x82" "A", 3, "\\ufffdA"},
		{"\xc0\xaf", 2, "\\ufffd\\ufffd"},       /* overlong '/' */
		{"\xed\xa0\x80", 3, "\\ufffd\\ufffd\\ufffd"}, /* a surrogate */
		{"\xf4\x90\x80\x80", 4, "\\ufffd\\ufffd\\ufffd\\ufffd"}, /* past U+10FFFF */
		{"\xf0\x9f\x98", 3, "\\ufffd"},
		{"x\xf0\x9f\x98\"", 5, "x\\ufffd\\\""},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct sbuf s = {0};
		sbuf_add_json(&s, cases[i].in, cases[i].len);
		CU_ASSERT_PTR_NOT_NULL_FATAL(s.data);
		if (strcmp(s.data, cases[i].out) != 0)
			printf("case %zu: %s\n", i, s.data);
		CU_ASSERT_STRING_EQUAL(s.data, cases[i].out);
		sbuf_free(&s);
	}
}

/* Cleared after a failure, the buffer takes appends again, in the memory
 * it had. */
static void test_sbuf_clear_reuses(void)
{
	struct sbuf s = {.max = 8};
	sbuf_adds(&s, "abc");
	char *mem = s.data;
	sbuf_adds(&s, "0123456789");
	CU_ASSERT_TRUE(s.failed);
	CU_ASSERT_STRING_EQUAL(s.data, "abc");
	sbuf_clear(&s);
	CU_ASSERT_FALSE(s.failed);
	CU_ASSERT_EQUAL(s.len, 0);
	sbuf_addf(&s, "%d-%s", 42, "x");
	CU_ASSERT_STRING_EQUAL(s.data, "42-x");
	CU_ASSERT_PTR_EQUAL(s.data, mem);
	sbuf_free(&s);
}

static CU_TestInfo metric_tests[] = {
	{"every $SYS figure has the same value in Prometheus", test_sys_and_prometheus_agree},
	{"every drop reason is in $SYS and Prometheus", test_every_drop_reason_in_both},
	{"every disconnect reason is in $SYS and Prometheus", test_every_disconnect_reason_in_both},
	{"listener families are labelled by listener", test_listener_labels},
	{"exposition format 0.0.4: HELP, TYPE, names, _total", test_exposition_format},
	{"label values are escaped", test_label_escaping},
	{"out of memory or over max: failed, no leak", test_render_fails_cleanly},
	{"JSON string escaping", test_sbuf_json_escaping},
	{"JSON strings are UTF-8: U+FFFD for ill-formed bytes", test_sbuf_json_utf8},
	{"a cleared buffer is used again", test_sbuf_clear_reuses},
	CU_TEST_INFO_NULL,
};

static CU_SuiteInfo suites[] = {
	{"metrics", setup, teardown, NULL, NULL, metric_tests},
	CU_SUITE_INFO_NULL,
};

int main(void)
{
	return unit_run(suites);
}
