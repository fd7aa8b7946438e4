/*
 * dkim.c — DomainKeys Identified Mail: signing and verifying (RFC 6376),
 * with the algorithm rules of RFC 8301 (no SHA-1, RSA of 1024 bits at
 * least) and Ed25519-SHA256 of RFC 8463, on OpenSSL 3's EVP interface.
 *
 * Both directions build the same "signed data": the canonicalised header
 * fields named by h= (each name takes the bottom-most field of that name
 * not taken yet; a name with none left adds nothing, which is how
 * over-signing forbids adding a field), then the DKIM-Signature field itself
 * with the value of b= removed and no final CRLF. RSA signs that data with
 * SHA-256 (PKCS#1 v1.5); Ed25519 signs its SHA-256 digest (RFC 8463 §3).
 * The body hash bh= is SHA-256 over the canonicalised body.
 *
 * Every tag list, key record and base64 string comes from the network and
 * is parsed with explicit bounds; errors name the tag and what was wrong.
 */
#include "auth/auth.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <string.h>

static const char *const default_headers[] = {"From",
                                              "Reply-To",
                                              "Subject",
                                              "Date",
                                              "To",
                                              "Cc",
                                              "Message-ID",
                                              "In-Reply-To",
                                              "References",
                                              "MIME-Version",
                                              "Content-Type",
                                              "Content-Transfer-Encoding",
                                              "List-Id",
                                              "List-Unsubscribe",
                                              "List-Unsubscribe-Post",
                                              "Sender",
                                              NULL};
static const char *const default_oversign[] = {"From", "Subject", "List-Unsubscribe",
                                               "List-Unsubscribe-Post", NULL};

const char *auth_dkim_result_name(int result)
{
	static const char *const names[] = {"none",    "pass",      "fail",
	                                    "neutral", "temperror", "permerror"};
	return result >= 0 && result <= AUTH_DKIM_PERMERROR ? names[result] : "?";
}

static int is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* Whether field f is named name (ASCII case-insensitively). */
static int field_is(const struct auth_msg_field *f, const char *name, size_t n)
{
	if (f->name_len != n) return 0;
	for (size_t i = 0; i < n; i++)
		if (base_lower(f->name[i]) != base_lower(name[i])) return 0;
	return 1;
}

static void copy_str(char *dst, size_t sz, const char *src, size_t n)
{
	if (n >= sz) n = sz - 1;
	memcpy(dst, src, n);
	dst[n] = 0;
}

/* ---- canonicalisation (RFC 6376 §3.4) ----------------------------------- */

void auth_dkim_canon_header(int canon, const char *raw, size_t len, struct base_buf *out)
{
	if (canon == AUTH_DKIM_SIMPLE) {
		base_buf_append(out, raw, len);
		base_buf_append(out, "\r\n", 2);
		return;
	}
	/* relaxed: lowercase the name, unfold, collapse WSP runs to one SP,
	 * drop WSP at the end of the value and around the colon. */
	const char *colon = memchr(raw, ':', len);
	size_t nlen = colon ? (size_t)(colon - raw) : len;
	while (nlen && is_wsp(raw[nlen - 1])) nlen--;
	base_buf_reserve(out, len + 3);
	for (size_t i = 0; i < nlen; i++) out->data[out->len++] = base_lower(raw[i]);
	out->data[out->len++] = ':';
	size_t i = colon ? (size_t)(colon - raw) + 1 : len;
	int pending_sp = 0, started = 0;
	for (; i < len; i++) {
		char c = raw[i];
		if (c == '\r' || c == '\n') continue;
		if (is_wsp(c)) {
			pending_sp = started;
			continue;
		}
		if (pending_sp) out->data[out->len++] = ' ';
		pending_sp = 0;
		started = 1;
		out->data[out->len++] = c;
	}
	out->data[out->len++] = '\r';
	out->data[out->len++] = '\n';
	out->data[out->len] = 0;
}

void auth_dkim_canon_body(int canon, const char *body, size_t len, struct base_buf *out)
{
	size_t start = out->len;
	/* relaxed output is at most the input plus one CR per bare LF, plus a
	 * final CRLF: twice the input bounds it */
	base_buf_reserve(out, 2 * len + 2);
	if (canon == AUTH_DKIM_SIMPLE) {
		base_buf_append(out, body, len);
	} else {
		/* relaxed: WSP at line ends removed, WSP runs become one SP */
		size_t i = 0;
		while (i < len) {
			const char *nl = memchr(body + i, '\n', len - i);
			size_t e = nl ? (size_t)(nl - body) : len; /* e: index of LF or end */
			size_t le = e;
			if (nl && le > i && body[le - 1] == '\r') le--;
			while (le > i && is_wsp(body[le - 1])) le--;
			int sp = 0;
			for (size_t k = i; k < le; k++) {
				if (is_wsp(body[k])) {
					sp = 1;
					continue;
				}
				if (sp) out->data[out->len++] = ' ';
				sp = 0;
				out->data[out->len++] = body[k];
			}
			if (nl) {
				out->data[out->len++] = '\r';
				out->data[out->len++] = '\n';
			}
			i = nl ? e + 1 : len;
		}
		out->data[out->len] = 0;
	}
	/* a last line without CRLF gets one; then trailing empty lines go */
	size_t n = out->len - start;
	if (n && !(n >= 2 && out->data[out->len - 2] == '\r' && out->data[out->len - 1] == '\n'))
		base_buf_append(out, "\r\n", 2);
	while (out->len - start >= 4 && !memcmp(out->data + out->len - 4, "\r\n\r\n", 4))
		out->len -= 2;
	if (out->len - start == 2 && canon == AUTH_DKIM_RELAXED) out->len = start;
	if (out->len == start && canon == AUTH_DKIM_SIMPLE) base_buf_append(out, "\r\n", 2);
	out->data[out->len] = 0;
}

/* ---- base64 -------------------------------------------------------------- */

