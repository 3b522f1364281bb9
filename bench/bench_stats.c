/*
 * Clocks, the latency histogram and /proc sampling for wisp_bench.
 *
 * The histogram is log-linear: exact below 64 ns, then 32 sub-buckets per
 * power of two, so any reported quantile is within about 3% of the true
 * value, in a fixed 16 KiB with no allocation. Quantiles report the middle
 * of their bucket.
 *
 * Broker CPU comes from /proc/PID/stat (utime + stime, in clock ticks of
 * 10 ms on Debian), so a window of a few seconds resolves it to well under
 * 1%. Single-threaded.
 */
#include "bench.h"

#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t bench_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static unsigned hist_index(uint64_t v)
{
	if (v < 64)
		return (unsigned)v;
	unsigned msb = 63u - (unsigned)__builtin_clzll(v);
	unsigned mant = (unsigned)(v >> (msb - 5)); /* 32..63 */
	return 64u + (msb - 6u) * 32u + (mant - 32u);
}

/* Lower bound and width of bucket i. */
static void hist_bucket(unsigned i, uint64_t *lo, uint64_t *width)
{
	if (i < 64) {
		*lo = i;
		*width = 1;
		return;
	}
	unsigned k = (i - 64u) / 32u, m = (i - 64u) % 32u + 32u;
	unsigned msb = k + 6u;
	*lo = (uint64_t)m << (msb - 5u);
	*width = 1ull << (msb - 5u);
}

_Static_assert(64u + (63u - 6u) * 32u + 31u < BENCH_HIST_BUCKETS, "histogram covers 64-bit values");

void bench_hist_add(struct bench_hist *h, uint64_t v)
{
	h->bucket[hist_index(v)]++;
	h->count++;
	h->sum += v;
	if (v > h->max)
		h->max = v;
}

uint64_t bench_hist_quantile(const struct bench_hist *h, double q)
{
	if (h->count == 0)
		return 0;
	uint64_t rank = (uint64_t)(q * (double)h->count);
	if (rank >= h->count)
		rank = h->count - 1;
	uint64_t seen = 0;
	for (unsigned i = 0; i < BENCH_HIST_BUCKETS; i++) {
		seen += h->bucket[i];
		if (seen > rank) {
			uint64_t lo, w;
			hist_bucket(i, &lo, &w);
			uint64_t mid = lo + w / 2;
			return mid > h->max ? h->max : mid;
		}
	}
	return h->max;
}

int bench_proc_read(pid_t pid, struct bench_proc *out)
{
	char path[64], buf[1024];
	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	FILE *f = fopen(path, "r");
	if (!f)
		return -1;
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p)
		return -1;
	unsigned long long utime = 0, stime = 0;
	long long rss = 0;
	/* Fields 3.. : state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime(14) stime(15) cutime cstime priority nice threads itreal
	 * starttime vsize rss(24). */
	int got = sscanf(p + 1,
			 " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %*u %*u %lld",
			 &utime, &stime, &rss);
	if (got != 3)
		return -1;
	out->cpu_ticks = utime + stime;
	out->rss_bytes = rss > 0 ? (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE) : 0;
	return 0;
}

double bench_proc_tick_s(void)
{
	long t = sysconf(_SC_CLK_TCK);
	return 1.0 / (double)(t > 0 ? t : 100);
}

double bench_self_cpu_s(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
	       (double)ru.ru_stime.tv_usec / 1e6;
}
