/*
 * zone.c — answering a DNS query from a snapshot.
 *
 * dnsbl_answer() is the hot path of the server: parse, find the zone by
 * longest suffix, turn the relative name into an IPv4/IPv6 key once, ask
 * each dataset, and write the response. It follows rbldnsd's answer rules
 * (see docs/DNSBL.md for each deliberate difference): names that exist only
 * as parents of listed names get NODATA rather than NXDOMAIN, EDNS is
 * honoured, and a response that does not fit sets TC instead of silently
 * losing records.
 */
#include "dnsbl/int.h"

#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- zone set-up ------------------------------------------------------- */

void zone_finish(struct dnsbl_snapshot *s, struct zone *z)
{
	for (unsigned i = 0; i < z->nds; i++) {
		const struct ds *ds = z->ds[i];
		if (!ds) {
			z->loaded = 0;
			continue;
		}
		z->dflags |= ds->type->flags;
		if (ds->type->flags & DST_COMBINED) {
			for (unsigned c = 0; c < ds->nchildren; c++) z->dflags |= ds->children[c].ds->type->flags;
		}
		if (!z->soa && ds->soa) {
			z->soa = ds->soa;
			z->soa_ds = ds;
		}
		if (!z->ns && ds->ns) {
			z->ns = ds->ns;
			z->nns = ds->nns;
			z->ns_ttl = ds->ns_ttl;
		}
		if (ds->stamp > z->stamp) z->stamp = ds->stamp;
		if (ds->expires && (!z->expires || ds->expires < z->expires)) z->expires = ds->expires;
	}
	if (!z->nds) z->loaded = 0;
	z->serial = z->soa && z->soa->serial ? z->soa->serial : (uint32_t)z->stamp;
	(void)s;
}

/* Glue: A records that the zones themselves hold for in-zone NS names. */
void zone_glue(struct dnsbl_snapshot *s, struct zone *z)
{
	struct answer *ans = base_xcalloc(1, sizeof *ans);
	for (unsigned i = 0; i < z->nns; i++) {
		const struct zone *hz = zone_find(s, &z->ns[i]);
		if (!hz || !hz->loaded) continue;
		struct dns_name rel;
		unsigned r = z->ns[i].nlabels - hz->name.nlabels;
		memcpy(rel.wire, z->ns[i].wire, r ? z->ns[i].label[r] : 0u);
		rel.wire[r ? z->ns[i].label[r] : 0u] = 0;
		dns_name_index(&rel);
		struct ds_query dq;
		memset(&dq, 0, sizeof dq);
		dq.dn = rel.wire;
		dq.dnlen = rel.len;
		dq.nlabels = rel.nlabels;
		dq.qflags = QF_A;
		ans->n = 0;
		ans->used = 0;
		ans->full = 0;
		for (unsigned k = 0; k < hz->nds; k++)
			if (hz->ds[k]->type == &ds_generic) hz->ds[k]->type->query(hz->ds[k], &dq, ans);
		for (unsigned k = 0; k < ans->n; k++) {
			if (ans->rr[k].type != DNS_T_A) continue;
			z->glue = base_xrealloc(z->glue, (z->nglue + 1) * sizeof *z->glue);
			z->glue[z->nglue].ns = i;
			memcpy(z->glue[z->nglue].a, ans->data + ans->rr[k].off, 4);
			z->glue[z->nglue].ttl = ans->rr[k].ttl;
			z->nglue++;
		}
	}
	free(ans);
}

const struct zone *zone_find(const struct dnsbl_snapshot *s, const struct dns_name *qn)
{
	for (unsigned k = 0; k < s->nzones; k++) {
		const struct zone *z = &s->zones[k];
		if (dns_name_is_subdomain(qn, &z->name)) return z;
	}
	return NULL;
}

/* ---- the query as datasets see it -------------------------------------- */

static int label_octet(const uint8_t *l, unsigned *v)
{
	unsigned n = l[0];
	if (n < 1 || n > 3) return 0;
	unsigned x = 0;
	for (unsigned i = 1; i <= n; i++) {
		if (l[i] < '0' || l[i] > '9') return 0;
		x = x * 10 + (l[i] - '0');
	}
	if (x > 255) return 0;
	*v = x;
	return 1;
}

static int label_nibble(const uint8_t *l, unsigned *v)
{
	if (l[0] != 1) return 0;
	uint8_t c = l[1];
	if (c >= '0' && c <= '9') *v = c - '0';
	else if (c >= 'a' && c <= 'f') *v = c - 'a' + 10u;
	else return 0;
	return 1;
}

