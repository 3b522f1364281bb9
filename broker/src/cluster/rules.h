/*
 * The pure decisions of the cluster's shared state, apart from NATS so
 * they are unit-tested (tests/unit/test_cluster_rules.c):
 *  - which of two connects of one client id stays, and the time a claim
 *    carries (presence.h);
 *  - whether a record from the retained bucket is applied (retained_kv.h);
 *  - a node's figures message (totals.h).
 */
#ifndef WISP_CLUSTER_RULES_H
#define WISP_CLUSTER_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Whether this node's connection of an id (connected at mine_ns by its
 * clock, 0: not among the recent connects, so older than any claim still
 * in flight) stays against another node's claim made at claim_ns: the
 * later connect stays, equal times go to the greater node name. */
bool claim_loses_to_local(uint64_t mine_ns, const char *my_node, uint64_t claim_ns, const char *claim_node);
/* The time a new claim of an id carries: the node's clock now_ns, but
 * after known_ns, the last claim of the id the node heard or made (0:
 * none), so that it is the later one whatever the clocks say (a hybrid
 * logical clock; docs/cluster.md "Which connect is the later one"). */
uint64_t claim_time(uint64_t now_ns, uint64_t known_ns);

/* What to do with a record of a topic while one of this node's own writes
 * to it is not yet known to be behind us in the bucket's stream. */
enum record_verdict {
	RECORD_APPLY,         /* no write of ours before it (or none at all): apply (and forget the entry) */
	RECORD_SKIP,          /* the stream holds (or will hold) our write after it: skip */
	RECORD_SKIP_ARRIVED,  /* our acknowledged write itself: the store has it; forget the entry */
};
/* has_pending: the topic has an entry; unsent: its last write is not
 * acknowledged by JetStream yet (it will land after every record read so
 * far); else acked_seq is the stream sequence JetStream gave it, and
 * record_seq the record's. */
enum record_verdict retained_record_verdict(bool has_pending, bool unsent, uint64_t acked_seq, uint64_t record_seq);

/* Parses "name=value name=value ..." (len bytes, no NUL needed): for each
 * names[i] present, values[i] = its value (others untouched). Malformed
 * items and unknown names are skipped. Returns how many were set. */
size_t figures_parse(const char *p, size_t len, const char *const *names, size_t n, uint64_t *values);

#endif