/* Decodes base64 ignoring folding whitespace. Returns the length or -1. */
static int b64_decode(const char *s, size_t n, uint8_t *out, size_t cap)
{
	return (int)base_b64_decode(s, n, out, cap, BASE_B64_SKIP_FWS | BASE_B64_LAX_END);
}

static void b64_encode(const uint8_t *p, size_t n, struct base_buf *out)
{
	base_buf_reserve(out, 4 * ((n + 2) / 3) + 1);
	int w = EVP_EncodeBlock((unsigned char *)out->data + out->len, p, (int)n);
	out->len += (size_t)w;
	out->data[out->len] = 0;
}

/* ---- tag lists (RFC 6376 §3.2) ------------------------------------------ */

int auth_dkim_tags_parse(const char *s, size_t len, struct auth_dkim_tags *t, struct base_err *err)
{
	t->n = 0;
	size_t i = 0;
	while (i < len) {
		while (i < len && (is_wsp(s[i]) || s[i] == '\r' || s[i] == '\n')) i++;
		if (i >= len) break;
		size_t n0 = i;
		while (i < len && ((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') ||
		                   (s[i] >= '0' && s[i] <= '9') || s[i] == '_'))
			i++;
		size_t nlen = i - n0;
		if (!nlen || !((s[n0] >= 'a' && s[n0] <= 'z') || (s[n0] >= 'A' && s[n0] <= 'Z')))
			return base_errf(err, "tag list: bad tag name at offset %zu", n0);
		if (nlen >= sizeof t->tag[0].name)
			return base_errf(err, "tag list: tag name too long at offset %zu", n0);
		while (i < len && (is_wsp(s[i]) || s[i] == '\r' || s[i] == '\n')) i++;
		if (i >= len || s[i] != '=')
			return base_errf(err, "tag list: '=' missing after tag '%.*s'", (int)nlen,
			                 s + n0);
		i++;
		size_t voff = i;
		const char *semi = memchr(s + i, ';', len - i);
		size_t vend = semi ? (size_t)(semi - s) : len;
		for (size_t k = voff; k < vend; k++) {
			unsigned char c = (unsigned char)s[k];
			if (c < 0x20 && c != '\t' && c != '\r' && c != '\n')
				return base_errf(err, "tag '%.*s': control character in value",
				                 (int)nlen, s + n0);
			if (c > 0x7e)
				return base_errf(err, "tag '%.*s': non-ASCII byte in value",
				                 (int)nlen, s + n0);
		}
		for (size_t k = 0; k < t->n; k++)
			if (strlen(t->tag[k].name) == nlen && !memcmp(t->tag[k].name, s + n0, nlen))
				return base_errf(err, "tag '%.*s' appears twice", (int)nlen,
				                 s + n0);
		if (t->n == AUTH_DKIM_MAX_TAGS)
			return base_errf(err, "tag list: more than %d tags", AUTH_DKIM_MAX_TAGS);
		struct auth_dkim_tag *tg = &t->tag[t->n++];
		memcpy(tg->name, s + n0, nlen);
		tg->name[nlen] = 0;
		tg->voff = voff;
		tg->vend = vend;
		size_t a = voff, b = vend;
		while (a < b && (is_wsp(s[a]) || s[a] == '\r' || s[a] == '\n')) a++;
		while (b > a && (is_wsp(s[b - 1]) || s[b - 1] == '\r' || s[b - 1] == '\n')) b--;
		tg->value = s + a;
		tg->value_len = b - a;
		i = semi ? vend + 1 : len;
	}
	return 0;
}

const struct auth_dkim_tag *auth_dkim_tag_get(const struct auth_dkim_tags *t, const char *name)
{
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->tag[i].name, name)) return &t->tag[i];
	return NULL;
}

static int tag_is(const struct auth_dkim_tag *t, const char *lit)
{
	size_t n = strlen(lit);
	if (t->value_len != n) return 0;
	for (size_t i = 0; i < n; i++)
		if (base_lower(t->value[i]) != lit[i]) return 0;
	return 1;
}

static int parse_int64(const struct auth_dkim_tag *t, int64_t *out, struct base_err *err)
{
	if (!t->value_len || t->value_len > 12)
		return base_errf(err, "tag '%s': not a number of at most 12 digits", t->name);
	int64_t v = 0;
	for (size_t i = 0; i < t->value_len; i++) {
		if (t->value[i] < '0' || t->value[i] > '9')
			return base_errf(err, "tag '%s': not a number", t->name);
		v = v * 10 + (t->value[i] - '0');
	}
	*out = v;
	return 0;
}

/* ---- DKIM-Signature ------------------------------------------------------ */

int auth_dkim_sig_parse(const char *value, size_t len, struct auth_dkim_sig *sig,
                        struct base_err *err)
{
	memset(sig, 0, sizeof *sig);
	sig->timestamp = sig->expires = sig->body_length = -1;
	if (auth_dkim_tags_parse(value, len, &sig->tags, err) < 0) return -1;
	const struct auth_dkim_tags *t = &sig->tags;
	static const char *const required[] = {"v", "a", "b", "bh", "d", "h", "s"};
	for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
		if (!auth_dkim_tag_get(t, required[i]))
			return base_errf(err, "DKIM-Signature lacks the required tag '%s='",
			                 required[i]);
	if (!tag_is(auth_dkim_tag_get(t, "v"), "1"))
		return base_errf(err, "DKIM-Signature: unsupported version v=%.*s",
		                 (int)auth_dkim_tag_get(t, "v")->value_len,
		                 auth_dkim_tag_get(t, "v")->value);
	const struct auth_dkim_tag *a = auth_dkim_tag_get(t, "a");
	if (tag_is(a, "rsa-sha256"))
		sig->alg = AUTH_DKIM_RSA_SHA256;
	else if (tag_is(a, "ed25519-sha256"))
		sig->alg = AUTH_DKIM_ED25519_SHA256;
	else if (tag_is(a, "rsa-sha1"))
		return base_errf(err, "DKIM-Signature: rsa-sha1 is not accepted (RFC 8301)");
	else
		return base_errf(err, "DKIM-Signature: unknown algorithm a=%.*s",
		                 (int)(a->value_len > 40 ? 40 : a->value_len), a->value);