void ds_query_classify(struct ds_query *q, unsigned dflags)
{
	q->ip4valid = q->ip4partial = q->ip6valid = q->ip6partial = 0;
	unsigned n = q->nlabels;
	if (!n) return;
	if (dflags & DST_IP4 && n <= 4) {
		uint32_t a = 0;
		const uint8_t *l = q->dn;
		unsigned i, v;
		for (i = 0; i < n; i++, l += 1 + l[0]) {
			if (!label_octet(l, &v)) break;
			a |= v << (8 * i);
		}
		if (i == n) {
			/* labels are reversed: the last label is the first octet */
			q->ip4 = n == 4 ? a : a << (8 * (4 - n));
			if (n == 4) q->ip4valid = 1;
			else {
				q->ip4partial = 1;
				q->ip4oct = n;
			}
		}
	}
	/* four labels are an IPv4 address, unless the zone holds no IPv4 data */
	if (dflags & (DST_IP6 | DST_IP4) && n <= 32 && (n != 4 || !(dflags & DST_IP4))) {
		uint8_t a[16] = {0};
		const uint8_t *l = q->dn;
		unsigned i, v;
		for (i = 0; i < n; i++, l += 1 + l[0]) {
			if (!label_nibble(l, &v)) break;
			unsigned nib = n - 1 - i; /* position from the most significant nibble */
			a[nib / 2] |= (uint8_t)((nib & 1) ? v : v << 4);
		}
		if (i == n) {
			if (n == 32) {
				memcpy(q->ip6, a, 16);
				q->ip6valid = (dflags & DST_IP6) != 0;
				if (dflags & DST_IP4) {
					static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
					if (!memcmp(a, mapped, 12)) {
						q->ip4valid = 1;
						q->ip4 = dns_get32(a + 12);
						q->ip6valid = 0;
					} else if (a[0] == 0x20 && a[1] == 0x02) {
						q->ip4valid = 1;
						q->ip4 = dns_get32(a + 2);
					}
				}
			} else if (dflags & DST_IP6) {
				memcpy(q->ip6, a, 16);
				q->ip6partial = 1;
				q->ip6nib = n;
			}
		}
	}
}

/* ---- writing the response ---------------------------------------------- */

static int put_soa(struct dns_builder *b, const struct zone *z, uint32_t ttl, uint16_t owner_ptr)
{
	const struct ds_soa *soa = z->soa;
	if (dns_b_rr_begin(b, NULL, owner_ptr, DNS_T_SOA, DNS_C_IN, ttl) < 0) return -1;
	uint32_t serial = z->serial;
	if (dns_b_rd_name(b, soa->mname.wire, 1) < 0 || dns_b_rd_name(b, soa->rname.wire, 1) < 0 ||
	    dns_b_rd_u32(b, serial) < 0 || dns_b_rd_u32(b, soa->refresh) < 0 ||
	    dns_b_rd_u32(b, soa->retry) < 0 || dns_b_rd_u32(b, soa->expire) < 0 ||
	    dns_b_rd_u32(b, soa->minimum) < 0) {
		dns_b_rr_abort(b);
		return -1;
	}
	return dns_b_rr_end(b);
}

static int put_ns(struct dns_builder *b, const struct zone *z, uint16_t owner_ptr)
{
	for (unsigned i = 0; i < z->nns; i++) {
		if (dns_b_rr_begin(b, NULL, owner_ptr, DNS_T_NS, DNS_C_IN, z->ns_ttl) < 0) return -1;
		if (dns_b_rd_name(b, z->ns[i].wire, 1) < 0) {
			dns_b_rr_abort(b);
			return -1;
		}
		dns_b_rr_end(b);
	}
	return 0;
}

static int put_glue(struct dns_builder *b, const struct zone *z)
{
	for (unsigned i = 0; i < z->nglue; i++) {
		const struct glue *g = &z->glue[i];
		if (dns_b_rr_begin(b, z->ns[g->ns].wire, 0, DNS_T_A, DNS_C_IN, g->ttl) < 0) return -1;
		if (dns_b_rd_bytes(b, g->a, 4) < 0) {
			dns_b_rr_abort(b);
			return -1;
		}
		dns_b_rr_end(b);
	}
	return 0;
}

/* Offset of the zone apex inside the echoed question name. */
static uint16_t apex_offset(const struct dns_query *q, const struct zone *z)
{
	unsigned rel = q->qname.nlabels - z->name.nlabels;
	return (uint16_t)(DNS_HDR_SIZE + (rel == q->qname.nlabels ? q->qname.len - 1 : q->qname.label[rel]));
}

