/*
 * hmap.c — an index of pointers by a 64-bit hash, for tables the relay
 * looks up on every recipient (its MX routes, its destinations, the
 * addresses pools share). Open addressing with linear probing; the items
 * belong to the caller, who also says when two match (the hash only
 * narrows the search). Removal shifts the run back, so no tombstones.
 *
 * Invariant: every item sits in the run of occupied slots that starts at
 * its hash's home slot; the table is at most 3/4 full; cap is a power of
 * two (or 0 before the first put).
 *
 * The hash is FNV-1a over the key's bytes, started from a seed the
 * process draws once, so that the layout of a table is not known to
 * whoever chooses the keys (recipient domains come from clients).
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "base/base.h"

static uint64_t seed;

static uint64_t hash_seed(void)
{
	if (seed) return seed;
	uint64_t s = 0;
	if (getrandom(&s, sizeof s, GRND_NONBLOCK) != (ssize_t)sizeof s) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		s = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^ (uint64_t)ts.tv_sec;
	}
	seed = (s | 1) ^ 0xcbf29ce484222325ull; /* never 0: 0 means not drawn */
	return seed;
}

uint64_t base_hash_mix(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	if (!h) h = hash_seed();
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

uint64_t base_hash_lower(uint64_t h, const char *s)
{
	if (!h) h = hash_seed();
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		h ^= c >= 'A' && c <= 'Z' ? c + 32 : c;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* The last step spreads the high bits into the low ones the mask keeps. */
static size_t home(const struct base_hmap *m, uint64_t h)
{
	h ^= h >> 29;
	h *= 0xbf58476d1ce4e5b9ull;
	h ^= h >> 32;
	return (size_t)h & (m->cap - 1);
}

static void grow(struct base_hmap *m)
{
	struct base_hmap n = {base_xcalloc(m->cap ? 2 * m->cap : 16, sizeof *n.s),
	                      m->cap ? 2 * m->cap : 16, 0};
	for (size_t i = 0; i < m->cap; i++)
		if (m->s[i].p) base_hmap_put(&n, m->s[i].h, m->s[i].p);
	free(m->s);
	*m = n;
}

void base_hmap_put(struct base_hmap *m, uint64_t h, void *item)
{
	if (4 * (m->n + 1) > 3 * m->cap) grow(m);
	size_t i = home(m, h);
	while (m->s[i].p) i = (i + 1) & (m->cap - 1);
	m->s[i].h = h;
	m->s[i].p = item;
	m->n++;
}

void *base_hmap_find(const struct base_hmap *m, uint64_t h,
                     int (*match)(const void *item, const void *key), const void *key)
{
	if (!m->cap) return NULL;
	for (size_t i = home(m, h); m->s[i].p; i = (i + 1) & (m->cap - 1))
		if (m->s[i].h == h && match(m->s[i].p, key)) return m->s[i].p;
	return NULL;
}

int base_hmap_del(struct base_hmap *m, uint64_t h, const void *item)
{
	if (!m->cap) return 0;
	size_t i = home(m, h);
	while (m->s[i].p != item) {
		if (!m->s[i].p) return 0;
		i = (i + 1) & (m->cap - 1);
	}
	/* shift back the rest of the run: an item moves into the hole when
	 * its home is not between the hole and its own slot (cyclically) */
	size_t hole = i;
	for (size_t j = (i + 1) & (m->cap - 1); m->s[j].p; j = (j + 1) & (m->cap - 1)) {
		size_t k = home(m, m->s[j].h);
		int stays = hole <= j ? (hole < k && k <= j) : (hole < k || k <= j);
		if (stays) continue;
		m->s[hole] = m->s[j];
		hole = j;
	}
	m->s[hole].p = NULL;
	m->s[hole].h = 0;
	m->n--;
	return 1;
}

void base_hmap_free(struct base_hmap *m)
{
	free(m->s);
	memset(m, 0, sizeof *m);
}