	sig->hcanon = sig->bcanon = AUTH_DKIM_SIMPLE;
	const struct auth_dkim_tag *c = auth_dkim_tag_get(t, "c");
	if (c) {
		const char *slash = memchr(c->value, '/', c->value_len);
		size_t hl = slash ? (size_t)(slash - c->value) : c->value_len;
		struct auth_dkim_tag h = *c, b = *c;
		h.value_len = hl;
		int hc = tag_is(&h, "relaxed")  ? AUTH_DKIM_RELAXED
		         : tag_is(&h, "simple") ? AUTH_DKIM_SIMPLE
		                                : -1;
		int bc = AUTH_DKIM_SIMPLE;
		if (slash) {
			b.value = slash + 1;
			b.value_len = c->value_len - hl - 1;
			bc = tag_is(&b, "relaxed")  ? AUTH_DKIM_RELAXED
			     : tag_is(&b, "simple") ? AUTH_DKIM_SIMPLE
			                            : -1;
		}
		if (hc < 0 || bc < 0)
			return base_errf(err, "DKIM-Signature: unknown canonicalisation c=%.*s",
			                 (int)(c->value_len > 40 ? 40 : c->value_len), c->value);
		sig->hcanon = hc;
		sig->bcanon = bc;
	}

	const struct auth_dkim_tag *d = auth_dkim_tag_get(t, "d"), *s = auth_dkim_tag_get(t, "s");
	if (!d->value_len || d->value_len >= sizeof sig->domain)
		return base_errf(err, "DKIM-Signature: bad d= length");
	if (!s->value_len || s->value_len >= sizeof sig->selector)
		return base_errf(err, "DKIM-Signature: bad s= length");
	copy_str(sig->domain, sizeof sig->domain, d->value, d->value_len);
	copy_str(sig->selector, sizeof sig->selector, s->value, s->value_len);
	for (char *p = sig->domain; *p; p++) *p = base_lower(*p);
	for (const char *p = sig->domain; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-' ||
		      *p == '.' || *p == '_'))
			return base_errf(err, "DKIM-Signature: d= is not a domain name");
	for (const char *p = sig->selector; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
		      (*p >= '0' && *p <= '9') || *p == '-' || *p == '.' || *p == '_'))
			return base_errf(err, "DKIM-Signature: s= is not a selector");

	const struct auth_dkim_tag *i = auth_dkim_tag_get(t, "i");
	if (i) {
		if (i->value_len >= sizeof sig->identity)
			return base_errf(err, "DKIM-Signature: i= too long");
		copy_str(sig->identity, sizeof sig->identity, i->value, i->value_len);
		const char *at = strrchr(sig->identity, '@');
		if (!at) return base_errf(err, "DKIM-Signature: i= has no '@'");
		/* the identity's domain must be d= or below it */
		size_t il = strlen(at + 1), dl = strlen(sig->domain);
		int ok = il >= dl && !base_strcasecmp_ascii(at + 1 + il - dl, sig->domain) &&
		         (il == dl || at[1 + il - dl - 1] == '.');
		if (!ok)
			return base_errf(err, "DKIM-Signature: i= is not within d=%s", sig->domain);
	} else {
		snprintf(sig->identity, sizeof sig->identity, "@%s", sig->domain);
	}

	/* h=: names separated by ':', FWS allowed around them */
	const struct auth_dkim_tag *h = auth_dkim_tag_get(t, "h");
	size_t o = 0;
	int has_from = 0;
	for (size_t k = 0; k <= h->value_len;) {
		size_t e = k;
		while (e < h->value_len && h->value[e] != ':') e++;
		size_t a0 = k, a1 = e;
		while (a0 < a1 &&
		       (is_wsp(h->value[a0]) || h->value[a0] == '\r' || h->value[a0] == '\n'))
			a0++;
		while (a1 > a0 && (is_wsp(h->value[a1 - 1]) || h->value[a1 - 1] == '\r' ||
		                   h->value[a1 - 1] == '\n'))
			a1--;
		if (a0 == a1) return base_errf(err, "DKIM-Signature: empty name in h=");
		if (o + (a1 - a0) + 2 >= sizeof sig->headers)
			return base_errf(err, "DKIM-Signature: h= too long");
		if (o) sig->headers[o++] = ':';
		for (size_t q = a0; q < a1; q++) {
			char ch = h->value[q];
			if ((unsigned char)ch < 33 || (unsigned char)ch > 126)
				return base_errf(err, "DKIM-Signature: bad header name in h=");
			sig->headers[o++] = base_lower(ch);
		}
		sig->headers[o] = 0;
		if (a1 - a0 == 4 && !base_strcasecmp_ascii(sig->headers + o - 4, "from") &&
		    (o == 4 || sig->headers[o - 5] == ':'))
			has_from = 1;
		k = e + 1;
	}
	if (!has_from) return base_errf(err, "DKIM-Signature: h= does not include From");

	const struct auth_dkim_tag *bh = auth_dkim_tag_get(t, "bh"), *b = auth_dkim_tag_get(t, "b");
	int n = b64_decode(bh->value, bh->value_len, sig->bh, sizeof sig->bh);
	if (n != 32) return base_errf(err, "DKIM-Signature: bh= is not a base64 SHA-256 digest");
	sig->bh_len = (size_t)n;
	n = b64_decode(b->value, b->value_len, sig->b, sizeof sig->b);
	if (n <= 0) return base_errf(err, "DKIM-Signature: b= is not valid base64");
	sig->b_len = (size_t)n;

	const struct auth_dkim_tag *x;
	if ((x = auth_dkim_tag_get(t, "t")) && parse_int64(x, &sig->timestamp, err) < 0) return -1;
	if ((x = auth_dkim_tag_get(t, "x")) && parse_int64(x, &sig->expires, err) < 0) return -1;
	if ((x = auth_dkim_tag_get(t, "l")) && parse_int64(x, &sig->body_length, err) < 0)
		return -1;
	if (sig->timestamp >= 0 && sig->expires >= 0 && sig->expires < sig->timestamp)
		return base_errf(err, "DKIM-Signature: x= is before t=");
	if ((x = auth_dkim_tag_get(t, "q")) && !tag_is(x, "dns/txt"))
		return base_errf(err, "DKIM-Signature: unsupported query method q=");
	return 0;
}

