/*
 * Why a message was dropped instead of delivered. One list, so every bound
 * that drops a message counts it the same way: a counter per reason in
 * struct broker_stats (broker_count_drop), published as
 * $SYS/broker/messages/dropped/<name>, and a log line per episode that names
 * the configuration key whose bound was hit.
 *
 * A new bound that drops messages adds one X() line here (before the
 * count); sys.c and the logs pick it up. `key` is NULL for drops that are
 * documented behaviour rather than a bound (QoS 0 for an offline client):
 * those are counted but not logged.
 */
#ifndef WISP_CORE_DROP_H
#define WISP_CORE_DROP_H

#define DROP_REASONS(X)                                                     \
	X(QUEUE_FULL, "queue_full", "limits.max_queued_messages")           \
	X(QUEUE_BYTES, "queue_bytes", "limits.max_queued_bytes")            \
	X(OUTPUT_FULL, "output_full", "limits.max_output_buffer")           \
	X(OFFLINE_QOS0, "offline_qos0", NULL)                               \
	X(NO_MEMORY, "no_memory", "limits.memory_limit")                    \
	X(EXPIRED, "expired", NULL)                                         \
	X(PAYLOAD_INVALID, "payload_format_invalid", NULL)                  \
	X(TOO_LARGE, "packet_too_large", NULL)                              \
	/* broker-wide: logged once per episode by session/delivery.c */     \
	X(QUEUE_TOTAL, "queue_total", NULL)

enum drop_reason {
#define DROP_ENUM(id, name, key) DROP_##id,
	DROP_REASONS(DROP_ENUM)
#undef DROP_ENUM
	DROP_REASON_COUNT
};

/* The $SYS topic suffix, e.g. "queue_full". */
static inline const char *drop_reason_name(enum drop_reason r)
{
	switch (r) {
#define DROP_NAME(id, name, key) \
	case DROP_##id:          \
		return name;
		DROP_REASONS(DROP_NAME)
#undef DROP_NAME
	case DROP_REASON_COUNT:
		break;
	}
	return "unknown";
}

/* The configuration key of the bound, or NULL when none applies. */
static inline const char *drop_reason_key(enum drop_reason r)
{
	switch (r) {
#define DROP_KEY(id, name, key) \
	case DROP_##id:         \
		return key;
		DROP_REASONS(DROP_KEY)
#undef DROP_KEY
	case DROP_REASON_COUNT:
		break;
	}
	return NULL;
}

#endif
