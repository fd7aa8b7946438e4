/*
 * wire.c — DNS names, query parsing and response building.
 *
 * The builder writes straight into the caller's buffer. Each RR is written
 * in place and, if it turns out not to fit within the message limit, rolled
 * back to where it started, so a message is always well-formed. Names are
 * compressed against the names already written (their offsets are kept in
 * comp[]; a suffix matches when the label sequence at that offset, followed
 * through pointers, is equal ignoring ASCII case).
 */
#include "dns/dns.h"

#include <string.h>

/* ---- names ------------------------------------------------------------ */

void dns_name_index(struct dns_name *n)
{
	unsigned off = 0, nl = 0;
	while (n->wire[off]) {
		n->label[nl++] = (uint8_t)off;
		off += 1u + n->wire[off];
	}
	n->nlabels = (uint8_t)nl;
	n->len = (uint8_t)(off + 1);
}

int dns_name_from_text(struct dns_name *n, const char *text, int fold, struct base_err *err)
{
	size_t out = 0;
	const char *p = text;
	if (!strcmp(text, ".") || !*text) {
		n->wire[0] = 0;
		dns_name_index(n);
		return 0;
	}
	while (*p) {
		size_t lenpos = out++;
		size_t ll = 0;
		if (*p == '.') return base_errf(err, "empty label in name '%s'", text);
		while (*p && *p != '.') {
			int c = (unsigned char)*p++;
			if (c == '\\') {
				if (p[0] >= '0' && p[0] <= '9' && p[1] >= '0' && p[1] <= '9' && p[2] >= '0' &&
				    p[2] <= '9') {
					c = (p[0] - '0') * 100 + (p[1] - '0') * 10 + (p[2] - '0');
					if (c > 255) return base_errf(err, "bad escape in name '%s'", text);
					p += 3;
				} else if (*p) {
					c = (unsigned char)*p++;
				} else {
					return base_errf(err, "dangling backslash in name '%s'", text);
				}
			}
			if (fold && c >= 'A' && c <= 'Z') c += 32;
			if (++ll > DNS_LABEL_MAX) return base_errf(err, "label longer than 63 in '%s'", text);
			if (out >= DNS_NAME_MAX) return base_errf(err, "name longer than 255 bytes: '%s'", text);
			n->wire[out++] = (uint8_t)c;
		}
		n->wire[lenpos] = (uint8_t)ll;
		if (*p == '.') p++;
	}
	/* the wire form, with the final root byte, is at most 255 bytes */
	if (out >= DNS_NAME_MAX) return base_errf(err, "name longer than 255 bytes: '%s'", text);
	n->wire[out] = 0;
	dns_name_index(n);
	return 0;
}

int dns_name_to_text(const uint8_t *wire, char *out, size_t outsz)
{
	size_t o = 0;
	if (!wire[0]) {
		if (outsz < 2) return -1;
		out[0] = '.';
		out[1] = 0;
		return 1;
	}
	while (*wire) {
		unsigned ll = *wire++;
		if (o && o < outsz) out[o++] = '.';
		for (unsigned i = 0; i < ll; i++) {
			unsigned char c = wire[i];
			if (o + 5 >= outsz) return -1;
			if (c == '.' || c == '\\' || c == '"' || c == ';' || c == '(' || c == ')' || c == '$' ||
			    c == '@') {
				out[o++] = '\\';
				out[o++] = (char)c;
			} else if (c <= ' ' || c >= 0x7f) {
				o += (size_t)snprintf(out + o, outsz - o, "\\%03u", c);
			} else {
				out[o++] = (char)c;
			}
		}
		wire += ll;
	}
	if (o >= outsz) return -1;
	out[o] = 0;
	return (int)o;
}

int dns_name_is_subdomain(const struct dns_name *child, const struct dns_name *parent)
{
	if (child->nlabels < parent->nlabels) return 0;
	if (parent->nlabels == 0) return 1; /* everything is below the root */
	unsigned off = child->nlabels == parent->nlabels ? 0 : child->label[child->nlabels - parent->nlabels];
	return child->len - off == parent->len && !memcmp(child->wire + off, parent->wire, parent->len);
}