/* ---- key records --------------------------------------------------------- */

int auth_dkim_keyrec_parse(const char *txt, size_t len, struct auth_dkim_keyrec *k,
                           struct base_err *err)
{
	memset(k, 0, sizeof *k);
	struct auth_dkim_tags t;
	if (auth_dkim_tags_parse(txt, len, &t, err) < 0) return -1;
	const struct auth_dkim_tag *v = auth_dkim_tag_get(&t, "v");
	if (v && (t.tag != v || !tag_is(v, "dkim1")))
		return base_errf(err, "key record: v= must come first and be DKIM1");
	const struct auth_dkim_tag *kt = auth_dkim_tag_get(&t, "k");
	k->alg = AUTH_DKIM_RSA_SHA256;
	if (kt) {
		if (tag_is(kt, "ed25519"))
			k->alg = AUTH_DKIM_ED25519_SHA256;
		else if (!tag_is(kt, "rsa"))
			return base_errf(err, "key record: unknown key type k=%.*s",
			                 (int)(kt->value_len > 20 ? 20 : kt->value_len), kt->value);
	}
	const struct auth_dkim_tag *h = auth_dkim_tag_get(&t, "h");
	if (h) {
		k->sha1_only = 1;
		for (size_t i = 0; i + 6 <= h->value_len; i++)
			if (!memcmp(h->value + i, "sha256", 6)) k->sha1_only = 0;
	}
	const struct auth_dkim_tag *fl = auth_dkim_tag_get(&t, "t");
	if (fl)
		for (size_t i = 0; i < fl->value_len; i++) {
			if (fl->value[i] == 'y') k->testing = 1;
			if (fl->value[i] == 's') k->strict = 1;
		}
	const struct auth_dkim_tag *s = auth_dkim_tag_get(&t, "s");
	if (s && !tag_is(s, "*") && !tag_is(s, "email"))
		return base_errf(err, "key record: service type s= excludes email");
	const struct auth_dkim_tag *p = auth_dkim_tag_get(&t, "p");
	if (!p) return base_errf(err, "key record: no p= tag");
	if (!p->value_len) {
		k->revoked = 1;
		return 0;
	}
	uint8_t der[2048];
	int n = b64_decode(p->value, p->value_len, der, sizeof der);
	if (n <= 0) return base_errf(err, "key record: p= is not valid base64 (or too long)");
	EVP_PKEY *pk = NULL;
	if (k->alg == AUTH_DKIM_ED25519_SHA256) {
		if (n != 32)
			return base_errf(err, "key record: an Ed25519 p= must be 32 bytes, not %d",
			                 n);
		pk = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, der, 32);
	} else {
		const unsigned char *q = der;
		pk = d2i_PUBKEY(NULL, &q, n);
		if (!pk) {
			q = der;
			pk = d2i_PublicKey(EVP_PKEY_RSA, NULL, &q, n);
		}
		if (pk && EVP_PKEY_get_base_id(pk) != EVP_PKEY_RSA) {
			EVP_PKEY_free(pk);
			return base_errf(err, "key record: k=rsa but p= is not an RSA key");
		}
	}
	if (!pk) return base_errf(err, "key record: p= does not hold a usable public key");
	k->pkey = pk;
	k->bits = (unsigned)EVP_PKEY_get_bits(pk);
	return 0;
}

void auth_dkim_keyrec_free(struct auth_dkim_keyrec *k)
{
	EVP_PKEY_free(k->pkey);
	k->pkey = NULL;
}

/* ---- private keys -------------------------------------------------------- */

struct auth_dkim_key {
	EVP_PKEY *pkey;
	int alg;
};

static int wrap_key(struct auth_dkim_key **out, EVP_PKEY *pk, struct base_err *err)
{
	int id = EVP_PKEY_get_base_id(pk);
	int alg;
	if (id == EVP_PKEY_RSA) {
		int bits = EVP_PKEY_get_bits(pk);
		if (bits < AUTH_DKIM_RSA_MIN_BITS) {
			EVP_PKEY_free(pk);
			return base_errf(err,
			                 "RSA key of %d bits: at least %d are required (RFC 8301)",
			                 bits, AUTH_DKIM_RSA_MIN_BITS);
		}
		alg = AUTH_DKIM_RSA_SHA256;
	} else if (id == EVP_PKEY_ED25519) {
		alg = AUTH_DKIM_ED25519_SHA256;
	} else {
		EVP_PKEY_free(pk);
		return base_errf(err, "key is neither RSA nor Ed25519");
	}
	*out = base_xcalloc(1, sizeof **out);
	(*out)->pkey = pk;
	(*out)->alg = alg;
	return 0;
}

int auth_dkim_key_generate(struct auth_dkim_key **out, int alg, unsigned bits, struct base_err *err)
{
	EVP_PKEY *pk;
	if (alg == AUTH_DKIM_RSA_SHA256) {
		if (!bits) bits = AUTH_DKIM_RSA_DEFAULT_BITS;
		if (bits < AUTH_DKIM_RSA_MIN_BITS || bits > 8192)
			return base_errf(err, "RSA key size %u: must be %d to 8192 bits", bits,
			                 AUTH_DKIM_RSA_MIN_BITS);
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "RSA", (size_t)bits);
	} else {
		pk = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
	}
	if (!pk) return base_errf(err, "key generation failed in OpenSSL");
	return wrap_key(out, pk, err);
}

