/*
 * The JetStream stream sequences a consumer's messages were routed at:
 * what tells a redelivery from a first delivery (durable.c), and, as text,
 * what a session's handover carries to say what its old node had routed
 * (handover.c's cut).
 *
 * A floor (every sequence up to it counts as routed) and a bitmap of the
 * `span` sequences above it. A consumer has at most MaxAckPending messages
 * delivered and not acked, so a redelivery is never more than that below
 * the newest sequence routed; span is a multiple of it (durable.c: four
 * times cluster.inbound_queue). A sequence more than span above the floor
 * moves the floor up to it less span: what it passes is forgotten, and
 * counts as routed from then on (messages aged out of the stream, or a
 * consumer made again further on).
 *
 * Text: "<floor>" or "<floor>:<hex>", hex digit i holding the sequences
 * floor+1+4i .. floor+4+4i, its bit k for floor+1+4i+k; the digits end at
 * the highest sequence marked. About span/4 characters at most.
 *
 * Cost: marking is O(1) plus the floor's advance over marked sequences
 * (each passed once); encoding O(span). Memory: span/8 bytes. Single
 * threaded.
 */
#ifndef WISP_CLUSTER_SEQ_WINDOW_H
#define WISP_CLUSTER_SEQ_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct seq_window {
	uint64_t floor;
	bool init;      /* false: nothing marked or restored yet */
	uint8_t *bits;  /* bit seq % span */
	size_t span;
};

/* span >= 8 sequences. 0, or WISP_ENOMEM. */
int seq_window_init(struct seq_window *w, size_t span);
void seq_window_free(struct seq_window *w);
/* What a store kept: the floor and the sequences marked above it (those
 * more than span above it are left out). Before any mark. */
void seq_window_restore(struct seq_window *w, uint64_t floor, const uint64_t *marked, size_t n);
/* Marks seq; returns whether it was marked already (at or below the
 * floor counts). The first mark of a window with nothing restored puts the
 * floor span below seq, so that the redeliveries of what an earlier run
 * left unacked still count as new. */
bool seq_window_mark(struct seq_window *w, uint64_t seq);
/* Whether seq is marked, without marking it. */
bool seq_window_has(const struct seq_window *w, uint64_t seq);
/* The text form into out (NUL-terminated): its length, 0 when it does
 * not fit cap bytes. */
size_t seq_window_encode(const struct seq_window *w, char *out, size_t cap);

/* A text form, parsed in place (hex points into it). */
struct seq_set {
	uint64_t floor;
	const char *hex;
	size_t digits;
};

/* false: NULL, empty or malformed. */
bool seq_set_parse(const char *text, struct seq_set *out);
/* Whether seq (not 0) is in the set. */
bool seq_set_has(const struct seq_set *s, uint64_t seq);
/* The highest sequence in the set (its floor when no bit is set). */
uint64_t seq_set_max(const struct seq_set *s);
/* The same on the text form; a malformed one holds nothing (max 0). */
bool seq_text_has(const char *text, uint64_t seq);
uint64_t seq_text_max(const char *text);

#endif
