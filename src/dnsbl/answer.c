/*
 * answer.c — the answer section being collected for one query.
 *
 * Datasets append records here; rbldnsd's rules apply as records arrive:
 * a record equal to one already present (type and data) is dropped, and
 * all records of one type share the smallest TTL among them. The response
 * is written from this list once every dataset has been asked, so the
 * packet code can decide about truncation with the whole answer in view.
 */
#include "dnsbl/int.h"

#include <string.h>

void ans_add(struct answer *ans, uint16_t type, uint32_t ttl, const void *rdata, size_t len)
{
	uint32_t minttl = ttl;
	int dup = 0;
	for (unsigned i = 0; i < ans->n; i++) {
		struct ans_rr *r = &ans->rr[i];
		if (r->type != type || r->name) continue;
		if (r->len == len && !memcmp(ans->data + r->off, rdata, len)) dup = 1;
		if (r->ttl < minttl) minttl = r->ttl;
	}
	/* a duplicate is dropped, but its TTL still lowers the set's TTL */
	if (!dup && (ans->n == ANS_MAX_RR || ans->used + len > ANS_MAX_DATA)) {
		ans->full = 1;
		return;
	}
	for (unsigned i = 0; i < ans->n; i++)
		if (ans->rr[i].type == type && !ans->rr[i].name) ans->rr[i].ttl = minttl;
	if (dup) return;
	struct ans_rr *r = &ans->rr[ans->n++];
	r->type = type;
	r->len = (uint16_t)len;
	r->ttl = minttl;
	r->off = ans->used;
	r->name = NULL;
	memcpy(ans->data + ans->used, rdata, len);
	ans->used += (uint32_t)len;
}

void ans_add_value(struct answer *ans, const struct ds *ds, const struct ds_val *v, unsigned qflags,
		   const char *subst)
{
	if (qflags & QF_A) ans_add(ans, DNS_T_A, ds->ttl, v->a, 4);
	if (qflags & QF_TXT) {
		if (!v->txt[0] && !(ds->basetpl && ds->basetpl[0])) return;
		uint8_t buf[256];
		size_t n = ds_txt_expand(ds, v->txt, subst, (char *)buf + 1);
		if (!n) return;
		buf[0] = (uint8_t)n;
		ans_add(ans, DNS_T_TXT, ds->ttl, buf, n + 1);
	}
}