int auth_dkim_key_load(struct auth_dkim_key **out, const char *pem, size_t len,
                       struct base_err *err)
{
	if (len > 64 * 1024) return base_errf(err, "key file larger than 64 KiB");
	BIO *bio = BIO_new_mem_buf(pem, (int)len);
	EVP_PKEY *pk = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
	BIO_free(bio);
	if (!pk) return base_errf(err, "not a PEM private key");
	return wrap_key(out, pk, err);
}

int auth_dkim_key_pem(const struct auth_dkim_key *k, struct base_buf *out, struct base_err *err)
{
	BIO *bio = BIO_new(BIO_s_mem());
	if (!bio || !PEM_write_bio_PrivateKey(bio, k->pkey, NULL, NULL, 0, NULL, NULL)) {
		BIO_free(bio);
		return base_errf(err, "cannot write the key as PEM");
	}
	char *p;
	long n = BIO_get_mem_data(bio, &p);
	base_buf_append(out, p, (size_t)n);
	BIO_free(bio);
	return 0;
}

int auth_dkim_key_record(const struct auth_dkim_key *k, struct base_buf *out, struct base_err *err)
{
	if (k->alg == AUTH_DKIM_ED25519_SHA256) {
		uint8_t raw[32];
		size_t n = sizeof raw;
		if (!EVP_PKEY_get_raw_public_key(k->pkey, raw, &n) || n != 32)
			return base_errf(err, "cannot extract the Ed25519 public key");
		base_buf_puts(out, "v=DKIM1; k=ed25519; p=");
		b64_encode(raw, n, out);
		return 0;
	}
	unsigned char *der = NULL;
	int n = i2d_PUBKEY(k->pkey, &der);
	if (n <= 0) return base_errf(err, "cannot encode the RSA public key");
	base_buf_puts(out, "v=DKIM1; k=rsa; p=");
	b64_encode(der, (size_t)n, out);
	OPENSSL_free(der);
	return 0;
}

int auth_dkim_key_alg(const struct auth_dkim_key *k)
{
	return k->alg;
}

unsigned auth_dkim_key_bits(const struct auth_dkim_key *k)
{
	return (unsigned)EVP_PKEY_get_bits(k->pkey);
}

void auth_dkim_key_free(struct auth_dkim_key *k)
{
	if (!k) return;
	EVP_PKEY_free(k->pkey);
	free(k);
}

/* ---- the signed data ---------------------------------------------------- */

static int sha256(const void *p, size_t n, uint8_t out[32])
{
	unsigned len = 0;
	return EVP_Digest(p, n, out, &len, EVP_sha256(), NULL) && len == 32 ? 0 : -1;
}

/* Body hash over the canonical body, cut to l= bytes when limit >= 0.
 * Returns 0, or -1 when l= is longer than the body. */
static int body_hash(const struct auth_msg *m, int canon, int64_t limit, uint8_t out[32])
{
	struct base_buf b;
	base_buf_init(&b);
	auth_dkim_canon_body(canon, m->body, m->body_len, &b);
	int rc = 0;
	size_t n = b.len;
	if (limit >= 0) {
		if ((uint64_t)limit > n)
			rc = -1;
		else
			n = (size_t)limit;
	}
	if (!rc) rc = sha256(b.data ? b.data : "", n, out);
	base_buf_free(&b);
	return rc;
}

/* Appends the canonical fields named in names (':'-joined, any case),
 * each taking the bottom-most field of that name not yet taken. */
static void signed_headers(const struct auth_msg *m, const char *names, int canon,
                           struct base_buf *out)
{
	unsigned char *used = base_xcalloc(m->n ? m->n : 1, 1);
	const char *p = names;
	while (*p) {
		const char *e = strchr(p, ':');
		size_t n = e ? (size_t)(e - p) : strlen(p);
		for (size_t i = m->n; i-- > 0;) {
			const struct auth_msg_field *f = &m->fields[i];
			if (used[i] || !field_is(f, p, n)) continue;
			used[i] = 1;
			auth_dkim_canon_header(canon, f->raw, f->raw_len, out);
			break;
		}
		p += n;
		if (*p == ':') p++;
	}
	free(used);
}

/* The DKIM-Signature field with the value of b= cut out, canonicalised,
 * without its final CRLF. */
static void sig_field_without_b(const char *raw, size_t len, size_t boff, size_t bend, int canon,
                                struct base_buf *out)
{
	struct base_buf tmp;
	base_buf_init(&tmp);
	base_buf_append(&tmp, raw, boff);
	base_buf_append(&tmp, raw + bend, len - bend);
	auth_dkim_canon_header(canon, tmp.data, tmp.len, out);
	out->len -= 2;
	out->data[out->len] = 0;
	base_buf_free(&tmp);
}

static int do_sign(EVP_PKEY *pk, int alg, const struct base_buf *data, struct base_buf *b64,
                   struct base_err *err)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t sig[1024], digest[32];
	size_t slen = sizeof sig;
	int ok;
	if (alg == AUTH_DKIM_ED25519_SHA256) {
		ok = ctx && sha256(data->data, data->len, digest) == 0 &&
		     EVP_DigestSignInit(ctx, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestSign(ctx, sig, &slen, digest, 32) == 1;
	} else {
		ok = ctx && EVP_DigestSignInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
		     EVP_DigestSign(ctx, NULL, &slen, (const unsigned char *)data->data,
		                    data->len) == 1 &&
		     slen <= sizeof sig &&
		     EVP_DigestSign(ctx, sig, &slen, (const unsigned char *)data->data,
		                    data->len) == 1;
	}
	EVP_MD_CTX_free(ctx);
	if (!ok) return base_errf(err, "signing failed in OpenSSL");
	b64_encode(sig, slen, b64);
	return 0;
}

