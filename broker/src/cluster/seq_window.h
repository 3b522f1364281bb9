/*
 * The JetStream stream sequences a consumer's messages were routed at:
 * what tells a redelivery from a first delivery (durable.c), and, as text,
 * what a session's handover carries to say what its old node had routed
 * (the cut: handover_fetch.c).
 *
 * A floor (every sequence up to it counts as routed) and a bitmap of the
 * sequences above it. The floor moves up over what is marked contiguous
 * above it, and to the consumer's ack floor at JetStream when the caller
 * learns it (seq_window_raise): JetStream never delivers again what it
 * has as acked, so what lies at or below that is settled whether it was
 * routed here or not (acked unrouted: the node's own, say). Nothing else
 * moves it: a message delivered and left unacked (an inbox that was full,
 * a node killed before it routed it) keeps the floor below it until its
 * redelivery is marked or JetStream has it as acked, however many newer
 * sequences pass it meanwhile. (A floor that followed the newest sequence
 * by a fixed span took such a redelivery for one routed before: acked,
 * never routed.)
 *
 * The bitmap starts at `span` sequences and doubles, up to `max_span`,
 * while the marks reach further above the floor; it does not shrink. A
 * sequence more than max_span above the floor is not marked
 * (SEQ_WINDOW_FAR): the caller leaves it unacked, for a redelivery once
 * the floor has come nearer.
 *
 * Text: "<floor>" or "<floor>:<hex>", hex digit i holding the sequences
 * floor+1+4i .. floor+4+4i, its bit k for floor+1+4i+k; the digits end at
 * the highest sequence marked. About max_span/4 characters at most.
 *
 * Cost: marking is O(1) plus the floor's advance over marked sequences
 * (each passed once), a growth O(span); raising O(what it passes, at most
 * span); encoding O(highest marked - floor). Memory: span/8 bytes, at
 * most max_span/8. Single threaded.
 */
#ifndef WISP_CLUSTER_SEQ_WINDOW_H
#define WISP_CLUSTER_SEQ_WINDOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct seq_window {
	uint64_t floor;
	uint64_t top;     /* the highest sequence marked (floor when none above it) */
	bool init;        /* false: nothing marked, restored or raised to yet */
	uint8_t *bits;    /* bit seq % span */
	size_t span;      /* sequences above the floor the bitmap holds now */
	size_t max_span;  /* what it may grow to */
};

enum seq_mark {
	SEQ_WINDOW_NEW,    /* marked now: a first delivery */
	SEQ_WINDOW_MARKED, /* marked before, or at or below the floor: a redelivery */
	SEQ_WINDOW_FAR,    /* more than max_span above the floor (or no memory to grow): not marked */
};

/* 8 <= span <= max_span, both sequences. 0, or WISP_ENOMEM. */
int seq_window_init(struct seq_window *w, size_t span, size_t max_span);
void seq_window_free(struct seq_window *w);
/* What a store kept: the floor and the sequences marked above it (those
 * more than max_span above it are left out). Before any mark. */
void seq_window_restore(struct seq_window *w, uint64_t floor, const uint64_t *marked, size_t n);
/* Marks seq. The first mark of a window with nothing restored or raised
 * to puts the floor span below seq, so that the redeliveries of what an
 * earlier run left unacked within that still count as new (callers that
 * know the consumer's ack floor raise to it first). */
enum seq_mark seq_window_mark(struct seq_window *w, uint64_t seq);
/* Everything at or below floor counts as routed from now on (the
 * consumer's ack floor at JetStream); a floor below the window's does
 * nothing, except that it starts a window nothing started yet. */
void seq_window_raise(struct seq_window *w, uint64_t floor);
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