int dns_read_name(const uint8_t *msg, size_t len, size_t *off, uint8_t out[DNS_NAME_MAX + 1])
{
	size_t p = *off, o = 0;
	int jumped = 0, hops = 0;
	for (;;) {
		if (p >= len) return -1;
		uint8_t l = msg[p];
		if ((l & 0xc0) == 0xc0) {
			if (p + 1 >= len || ++hops > 64) return -1;
			if (!jumped) *off = p + 2;
			jumped = 1;
			p = ((size_t)(l & 0x3f) << 8) | msg[p + 1];
			continue;
		}
		if (l & 0xc0) return -1;
		if (p + 1 + l > len || o + 1 + l > DNS_NAME_MAX) return -1;
		out[o++] = l;
		if (!l) break;
		for (unsigned i = 0; i < l; i++) out[o++] = msg[p + 1 + i];
		p += 1u + l;
	}
	if (!jumped) *off = p + 1;
	return (int)o;
}

int dns_read_rr(const uint8_t *msg, size_t len, size_t *off, struct dns_rr *rr)
{
	if (dns_read_name(msg, len, off, rr->owner) < 0) return -1;
	if (*off + 10 > len) return -1;
	const uint8_t *p = msg + *off;
	rr->type = dns_get16(p);
	rr->cls = dns_get16(p + 2);
	rr->ttl = dns_get32(p + 4);
	rr->rdlen = dns_get16(p + 8);
	*off += 10;
	if (*off + rr->rdlen > len) return -1;
	rr->rdata = msg + *off;
	rr->rdata_off = *off;
	*off += rr->rdlen;
	return 0;
}

/* ---- query parsing ---------------------------------------------------- */

static int skip_rr(const uint8_t *pkt, size_t len, size_t *off, struct dns_rr *rr)
{
	return dns_read_rr(pkt, len, off, rr);
}