static int do_verify(EVP_PKEY *pk, int alg, const struct base_buf *data, const uint8_t *sig,
                     size_t slen)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t digest[32];
	int ok;
	if (alg == AUTH_DKIM_ED25519_SHA256)
		ok = ctx && sha256(data->data, data->len, digest) == 0 &&
		     EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig, slen, digest, 32) == 1;
	else
		ok = ctx && EVP_DigestVerifyInit(ctx, NULL, EVP_sha256(), NULL, pk) == 1 &&
		     EVP_DigestVerify(ctx, sig, slen, (const unsigned char *)data->data,
		                      data->len) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* Locates b='s raw value in a DKIM-Signature field. */
static int find_b(const char *raw, size_t len, struct auth_dkim_sig *sig, size_t value_off,
                  size_t *boff, size_t *bend, struct base_err *err)
{
	if (auth_dkim_tags_parse(raw + value_off, len - value_off, &sig->tags, err) < 0) return -1;
	const struct auth_dkim_tag *b = auth_dkim_tag_get(&sig->tags, "b");
	if (!b) return base_errf(err, "DKIM-Signature lacks b=");
	*boff = value_off + b->voff;
	*bend = value_off + b->vend;
	return 0;
}

int auth_dkim_sign_field(const struct auth_dkim_key *key, const char *msg, size_t len,
                         const char *field, struct base_buf *b64, struct base_err *err)
{
	struct auth_msg m;
	if (auth_msg_parse(&m, msg, len, err) < 0) return -1;
	struct auth_dkim_sig sig;
	const char *colon = strchr(field, ':');
	size_t flen = strlen(field), boff = 0, bend = 0;
	int rc = -1;
	struct base_buf data;
	base_buf_init(&data);
	if (!colon) {
		base_errf(err, "not a header field");
		goto out;
	}
	if (find_b(field, flen, &sig, (size_t)(colon - field) + 1, &boff, &bend, err) < 0) goto out;
	/* take h= and c= from the field as given */
	const struct auth_dkim_tag *h = auth_dkim_tag_get(&sig.tags, "h");
	const struct auth_dkim_tag *c = auth_dkim_tag_get(&sig.tags, "c");
	int hcanon = c && c->value_len >= 7 && !memcmp(c->value, "relaxed", 7) ? AUTH_DKIM_RELAXED
	                                                                       : AUTH_DKIM_SIMPLE;
	if (!h) {
		base_errf(err, "field has no h=");
		goto out;
	}
	char names[2048];
	size_t o = 0;
	for (size_t i = 0; i < h->value_len && o + 1 < sizeof names; i++)
		if (!is_wsp(h->value[i]) && h->value[i] != '\r' && h->value[i] != '\n')
			names[o++] = h->value[i];
	names[o] = 0;
	signed_headers(&m, names, hcanon, &data);
	sig_field_without_b(field, flen, boff, bend, hcanon, &data);
	rc = do_sign(key->pkey, key->alg, &data, b64, err);
out:
	base_buf_free(&data);
	auth_msg_free(&m);
	return rc;
}

/* Appends token to a folded field, breaking the line before 78 columns. */
static void fold_add(struct base_buf *out, size_t *col, const char *tok, size_t n, int space)
{
	if (*col + n + (space ? 1 : 0) > 76) {
		base_buf_append(out, "\r\n\t", 3);
		*col = 8;
	} else if (space) {
		base_buf_append(out, " ", 1);
		(*col)++;
	}
	base_buf_append(out, tok, n);
	*col += n;
}

