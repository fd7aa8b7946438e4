/*
 * smtp.c — SMTP command and reply parsing, dot unstuffing, and the PROXY
 * protocol (haproxy's proxy-protocol.txt, versions 1 and 2).
 *
 * Parsers take (pointer, length) and never read past it; results point into
 * the caller's buffer or are copied into bounded fields of the result.
 * Reverse and forward paths are accepted with or without angle brackets
 * (senders to traps are often sloppy, and the evidence is worth keeping),
 * but they are bounded, free of controls and spaces, and the brackets, when
 * present, must match.
 */
#include "smtp/smtp.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>

static const struct {
	const char *name;
	enum smtp_verb verb;
} verbs[] = {{"HELO", SMTP_HELO}, {"EHLO", SMTP_EHLO},         {"MAIL", SMTP_MAIL},
             {"RCPT", SMTP_RCPT}, {"DATA", SMTP_DATA},         {"RSET", SMTP_RSET},
             {"NOOP", SMTP_NOOP}, {"QUIT", SMTP_QUIT},         {"VRFY", SMTP_VRFY},
             {"HELP", SMTP_HELP}, {"STARTTLS", SMTP_STARTTLS}, {"BDAT", SMTP_BDAT}};

static int ieq(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (base_lower(a[i]) != base_lower(b[i])) return 0;
	return 1;
}

/* Parses "<path> params" or "path params" starting at s. */
static int parse_path(const char *s, size_t n, int allow_empty, struct smtp_command *cmd,
                      struct base_err *err)
{
	size_t i = 0;
	while (i < n && s[i] == ' ') i++;
	const char *p;
	size_t pl;
	if (i < n && s[i] == '<') {
		const char *close = memchr(s + i + 1, '>', n - i - 1);
		if (!close) return base_errf(err, "unbalanced angle brackets in path");
		p = s + i + 1;
		pl = (size_t)(close - p);
		i = (size_t)(close - s) + 1;
	} else {
		p = s + i;
		while (i < n && s[i] != ' ') i++;
		pl = (size_t)(s + i - p);
	}
	if (pl > SMTP_PATH_MAX) return base_errf(err, "path longer than %d bytes", SMTP_PATH_MAX);
	if (pl == 0 && !allow_empty) return base_errf(err, "empty path");
	for (size_t k = 0; k < pl; k++) {
		unsigned char c = (unsigned char)p[k];
		if (c <= ' ' || c == 0x7f || c == '<' || c == '>')
			return base_errf(err, "bad character in path");
	}
	memcpy(cmd->path, p, pl);
	cmd->path[pl] = 0;
	if (i < n && s[i] != ' ') return base_errf(err, "junk after path");
	while (i < n && s[i] == ' ') i++;
	cmd->params = s + i;
	cmd->params_len = n - i;
	return 0;
}

int smtp_parse_command(const char *line, size_t len, struct smtp_command *cmd, struct base_err *err)
{
	memset(cmd, 0, sizeof *cmd);
	cmd->arg = line + len;
	cmd->params = line + len;
	while (len && (line[len - 1] == ' ' || line[len - 1] == '\t')) len--;
	size_t vl = 0;
	while (vl < len && line[vl] != ' ') vl++;
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (strlen(verbs[i].name) == vl && ieq(line, verbs[i].name, vl))
			cmd->verb = verbs[i].verb;
	if (cmd->verb == SMTP_UNKNOWN) return 0;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)line[i] < 0x20 && line[i] != '\t')
			return base_errf(err, "control character in command");
	size_t a = vl;
	while (a < len && line[a] == ' ') a++;
	cmd->arg = line + a;
	cmd->arg_len = len - a;
	switch (cmd->verb) {
	case SMTP_HELO:
	case SMTP_EHLO:
		if (!cmd->arg_len)
			return base_errf(err, "%s needs a domain or address literal",
			                 cmd->verb == SMTP_HELO ? "HELO" : "EHLO");
		return 0;
	case SMTP_MAIL:
		if (cmd->arg_len < 5 || !ieq(cmd->arg, "FROM:", 5))
			return base_errf(err, "expected MAIL FROM:<address>");
		return parse_path(cmd->arg + 5, cmd->arg_len - 5, 1, cmd, err);
	case SMTP_RCPT:
		if (cmd->arg_len < 3 || !ieq(cmd->arg, "TO:", 3))
			return base_errf(err, "expected RCPT TO:<address>");
		return parse_path(cmd->arg + 3, cmd->arg_len - 3, 0, cmd, err);
	case SMTP_DATA:
	case SMTP_RSET:
	case SMTP_QUIT:
	case SMTP_STARTTLS:
		if (cmd->arg_len) return base_errf(err, "no parameters allowed");
		return 0;
	case SMTP_BDAT:
		if (!cmd->arg_len) return base_errf(err, "BDAT needs a size");
		return 0;
	default:
		return 0;
	}
}

int smtp_param_size(const char *params, size_t len, uint64_t *size)
{
	size_t i = 0;
	while (i < len) {
		while (i < len && params[i] == ' ') i++;
		size_t s = i;
		while (i < len && params[i] != ' ') i++;
		if (i - s >= 5 && ieq(params + s, "SIZE=", 5)) {
			uint64_t v = 0;
			size_t k = s + 5;
			if (k == i) return -1;
			for (; k < i; k++) {
				if (params[k] < '0' || params[k] > '9' || v > UINT64_MAX / 10 - 10)
					return -1;
				v = v * 10 + (uint64_t)(params[k] - '0');
			}
			*size = v;
			return 1;
		}
	}
	return 0;
}

const char *smtp_path_domain(const char *path)
{
	const char *at = strrchr(path, '@');
	return at ? at + 1 : "";
}