static size_t finish(struct dns_builder *b, const struct dns_query *q, const struct dnsbl_options *o,
		     unsigned ext_rcode)
{
	if (q->edns) {
		b->limit = b->cap; /* the OPT record was reserved for */
		dns_b_opt(b, o->udp_max, (uint8_t)ext_rcode, q->edns_do);
	}
	return dns_b_finish(b);
}

static size_t simple_reply(uint8_t *out, size_t cap, size_t limit, const struct dns_query *q,
			   const struct dnsbl_options *o, unsigned rcode, uint16_t flags)
{
	struct dns_builder b;
	if (dns_b_start(&b, out, cap, limit, q, flags, rcode & 0xf) < 0) {
		/* the question alone does not fit: answer with the header */
		dns_b_init(&b, out, cap, limit);
		dns_put16(out, q->id);
		dns_put16(out + 2, (uint16_t)(DNS_F_QR | (q->opcode << 11) | (q->flags & DNS_F_RD) | DNS_F_TC));
		return dns_b_finish(&b);
	}
	return finish(&b, q, o, rcode >> 4);
}

static int is_version_name(const struct dns_name *n)
{
	return (n->len == 14 && !memcmp(n->wire, "\x07version\x04" "bind", 14)) ||
	       (n->len == 16 && !memcmp(n->wire, "\x07version\x06server", 16));
}

static unsigned type_flags(uint16_t t, enum dnsbl_any_mode any)
{
	switch (t) {
	case DNS_T_A: return QF_A;
	case DNS_T_TXT: return QF_TXT;
	case DNS_T_NS: return QF_NS;
	case DNS_T_SOA: return QF_SOA;
	case DNS_T_MX: return QF_MX;
	case DNS_T_AAAA: return QF_AAAA;
	case DNS_T_ANY: return any == DNSBL_ANY_MINIMAL ? QF_A : QF_ANY;
	default: return QF_OTHER;
	}
}

int dnsbl_xfr_allowed(const struct dnsbl_options *o, const struct dnsbl_peer *peer)
{
	if (!o->axfr) return 0;
	if (!o->naxfr_allow) return 1;
	for (unsigned i = 0; i < o->naxfr_allow; i++)
		if (base_cidr_contains(&o->axfr_allow[i], peer->family, peer->addr)) return 1;
	return 0;
}