int auth_dkim_sign(const struct auth_dkim_key *key, const struct auth_dkim_sign_opts *o,
                   const char *msg, size_t len, struct base_buf *out, struct base_err *err)
{
	if (!o->domain || !*o->domain || !o->selector || !*o->selector)
		return base_errf(err, "signing needs a domain and a selector");
	if (strlen(o->domain) > 253 || strlen(o->selector) > 63)
		return base_errf(err, "domain or selector too long");
	for (const char *p = o->domain; *p; p++)
		if (*p == ';' || *p == ' ' || *p == '=' || (unsigned char)*p < 33 ||
		    (unsigned char)*p > 126)
			return base_errf(
			    err, "domain '%s' has a character not allowed in d=", o->domain);
	for (const char *p = o->selector; *p; p++)
		if (*p == ';' || *p == ' ' || *p == '=' || (unsigned char)*p < 33 ||
		    (unsigned char)*p > 126)
			return base_errf(
			    err, "selector '%s' has a character not allowed in s=", o->selector);
	struct auth_msg m;
	if (auth_msg_parse(&m, msg, len, err) < 0) return -1;
	int rc = -1;
	struct base_buf f, names, data;
	base_buf_init(&f);
	base_buf_init(&names);
	base_buf_init(&data);
	if (auth_msg_find_last(&m, "From", 4, m.n) < 0) {
		base_errf(err, "message has no From field");
		goto out;
	}

	/* h=: each listed name once per field present, plus once more for
	 * the over-signed names (so that none can be added later). */
	const char *const *hl = o->headers ? o->headers : default_headers;
	const char *const *ov = o->oversign ? o->oversign : default_oversign;
	for (const char *const *h = hl; *h; h++) {
		size_t n = strlen(*h);
		int bad = !n || n > 128;
		for (size_t c = 0; c < n && !bad; c++)
			bad = (unsigned char)(*h)[c] < 33 || (unsigned char)(*h)[c] > 126 ||
			      (*h)[c] == ':' || (*h)[c] == ';';
		if (bad) {
			base_errf(err, "bad header name '%.128s' in the signed list", *h);
			goto out;
		}
		unsigned count = 0;
		for (size_t i = 0; i < m.n; i++)
			if (field_is(&m.fields[i], *h, n)) count++;
		for (const char *const *v = ov; *v; v++)
			if (!base_strcasecmp_ascii(*v, *h)) count++;
		for (unsigned k = 0; k < count; k++) {
			if (names.len) base_buf_append(&names, ":", 1);
			for (size_t c = 0; c < n; c++) {
				char lc = base_lower((*h)[c]);
				base_buf_append(&names, &lc, 1);
			}
		}
	}
	/* over-signed names missing from the list are added too */
	for (const char *const *v = ov; *v; v++) {
		int listed = 0;
		for (const char *const *h = hl; *h; h++)
			if (!base_strcasecmp_ascii(*v, *h)) listed = 1;
		if (listed) continue;
		size_t n = strlen(*v);
		int bad = !n || n > 128;
		for (size_t c = 0; c < n && !bad; c++)
			bad = (unsigned char)(*v)[c] < 33 || (unsigned char)(*v)[c] > 126 ||
			      (*v)[c] == ':' || (*v)[c] == ';';
		if (bad) {
			base_errf(err, "bad header name '%.128s' in the over-signed list", *v);
			goto out;
		}
		unsigned count = 1;
		for (size_t i = 0; i < m.n; i++)
			if (field_is(&m.fields[i], *v, n)) count++;
		for (unsigned k = 0; k < count; k++) {
			if (names.len) base_buf_append(&names, ":", 1);
			for (size_t c = 0; c < n; c++) {
				char lc = base_lower((*v)[c]);
				base_buf_append(&names, &lc, 1);
			}
		}
	}

	/* RFC 6376 §5.4: From must be signed, or no verifier accepts it */
	{
		int from = 0;
		for (const char *p = names.data; p && *p;) {
			const char *e = strchr(p, ':');
			size_t l = e ? (size_t)(e - p) : strlen(p);
			if (l == 4 && !memcmp(p, "from", 4)) from = 1;
			p += l + (e ? 1 : 0);
		}
		if (!from) {
			base_errf(err, "the signed header list must include From (RFC 6376 §5.4)");
			goto out;
		}
	}
	uint8_t bh[32];
	if (body_hash(&m, o->bcanon, -1, bh) < 0) {
		base_errf(err, "body hash failed");
		goto out;
	}
	struct base_buf bh64;
	base_buf_init(&bh64);
	b64_encode(bh, 32, &bh64);

	char tok[512];
	size_t col = 0;
	base_buf_puts(&f, "DKIM-Signature:");
	col = 15;
	fold_add(&f, &col, "v=1;", 4, 1);
	int n = snprintf(tok, sizeof tok, "a=%s;",
	                 key->alg == AUTH_DKIM_RSA_SHA256 ? "rsa-sha256" : "ed25519-sha256");
	fold_add(&f, &col, tok, (size_t)n, 1);
	n = snprintf(tok, sizeof tok, "c=%s/%s;",
	             o->hcanon == AUTH_DKIM_SIMPLE ? "simple" : "relaxed",
	             o->bcanon == AUTH_DKIM_SIMPLE ? "simple" : "relaxed");
	fold_add(&f, &col, tok, (size_t)n, 1);
	n = snprintf(tok, sizeof tok, "d=%s;", o->domain);
	fold_add(&f, &col, tok, (size_t)n, 1);
	n = snprintf(tok, sizeof tok, "s=%s;", o->selector);
	fold_add(&f, &col, tok, (size_t)n, 1);
	if (o->timestamp >= 0) {
		int64_t ts = o->timestamp ? o->timestamp : (int64_t)base_now();
		n = snprintf(tok, sizeof tok, "t=%lld;", (long long)ts);
		fold_add(&f, &col, tok, (size_t)n, 1);
		if (o->expire_after) {
			n = snprintf(tok, sizeof tok, "x=%lld;", (long long)(ts + o->expire_after));
			fold_add(&f, &col, tok, (size_t)n, 1);
		}
	}
	/* h= folded at colons */
	const char *p = names.data;
	int first = 1;
	while (p && *p) {
		const char *e = strchr(p, ':');
		size_t l = e ? (size_t)(e - p) : strlen(p);
		n = snprintf(tok, sizeof tok, "%s%.*s%s", first ? "h=" : "", (int)l, p,
		             e ? ":" : ";");
		fold_add(&f, &col, tok, (size_t)n, first);
		first = 0;
		p += l + (e ? 1 : 0);
	}
	n = snprintf(tok, sizeof tok, "bh=%s;", bh64.data);
	base_buf_free(&bh64);
	fold_add(&f, &col, tok, (size_t)n, 1);
	fold_add(&f, &col, "b=", 2, 1);

	/* sign: the fields, then this field with its (still empty) b= */
	signed_headers(&m, names.data, o->hcanon, &data);
	auth_dkim_canon_header(o->hcanon, f.data, f.len, &data);
	data.len -= 2;
	struct base_buf b64;
	base_buf_init(&b64);
	if (do_sign(key->pkey, key->alg, &data, &b64, err) < 0) {
		base_buf_free(&b64);
		goto out;
	}
	for (size_t i = 0; i < b64.len;) {
		size_t room = col < 76 ? 76 - col : 0;
		if (room < 8) {
			base_buf_append(&f, "\r\n\t", 3);
			col = 8;
			continue;
		}
		size_t take = b64.len - i < room ? b64.len - i : room;
		base_buf_append(&f, b64.data + i, take);
		col += take;
		i += take;
	}
	base_buf_free(&b64);
	base_buf_append(&f, "\r\n", 2);
	base_buf_append(out, f.data, f.len);
	rc = 0;
out:
	base_buf_free(&f);
	base_buf_free(&names);
	base_buf_free(&data);
	auth_msg_free(&m);
	return rc;
}

/* ---- verifying ----------------------------------------------------------- */