int smtp_parse_reply_line(const char *line, size_t len, int *code, int *more, const char **text)
{
	if (len < 3) return -1;
	for (int i = 0; i < 3; i++)
		if (line[i] < '0' || line[i] > '9') return -1;
	int c = (line[0] - '0') * 100 + (line[1] - '0') * 10 + (line[2] - '0');
	if (c < 200 || c > 599) return -1;
	if (len > 3 && line[3] != ' ' && line[3] != '-') return -1;
	*code = c;
	*more = len > 3 && line[3] == '-';
	*text = len > 4 ? line + 4 : line + len;
	return 0;
}

int smtp_data_line(const char *line, size_t len, const char **out, size_t *out_len)
{
	if (len >= 1 && line[0] == '.') {
		if (len == 1) return 1;
		*out = line + 1;
		*out_len = len - 1;
		return 0;
	}
	*out = line;
	*out_len = len;
	return 0;
}

/* ---- PROXY protocol ------------------------------------------------------- */

static const uint8_t v2sig[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d,
                                  0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

static int parse_port(const char *s, uint16_t *out)
{
	uint64_t v;
	int k = base_parse_uint(s, 65535, &v);
	if (k <= 0 || s[k] || (s[0] == '0' && s[1])) return -1;
	*out = (uint16_t)v;
	return 0;
}

static int proxy_v1(const uint8_t *buf, size_t len, struct smtp_proxy *out, struct base_err *err)
{
	size_t scan = len < SMTP_PROXY_V1_MAX ? len : SMTP_PROXY_V1_MAX;
	const uint8_t *cr = NULL;
	for (size_t i = 0; i + 1 < scan; i++)
		if (buf[i] == '\r' && buf[i + 1] == '\n') {
			cr = buf + i;
			break;
		}
	if (!cr) {
		if (len >= SMTP_PROXY_V1_MAX)
			return base_errf(err, "PROXY v1 header longer than %d bytes",
			                 SMTP_PROXY_V1_MAX);
		return 0;
	}
	char line[SMTP_PROXY_V1_MAX + 1];
	size_t n = (size_t)(cr - buf);
	memcpy(line, buf, n);
	line[n] = 0;
	char *f[7] = {0};
	size_t nf = 0;
	for (char *p = line, *sp; nf < 7; p = sp + 1) {
		f[nf++] = p;
		sp = strchr(p, ' ');
		if (!sp) break;
		*sp = 0;
	}
	if (nf < 2 || strcmp(f[0], "PROXY")) return base_errf(err, "bad PROXY v1 header");
	memset(out, 0, sizeof *out);
	if (!strcmp(f[1], "UNKNOWN")) return (int)(n + 2);
	int fam = !strcmp(f[1], "TCP4") ? AF_INET : !strcmp(f[1], "TCP6") ? AF_INET6 : 0;
	if (!fam || nf != 6) return base_errf(err, "bad PROXY v1 header");
	if (inet_pton(fam, f[2], out->src) != 1 || inet_pton(fam, f[3], out->dst) != 1)
		return base_errf(err, "bad address in PROXY v1 header");
	if (parse_port(f[4], &out->src_port) < 0 || parse_port(f[5], &out->dst_port) < 0)
		return base_errf(err, "bad port in PROXY v1 header");
	out->family = fam;
	return (int)(n + 2);
}

static int proxy_v2(const uint8_t *buf, size_t len, struct smtp_proxy *out, struct base_err *err)
{
	if (len < 16) return 0;
	if ((buf[12] >> 4) != 2) return base_errf(err, "PROXY v2: bad version");
	int cmd = buf[12] & 15;
	if (cmd > 1) return base_errf(err, "PROXY v2: bad command");
	size_t body = (size_t)buf[14] << 8 | buf[15];
	if (len < 16 + body) return 0;
	memset(out, 0, sizeof *out);
	uint8_t fam = buf[13];
	if (cmd == 0) return (int)(16 + body); /* LOCAL: the connection's own addresses */
	if (fam == 0x11 || fam == 0x12) {
		if (body < 12) return base_errf(err, "PROXY v2: short IPv4 address block");
		out->family = AF_INET;
		memcpy(out->src, buf + 16, 4);
		memcpy(out->dst, buf + 20, 4);
		out->src_port = (uint16_t)(buf[24] << 8 | buf[25]);
		out->dst_port = (uint16_t)(buf[26] << 8 | buf[27]);
	} else if (fam == 0x21 || fam == 0x22) {
		if (body < 36) return base_errf(err, "PROXY v2: short IPv6 address block");
		out->family = AF_INET6;
		memcpy(out->src, buf + 16, 16);
		memcpy(out->dst, buf + 32, 16);
		out->src_port = (uint16_t)(buf[48] << 8 | buf[49]);
		out->dst_port = (uint16_t)(buf[50] << 8 | buf[51]);
	} else if (fam != 0x00) {
		return base_errf(err, "PROXY v2: unsupported address family 0x%02x", fam);
	}
	return (int)(16 + body);
}

int smtp_proxy_parse(const uint8_t *buf, size_t len, struct smtp_proxy *out, struct base_err *err)
{
	if (len == 0) return 0;
	if (buf[0] == 'P') {
		static const char pfx[] = "PROXY ";
		size_t k = len < 6 ? len : 6;
		if (memcmp(buf, pfx, k)) return base_errf(err, "expected a PROXY header");
		if (len < 6) return 0;
		return proxy_v1(buf, len, out, err);
	}
	if (buf[0] == v2sig[0]) {
		size_t k = len < 12 ? len : 12;
		if (memcmp(buf, v2sig, k)) return base_errf(err, "expected a PROXY header");
		if (len < 12) return 0;
		return proxy_v2(buf, len, out, err);
	}
	return base_errf(err, "expected a PROXY header");
}
