/* The cluster's pure decisions (rules.h). */
#include "rules.h"

#include <stdlib.h>
#include <string.h>

bool claim_loses_to_local(uint64_t mine_ns, const char *my_node, uint64_t claim_ns, const char *claim_node)
{
	if (mine_ns != claim_ns)
		return mine_ns > claim_ns;
	return strcmp(my_node, claim_node) > 0;
}

uint64_t claim_time(uint64_t now_ns, uint64_t known_ns)
{
	if (now_ns > known_ns)
		return now_ns;
	return known_ns < UINT64_MAX ? known_ns + 1 : known_ns;
}

enum record_verdict retained_record_verdict(bool has_pending, bool unsent, uint64_t acked_seq, uint64_t record_seq)
{
	if (!has_pending)
		return RECORD_APPLY;
	/* Not acknowledged yet: ours goes into the stream after whatever is
	 * read now (another node's record, or our own older one). */
	if (unsent || record_seq < acked_seq)
		return RECORD_SKIP;
	return record_seq == acked_seq ? RECORD_SKIP_ARRIVED : RECORD_APPLY;
}

size_t figures_parse(const char *p, size_t len, const char *const *names, size_t n, uint64_t *values)
{
	const char *end = p + len;
	size_t set = 0;
	while (p < end) {
		const char *sp = memchr(p, ' ', (size_t)(end - p));
		const char *item_end = sp ? sp : end;
		const char *eq = memchr(p, '=', (size_t)(item_end - p));
		size_t vlen = eq ? (size_t)(item_end - eq - 1) : 0;
		char num[21]; /* UINT64_MAX has 20 digits */
		bool digits = eq && vlen > 0 && vlen < sizeof num;
		for (size_t k = 0; digits && k < vlen; k++)
			digits = eq[1 + k] >= '0' && eq[1 + k] <= '9';
		if (digits) {
			memcpy(num, eq + 1, vlen);
			num[vlen] = '\0';
			for (size_t i = 0; i < n; i++)
				if (strlen(names[i]) == (size_t)(eq - p) && memcmp(names[i], p, (size_t)(eq - p)) == 0) {
					values[i] = strtoull(num, NULL, 10);
					set++;
				}
		}
		p = item_end + 1;
	}
	return set;
}