int dns_parse_query(const uint8_t *pkt, size_t len, struct dns_query *q, const char **why)
{
	static const char *dummy;
	if (!why) why = &dummy;
	*why = NULL;
	if (len < DNS_HDR_SIZE) {
		*why = "shorter than a DNS header";
		return DNS_PARSE_DROP;
	}
	q->id = dns_get16(pkt);
	q->flags = dns_get16(pkt + 2);
	q->opcode = (q->flags >> 11) & 0xf;
	q->edns = 0;
	q->edns_version = 0;
	q->edns_udp = 0;
	q->edns_do = 0;
	q->has_ixfr_serial = 0;
	if (q->flags & DNS_F_QR) {
		*why = "a response, not a query";
		return DNS_PARSE_DROP;
	}
	uint16_t qd = dns_get16(pkt + 4), an = dns_get16(pkt + 6), ns = dns_get16(pkt + 8),
		 ar = dns_get16(pkt + 10);
	if (q->opcode != DNS_OP_QUERY && q->opcode != DNS_OP_NOTIFY) {
		*why = "opcode not implemented";
		return DNS_PARSE_NOTIMP;
	}
	if (qd != 1) {
		*why = "question count is not 1";
		return DNS_PARSE_FORMERR;
	}
	/* The question name: no compression allowed, labels bounded. */
	size_t off = DNS_HDR_SIZE, o = 0;
	for (;;) {
		if (off >= len) {
			*why = "question name runs past the end";
			return DNS_PARSE_FORMERR;
		}
		uint8_t l = pkt[off];
		if (l & 0xc0) {
			*why = "compressed or extended label in question";
			return DNS_PARSE_FORMERR;
		}
		if (off + 1 + l > len || o + 1 + l > DNS_NAME_MAX) {
			*why = "question name too long";
			return DNS_PARSE_FORMERR;
		}
		q->qname_case[o] = l;
		q->qname.wire[o++] = l;
		off++;
		if (!l) break;
		for (unsigned i = 0; i < l; i++, o++, off++) {
			uint8_t c = pkt[off];
			q->qname_case[o] = c;
			q->qname.wire[o] = (c >= 'A' && c <= 'Z') ? (uint8_t)(c + 32) : c;
		}
	}
	dns_name_index(&q->qname);
	if (off + 4 > len) {
		*why = "question truncated";
		return DNS_PARSE_FORMERR;
	}
	q->qtype = dns_get16(pkt + off);
	q->qclass = dns_get16(pkt + off + 2);
	off += 4;
	q->question_end = off;

	struct dns_rr rr;
	/* Answer records are only expected in NOTIFY; skip them. */
	for (unsigned i = 0; i < an; i++) {
		if (skip_rr(pkt, len, &off, &rr) < 0) {
			*why = "answer section malformed";
			return DNS_PARSE_FORMERR;
		}
	}
	for (unsigned i = 0; i < ns; i++) {
		if (skip_rr(pkt, len, &off, &rr) < 0) {
			*why = "authority section malformed";
			return DNS_PARSE_FORMERR;
		}
		if (rr.type == DNS_T_SOA && q->qtype == DNS_T_IXFR && rr.rdlen >= 22) {
			/* the serial is the first of the five numbers ending the RDATA */
			q->has_ixfr_serial = 1;
			q->ixfr_serial = dns_get32(rr.rdata + rr.rdlen - 20);
		}
	}
	for (unsigned i = 0; i < ar; i++) {
		if (skip_rr(pkt, len, &off, &rr) < 0) {
			*why = "additional section malformed";
			return DNS_PARSE_FORMERR;
		}
		if (rr.type != DNS_T_OPT) continue;
		if (q->edns || rr.owner[0] != 0) {
			*why = q->edns ? "more than one OPT record" : "OPT record not owned by the root";
			return DNS_PARSE_FORMERR;
		}
		q->edns = 1;
		q->edns_udp = rr.cls < DNS_UDP_MIN ? DNS_UDP_MIN : rr.cls;
		q->edns_version = (uint8_t)(rr.ttl >> 16);
		q->edns_do = (rr.ttl & 0x8000) != 0;
		/* Options must be well-formed even though we use none of them. */
		size_t p = 0;
		while (p < rr.rdlen) {
			if (p + 4 > rr.rdlen || p + 4 + dns_get16(rr.rdata + p + 2) > rr.rdlen) {
				*why = "malformed EDNS option";
				return DNS_PARSE_FORMERR;
			}
			p += 4u + dns_get16(rr.rdata + p + 2);
		}
	}
	/* Trailing garbage after the counted records is tolerated, as most servers do. */
	return DNS_PARSE_OK;
}

/* ---- building --------------------------------------------------------- */

void dns_b_init(struct dns_builder *b, uint8_t *buf, size_t cap, size_t limit)
{
	b->buf = buf;
	b->cap = cap;
	b->limit = limit < cap ? limit : cap;
	b->len = DNS_HDR_SIZE;
	memset(buf, 0, DNS_HDR_SIZE);
	b->count[0] = b->count[1] = b->count[2] = 0;
	b->section = DNS_SEC_ANSWER;
	b->overflow = 0;
	b->ncomp = 0;
	b->rr_start = b->rd_start = 0;
}

int dns_b_start(struct dns_builder *b, uint8_t *buf, size_t cap, size_t limit,
		const struct dns_query *q, uint16_t flags, unsigned rcode)
{
	dns_b_init(b, buf, cap, limit);
	dns_put16(buf, q->id);
	uint16_t f = (uint16_t)(DNS_F_QR | (q->opcode << 11) | (q->flags & (DNS_F_RD | DNS_F_CD)) | flags |
				(rcode & 0xf));
	dns_put16(buf + 2, f);
	size_t ql = q->qname.len;
	if (b->len + ql + 4 > b->limit) return -1;
	memcpy(buf + b->len, q->qname_case, ql);
	if (ql > 1 && b->ncomp < DNS_COMPRESS_MAX) b->comp[b->ncomp++] = (uint16_t)b->len;
	b->len += ql;
	dns_put16(buf + b->len, q->qtype);
	dns_put16(buf + b->len + 2, q->qclass);
	b->len += 4;
	dns_put16(buf + 4, 1);
	return 0;
}