static int verdict(struct auth_dkim_verdict *v, int result, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int verdict(struct auth_dkim_verdict *v, int result, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(v->reason, sizeof v->reason, fmt, ap);
	va_end(ap);
	v->result = result;
	return result;
}

/* Fetches and parses the key for sig. Returns an AUTH_DKIM_* error result
 * or AUTH_DKIM_PASS when key is filled. */
static int fetch_key(const struct dns_lookup_ops *dns, const struct auth_dkim_sig *sig,
                     struct auth_dkim_keyrec *key, struct auth_dkim_verdict *v)
{
	char name[512];
	snprintf(name, sizeof name, "%s._domainkey.%s", sig->selector, sig->domain);
	struct dns_answer a;
	dns_lookup(dns, name, DNS_T_TXT, &a);
	int rc;
	if (a.status == DNS_LOOKUP_NXDOMAIN || a.status == DNS_LOOKUP_NODATA) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "no key published at %s", name);
	} else if (a.status != DNS_LOOKUP_OK) {
		rc = verdict(v, AUTH_DKIM_TEMPERROR, "DNS %s fetching the key at %s",
		             dns_lookup_status_name(a.status), name);
	} else if (a.n != 1) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "%zu TXT records at %s (one expected)", a.n,
		             name);
	} else {
		struct base_err err;
		if (auth_dkim_keyrec_parse(a.rr[0].data, a.rr[0].len, key, &err) < 0)
			rc = verdict(v, AUTH_DKIM_PERMERROR, "key at %s: %s", name, err.msg);
		else
			rc = AUTH_DKIM_PASS;
	}
	dns_answer_free(&a);
	return rc;
}

static int verify_one(const struct dns_lookup_ops *dns, const struct auth_msg *m, size_t idx,
                      time_t now, struct auth_dkim_verdict *v)
{
	const struct auth_msg_field *f = &m->fields[idx];
	struct auth_dkim_sig *sig = base_xmalloc(sizeof *sig);
	struct auth_dkim_keyrec key = {0};
	struct base_err err;
	struct base_buf data;
	base_buf_init(&data);
	int rc;
	memset(v, 0, sizeof *v);
	if (auth_dkim_sig_parse(f->raw + f->value_off, f->raw_len - f->value_off, sig, &err) < 0) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "%s", err.msg);
		goto out;
	}
	copy_str(v->domain, sizeof v->domain, sig->domain, strlen(sig->domain));
	copy_str(v->selector, sizeof v->selector, sig->selector, strlen(sig->selector));
	copy_str(v->identity, sizeof v->identity, sig->identity, strlen(sig->identity));
	copy_str(v->headers, sizeof v->headers, sig->headers, strlen(sig->headers));
	v->alg = sig->alg;
	if (sig->expires >= 0 && sig->expires < (int64_t)now) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "signature expired (x=%lld)",
		             (long long)sig->expires);
		goto out;
	}
	if ((rc = fetch_key(dns, sig, &key, v)) != AUTH_DKIM_PASS) goto out;
	v->key_bits = key.bits;
	v->testing = key.testing;
	if (key.revoked) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "key revoked (empty p=)");
		goto out;
	}
	if (key.alg != sig->alg) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "key type does not match a=");
		goto out;
	}
	if (key.sha1_only) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "key allows only sha1 (RFC 8301)");
		goto out;
	}
	if (key.alg == AUTH_DKIM_RSA_SHA256 && key.bits < AUTH_DKIM_RSA_MIN_BITS) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "RSA key of %u bits is below %d (RFC 8301)",
		             key.bits, AUTH_DKIM_RSA_MIN_BITS);
		goto out;
	}
	if (key.strict) {
		const char *at = strrchr(sig->identity, '@');
		if (!at || base_strcasecmp_ascii(at + 1, sig->domain)) {
			rc = verdict(v, AUTH_DKIM_PERMERROR, "key has t=s but i= is a subdomain");
			goto out;
		}
	}
	uint8_t bh[32];
	if (body_hash(m, sig->bcanon, sig->body_length, bh) < 0) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "l=%lld is longer than the body",
		             (long long)sig->body_length);
		goto out;
	}
	if (memcmp(bh, sig->bh, 32)) {
		rc = verdict(v, AUTH_DKIM_FAIL, "body hash mismatch (the body was changed)");
		goto out;
	}
	size_t boff = 0, bend = 0;
	if (find_b(f->raw, f->raw_len, sig, f->value_off, &boff, &bend, &err) < 0) {
		rc = verdict(v, AUTH_DKIM_PERMERROR, "%s", err.msg);
		goto out;
	}
	signed_headers(m, sig->headers, sig->hcanon, &data);
	sig_field_without_b(f->raw, f->raw_len, boff, bend, sig->hcanon, &data);
	if (!do_verify(key.pkey, sig->alg, &data, sig->b, sig->b_len))
		rc =
		    verdict(v, AUTH_DKIM_FAIL, "signature did not verify (signed fields changed?)");
	else
		rc = verdict(v, AUTH_DKIM_PASS,
		             "signature verified with the key at %s._domainkey.%s", sig->selector,
		             sig->domain);
out:
	auth_dkim_keyrec_free(&key);
	base_buf_free(&data);
	free(sig);
	return rc;
}

int auth_dkim_verify(const struct dns_lookup_ops *dns, const char *msg, size_t len, time_t now,
                     struct auth_dkim_verdict *v, size_t max, struct base_err *err)
{
	struct auth_msg m;
	if (auth_msg_parse(&m, msg, len, err) < 0) return -1;
	if (!now) now = base_now();
	int count = 0;
	for (size_t i = 0; i < m.n; i++) {
		const struct auth_msg_field *f = &m.fields[i];
		if (!field_is(f, "DKIM-Signature", 14)) continue;
		if ((size_t)count < max && count < AUTH_DKIM_MAX_SIGS)
			verify_one(dns, &m, i, now, &v[count]);
		count++;
	}
	auth_msg_free(&m);
	return count;
}