size_t dnsbl_answer(const struct dnsbl_snapshot *s, const uint8_t *pkt, size_t len,
		    const struct dnsbl_peer *peer, enum dnsbl_transport transport, uint8_t *out,
		    size_t cap, int *zone_index, int *xfr_zone)
{
	const struct dnsbl_options *o = s->opts;
	struct dns_query q;
	const char *why;
	const struct ds_val *aclval = NULL, *zaclval = NULL;
	const struct ds *aclds = NULL; /* the access list whose value answers, for its TTL and $n */
	int acl_empty = 0;
	*zone_index = -1;
	*xfr_zone = -1;

	if (s->gacl) {
		int act = ds_acl_check(s->gacl, peer, &aclval);
		if (act == ACL_IGNORE) return 0;
		if (act == ACL_REFUSE) return dns_error_reply(pkt, len, out, cap, DNS_R_REFUSED);
		if (act == ACL_EMPTY) acl_empty = 1;
		if (act != ACL_VALUE) aclval = NULL;
		else aclds = s->gacl;
	}

	int pr = dns_parse_query(pkt, len, &q, &why);
	if (pr == DNS_PARSE_DROP) return 0;
	if (pr == DNS_PARSE_FORMERR) return dns_error_reply(pkt, len, out, cap, DNS_R_FORMERR);
	if (pr == DNS_PARSE_NOTIMP) return dns_error_reply(pkt, len, out, cap, DNS_R_NOTIMP);

	size_t limit;
	if (transport == DNSBL_TCP) limit = cap < 65535 ? cap : 65535;
	else if (q.edns) limit = q.edns_udp < o->udp_max ? q.edns_udp : o->udp_max;
	else limit = DNS_UDP_MIN;
	if (limit > cap) limit = cap;
	if (limit < DNS_UDP_MIN && cap >= DNS_UDP_MIN) limit = DNS_UDP_MIN;
	/* room for our OPT record */
	size_t blimit = q.edns ? limit - 11 : limit;

	if (q.edns && q.edns_version > 0) return simple_reply(out, cap, blimit, &q, o, DNS_R_BADVERS, 0);
	if (q.opcode != DNS_OP_QUERY) return simple_reply(out, cap, blimit, &q, o, DNS_R_NOTIMP, 0);

	uint16_t aa = DNS_F_AA;
	if (q.qclass == DNS_C_CH) {
		if ((q.qtype == DNS_T_TXT || q.qtype == DNS_T_ANY) && is_version_name(&q.qname) &&
		    o->version_mode < 2) {
			struct dns_builder b;
			if (dns_b_start(&b, out, cap, blimit, &q, 0, DNS_R_NOERROR) < 0) return 0;
			const char *v = o->version_mode ? "mailrep" : o->version_text;
			uint8_t txt[256];
			size_t n = strlen(v) > 255 ? 255 : strlen(v);
			txt[0] = (uint8_t)n;
			memcpy(txt + 1, v, n);
			if (dns_b_rr_begin(&b, NULL, DNS_HDR_SIZE, DNS_T_TXT, DNS_C_CH, 0) == 0 &&
			    dns_b_rd_bytes(&b, txt, n + 1) == 0)
				dns_b_rr_end(&b);
			return finish(&b, &q, o, 0);
		}
		return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);
	}
	if (q.qclass == DNS_C_ANY) aa = 0;
	else if (q.qclass != DNS_C_IN) return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);

	const struct zone *z = zone_find(s, &q.qname);
	if (!z) return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);
	*zone_index = (int)z->index;

	if (z->acl) {
		int act = ds_acl_check(z->acl, peer, &zaclval);
		if (act == ACL_IGNORE) return 0;
		if (act == ACL_REFUSE) return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);
		if (act == ACL_EMPTY) acl_empty = 1;
		if (act == ACL_VALUE && !aclval) {
			aclval = zaclval;
			aclds = z->acl;
		}
	}

	if (q.qtype == DNS_T_AXFR || q.qtype == DNS_T_IXFR) {
		if (!z->loaded || atomic_load(&z->expired))
			return simple_reply(out, cap, blimit, &q, o, DNS_R_SERVFAIL, 0);
		if (q.qname.nlabels != z->name.nlabels || !dnsbl_xfr_allowed(o, peer))
			return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);
		if (transport == DNSBL_UDP && q.qtype == DNS_T_IXFR && z->soa) {
			/* RFC 1995 section 2: over UDP, the current SOA alone; a client
			 * that is behind then transfers over TCP */
			struct dns_builder b;
			if (dns_b_start(&b, out, cap, blimit, &q, aa, DNS_R_NOERROR) < 0) return 0;
			put_soa(&b, z, z->soa->ttl, DNS_HDR_SIZE);
			return finish(&b, &q, o, 0);
		}
		if (transport == DNSBL_UDP) /* zone transfers need TCP */
			return simple_reply(out, cap, blimit, &q, o, DNS_R_NOERROR, DNS_F_TC | aa);
		*xfr_zone = (int)z->index;
		return 0;
	}
	if (q.qtype >= DNS_T_TSIG && q.qtype != DNS_T_ANY)
		return simple_reply(out, cap, blimit, &q, o, DNS_R_NOTIMP, 0);

	if (!z->loaded || atomic_load(&z->expired))
		return simple_reply(out, cap, blimit, &q, o, DNS_R_SERVFAIL, 0);

	struct ds_query dq;
	unsigned rel = q.qname.nlabels - z->name.nlabels;
	dq.nlabels = rel;
	dq.dn = q.qname.wire;
	dq.dnlen = (rel ? q.qname.label[rel] : 0u) + 1u;
	dq.qflags = type_flags(q.qtype, o->any_mode);
	dq.peer = peer;
	ds_query_classify(&dq, z->dflags);
	/* The relative name must end with the root label for the datasets:
	 * keep a private copy only when it is not the whole name. */
	uint8_t reldn[DNS_NAME_MAX + 1];
	if (rel < q.qname.nlabels) {
		memcpy(reldn, q.qname.wire, dq.dnlen - 1);
		reldn[dq.dnlen - 1] = 0;
		dq.dn = reldn;
	}

	struct answer local;
	struct answer *ans = &local;
	ans->n = 0;
	ans->used = 0;
	ans->full = 0;
	ans->acl_always = aclval && !acl_empty;
	ans->acl_hit = 0;

	int found = 0;
	int refuse_apex = 0;
	int apex_soa = 0, apex_ns = 0;
	if (rel == 0) {
		found = 1;
		if (dq.qflags & QF_SOA) {
			if (z->soa) apex_soa = 1;
			else refuse_apex = 1;
		}
		if (dq.qflags & QF_NS) {
			if (z->nns) apex_ns = 1;
			else refuse_apex = 1;
		}
		if (q.qtype == DNS_T_ANY && o->any_mode == DNSBL_ANY_MINIMAL && z->soa) apex_soa = 1;
		if (refuse_apex) return simple_reply(out, cap, blimit, &q, o, DNS_R_REFUSED, 0);
	}
	for (unsigned i = 0; i < z->nds; i++) {
		const struct ds *ds = z->ds[i];
		if (acl_empty && !(ds->type == &ds_generic)) continue;
		if (ds->type->query(ds, &dq, ans)) found = 1;
	}
	if (ans->acl_hit) {
		char ip[INET6_ADDRSTRLEN];
		inet_ntop(peer->family, peer->addr, ip, sizeof ip);
		ans_add_value(ans, aclds, aclval, dq.qflags, ip);
	}
	if (!found && rel > 0) {
		/* an empty non-terminal: a parent of listed names */
		for (unsigned i = 0; i < z->nds && !found; i++) {
			const struct ds *ds = z->ds[i];
			if (acl_empty && ds->type != &ds_generic) continue;
			if (ds->type->below && ds->type->below(ds, &dq)) found = 1;
		}
	}
	if (q.qtype == DNS_T_ANY && o->any_mode == DNSBL_ANY_MINIMAL && found && !ans->n && rel > 0) {
		dq.qflags = QF_TXT;
		for (unsigned i = 0; i < z->nds; i++) z->ds[i]->type->query(z->ds[i], &dq, ans);
	}

	struct dns_builder b;
	unsigned rcode = found ? DNS_R_NOERROR : DNS_R_NXDOMAIN;
	if (dns_b_start(&b, out, cap, blimit, &q, aa, rcode) < 0)
		return simple_reply(out, cap, blimit, &q, o, rcode, DNS_F_TC);
	uint16_t apex = apex_offset(&q, z);

	/* answer section */
	int truncated = 0;
	if (apex_soa && put_soa(&b, z, z->soa->ttl, apex) < 0) truncated = 1;
	if (!truncated && apex_ns && put_ns(&b, z, apex) < 0) truncated = 1;
	for (unsigned i = 0; i < ans->n && !truncated; i++) {
		const struct ans_rr *r = &ans->rr[i];
		if (dns_b_rr_begin(&b, r->name, DNS_HDR_SIZE, r->type, DNS_C_IN, r->ttl) < 0) {
			truncated = 1;
			break;
		}
		if (r->type == DNS_T_MX) {
			/* MX data is stored as preference + wire name; compress the name */
			if (dns_b_rd_bytes(&b, ans->data + r->off, 2) < 0 ||
			    dns_b_rd_name(&b, ans->data + r->off + 2, 1) < 0) {
				dns_b_rr_abort(&b);
				truncated = 1;
				break;
			}
		} else if (dns_b_rd_bytes(&b, ans->data + r->off, r->len) < 0) {
			dns_b_rr_abort(&b);
			truncated = 1;
			break;
		}
		dns_b_rr_end(&b);
	}
	if (truncated || ans->full) {
		dns_b_set_flags(&b, DNS_F_TC, 0);
		return finish(&b, &q, o, 0);
	}
	/* authority (and glue) */
	dns_b_section(&b, DNS_SEC_AUTHORITY);
	size_t mark = b.len;
	uint16_t cmark[3] = {b.count[0], b.count[1], b.count[2]};
	unsigned ncomp = b.ncomp;
	if (b.count[DNS_SEC_ANSWER] > 0) {
		if (z->nns && !o->lazy) {
			if (put_ns(&b, z, apex) < 0) {
				b.len = mark;
				memcpy(b.count, cmark, sizeof cmark);
				b.ncomp = ncomp;
			} else if (z->nglue) {
				dns_b_section(&b, DNS_SEC_ADDITIONAL);
				size_t gmark = b.len;
				uint16_t gc = b.count[DNS_SEC_ADDITIONAL];
				if (put_glue(&b, z) < 0) {
					b.len = gmark;
					b.count[DNS_SEC_ADDITIONAL] = gc;
				}
			}
		}
	} else if (z->soa) {
		if (put_soa(&b, z, z->soa->minimum, apex) < 0) {
			b.len = mark;
			memcpy(b.count, cmark, sizeof cmark);
		}
	}
	return finish(&b, &q, o, 0);
}