void dns_b_set_rcode(struct dns_builder *b, unsigned rcode)
{
	b->buf[3] = (uint8_t)((b->buf[3] & 0xf0) | (rcode & 0xf));
}

void dns_b_set_flags(struct dns_builder *b, uint16_t set, uint16_t clear)
{
	uint16_t f = dns_get16(b->buf + 2);
	f = (uint16_t)((f & ~clear) | set);
	dns_put16(b->buf + 2, f);
}

void dns_b_section(struct dns_builder *b, enum dns_section s)
{
	if ((int)s > b->section) b->section = (int)s;
}

/* Whether the name at packet offset off (following pointers) equals wire. */
static int name_at_equals(const uint8_t *pkt, size_t len, size_t off, const uint8_t *wire)
{
	int hops = 0;
	for (;;) {
		if (off >= len) return 0;
		uint8_t l = pkt[off];
		if ((l & 0xc0) == 0xc0) {
			if (off + 1 >= len || ++hops > 32) return 0;
			off = ((size_t)(l & 0x3f) << 8) | pkt[off + 1];
			continue;
		}
		if (l != *wire) return 0;
		if (!l) return 1;
		if (off + 1 + l > len) return 0;
		for (unsigned i = 1; i <= l; i++)
			if (base_lower((char)pkt[off + i]) != base_lower((char)wire[i])) return 0;
		off += 1u + l;
		wire += 1u + l;
	}
}

/* Writes wire at b->len with compression against earlier names. */
static int put_name(struct dns_builder *b, const uint8_t *wire, int compress)
{
	const uint8_t *w = wire;
	while (*w) {
		if (compress) {
			for (unsigned i = 0; i < b->ncomp; i++) {
				if (name_at_equals(b->buf, b->len, b->comp[i], w)) {
					if (b->len + 2 > b->limit) return -1;
					dns_put16(b->buf + b->len, (uint16_t)(0xc000 | b->comp[i]));
					b->len += 2;
					return 0;
				}
			}
		}
		size_t ll = 1u + *w;
		if (b->len + ll > b->limit) return -1;
		if (b->len < 0x3fff && b->ncomp < DNS_COMPRESS_MAX) b->comp[b->ncomp++] = (uint16_t)b->len;
		memcpy(b->buf + b->len, w, ll);
		b->len += ll;
		w += ll;
	}
	if (b->len + 1 > b->limit) return -1;
	b->buf[b->len++] = 0;
	return 0;
}

int dns_b_name(struct dns_builder *b, const uint8_t *wire)
{
	size_t save = b->len;
	unsigned ncomp = b->ncomp;
	if (put_name(b, wire, 1) < 0) {
		b->len = save;
		b->ncomp = ncomp;
		return -1;
	}
	return 0;
}

static unsigned comp_saved;

int dns_b_rr_begin(struct dns_builder *b, const uint8_t *owner, uint16_t owner_ptr, uint16_t type,
		   uint16_t cls, uint32_t ttl)
{
	b->rr_start = b->len;
	(void)comp_saved;
	unsigned ncomp = b->ncomp;
	if (owner) {
		if (put_name(b, owner, 1) < 0) goto nofit;
	} else {
		if (b->len + 2 > b->limit) goto nofit;
		dns_put16(b->buf + b->len, (uint16_t)(0xc000 | owner_ptr));
		b->len += 2;
	}
	if (b->len + 10 > b->limit) goto nofit;
	dns_put16(b->buf + b->len, type);
	dns_put16(b->buf + b->len + 2, cls);
	dns_put32(b->buf + b->len + 4, ttl);
	b->len += 10;
	b->rd_start = b->len;
	return 0;
nofit:
	b->len = b->rr_start;
	b->ncomp = ncomp;
	b->overflow = 1;
	return -1;
}

static void drop_comp_after(struct dns_builder *b, size_t off)
{
	while (b->ncomp && b->comp[b->ncomp - 1] >= off) b->ncomp--;
}

int dns_b_rd_bytes(struct dns_builder *b, const void *p, size_t n)
{
	if (b->len + n > b->limit) return -1;
	memcpy(b->buf + b->len, p, n);
	b->len += n;
	return 0;
}

int dns_b_rd_u16(struct dns_builder *b, uint16_t v)
{
	if (b->len + 2 > b->limit) return -1;
	dns_put16(b->buf + b->len, v);
	b->len += 2;
	return 0;
}

int dns_b_rd_u32(struct dns_builder *b, uint32_t v)
{
	if (b->len + 4 > b->limit) return -1;
	dns_put32(b->buf + b->len, v);
	b->len += 4;
	return 0;
}

int dns_b_rd_name(struct dns_builder *b, const uint8_t *wire, int compress)
{
	return put_name(b, wire, compress);
}

int dns_b_rr_end(struct dns_builder *b)
{
	size_t rdlen = b->len - b->rd_start;
	if (rdlen > 0xffff) {
		dns_b_rr_abort(b);
		return -1;
	}
	dns_put16(b->buf + b->rd_start - 2, (uint16_t)rdlen);
	b->count[b->section]++;
	return 0;
}

void dns_b_rr_abort(struct dns_builder *b)
{
	b->len = b->rr_start;
	drop_comp_after(b, b->rr_start);
	b->overflow = 1;
}

int dns_b_opt(struct dns_builder *b, uint16_t udp_size, uint8_t ext_rcode, int do_bit)
{
	/* OPT must always fit: callers reserve 11 bytes below the limit for it. */
	if (b->len + 11 > b->cap) return -1;
	uint8_t *p = b->buf + b->len;
	p[0] = 0;
	dns_put16(p + 1, DNS_T_OPT);
	dns_put16(p + 3, udp_size);
	p[5] = ext_rcode;
	p[6] = 0;
	dns_put16(p + 7, do_bit ? 0x8000 : 0);
	dns_put16(p + 9, 0);
	b->len += 11;
	b->count[DNS_SEC_ADDITIONAL]++;
	return 0;
}

size_t dns_b_finish(struct dns_builder *b)
{
	dns_put16(b->buf + 6, b->count[0]);
	dns_put16(b->buf + 8, b->count[1]);
	dns_put16(b->buf + 10, b->count[2]);
	return b->len;
}

size_t dns_error_reply(const uint8_t *pkt, size_t len, uint8_t *out, size_t cap, unsigned rcode)
{
	if (len < DNS_HDR_SIZE || cap < DNS_HDR_SIZE) return 0;
	memcpy(out, pkt, 2);
	uint16_t f = dns_get16(pkt + 2);
	f = (uint16_t)(DNS_F_QR | (f & (0x7800 | DNS_F_RD | DNS_F_CD)) | (rcode & 0xf));
	dns_put16(out + 2, f);
	memset(out + 4, 0, 8);
	return DNS_HDR_SIZE;
}

const char *dns_type_name(uint16_t type, char buf[16])
{
	switch (type) {
	case DNS_T_A: return "A";
	case DNS_T_NS: return "NS";
	case DNS_T_CNAME: return "CNAME";
	case DNS_T_SOA: return "SOA";
	case DNS_T_PTR: return "PTR";
	case DNS_T_MX: return "MX";
	case DNS_T_TXT: return "TXT";
	case DNS_T_AAAA: return "AAAA";
	case DNS_T_TLSA: return "TLSA";
	case DNS_T_OPT: return "OPT";
	case DNS_T_IXFR: return "IXFR";
	case DNS_T_AXFR: return "AXFR";
	case DNS_T_ANY: return "ANY";
	default: snprintf(buf, 16, "TYPE%u", type); return buf;
	}
}

const char *dns_rcode_name(unsigned rcode)
{
	static const char *names[] = {"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED",
				      "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE"};
	if (rcode < sizeof names / sizeof names[0]) return names[rcode];
	if (rcode == DNS_R_BADVERS) return "BADVERS";
	return "RCODE?";
}
