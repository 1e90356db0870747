// SPDX-License-Identifier: Apache-2.0
/*
 * tendril-cni: the executable a container runtime runs. It forwards the CNI call (env + stdin) to the
 * node's Tendril agent over its unix socket (HTTP/1.1 POST /v1/cni) and prints the agent's answer.
 *
 * Why native: Node.js start-up alone costs 150-250 ms, ten times a reference plugin's whole ADD. All CNI
 * logic lives in the agent (src/cni); this program only transports bytes. stdout carries the CNI result
 * and nothing else; diagnostics never go there.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_SOCKET "/var/run/tendril/tendril.sock"
#define DEFAULT_TIMEOUT_MS 120000L
#define LATEST_VERSION "1.1.0"
#define SUPPORTED_VERSIONS "[\"0.3.0\",\"0.3.1\",\"0.4.0\",\"1.0.0\",\"1.1.0\"]"
/* Spec codes the shim itself answers with (src/cni/errors.ts lists them all). */
#define CNI_IO_FAILURE 5
#define CNI_DECODE_FAILURE 6
#define CNI_INVALID_CONFIG 7
#define CNI_TRY_AGAIN_LATER 11
#define CNI_NOT_AVAILABLE 50

struct buf {
	char *data;
	size_t len;
	size_t cap;
};

static void die_oom(void)
{
	/* Nothing sensible can be printed as JSON without memory; the exit status tells the runtime. */
	fputs("tendril-cni: out of memory\n", stderr);
	exit(1);
}

static void buf_reserve(struct buf *b, size_t extra)
{
	size_t need = b->len + extra + 1;

	if (need <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	char *p = realloc(b->data, cap);
	if (!p)
		die_oom();
	b->data = p;
	b->cap = cap;
}

static void buf_add(struct buf *b, const char *s, size_t n)
{
	buf_reserve(b, n);
	memcpy(b->data + b->len, s, n);
	b->len += n;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void buf_printf(struct buf *b, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static int read_all(int fd, struct buf *b)
{
	for (;;) {
		buf_reserve(b, 65536);
		ssize_t n = read(fd, b->data + b->len, b->cap - b->len - 1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	buf_reserve(b, 0);
	b->data[b->len] = '\0';
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- minimal JSON scanning: only to find top-level string keys of the network config ---- */

struct scan {
	const char *p;
	const char *end;
};

static void skip_ws(struct scan *s)
{
	while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\n' || *s->p == '\r'))
		s->p++;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static void put_utf8(struct buf *out, unsigned cp)
{
	char u[4];

	if (cp < 0x80) {
		u[0] = (char)cp;
		buf_add(out, u, 1);
	} else if (cp < 0x800) {
		u[0] = (char)(0xc0 | (cp >> 6));
		u[1] = (char)(0x80 | (cp & 0x3f));
		buf_add(out, u, 2);
	} else if (cp < 0x10000) {
		u[0] = (char)(0xe0 | (cp >> 12));
		u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[2] = (char)(0x80 | (cp & 0x3f));
		buf_add(out, u, 3);
	} else {
		u[0] = (char)(0xf0 | (cp >> 18));
		u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
		u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
		u[3] = (char)(0x80 | (cp & 0x3f));
		buf_add(out, u, 4);
	}
}

static int read_hex4(struct scan *s, unsigned *cp)
{
	if (s->end - s->p < 4)
		return -1;
	unsigned v = 0;
	for (int i = 0; i < 4; i++) {
		int h = hexval(s->p[i]);
		if (h < 0)
			return -1;
		v = v * 16 + (unsigned)h;
	}
	s->p += 4;
	*cp = v;
	return 0;
}

/* Parses a JSON string at s->p (which points at '"'); decoded text goes to out when out != NULL. */
static int scan_string(struct scan *s, struct buf *out)
{
	if (s->p >= s->end || *s->p != '"')
		return -1;
	s->p++;
	while (s->p < s->end) {
		char c = *s->p++;
		if (c == '"')
			return 0;
		if ((unsigned char)c < 0x20)
			return -1;
		if (c != '\\') {
			if (out)
				buf_add(out, &c, 1);
			continue;
		}
		if (s->p >= s->end)
			return -1;
		char e = *s->p++;
		char lit;
		unsigned cp;
		switch (e) {
		case '"': lit = '"'; break;
		case '\\': lit = '\\'; break;
		case '/': lit = '/'; break;
		case 'b': lit = '\b'; break;
		case 'f': lit = '\f'; break;
		case 'n': lit = '\n'; break;
		case 'r': lit = '\r'; break;
		case 't': lit = '\t'; break;
		case 'u':
			if (read_hex4(s, &cp))
				return -1;
			if (cp >= 0xd800 && cp < 0xdc00 && s->end - s->p >= 6 && s->p[0] == '\\' && s->p[1] == 'u') {
				struct scan save = *s;
				unsigned lo;
				s->p += 2;
				if (!read_hex4(s, &lo) && lo >= 0xdc00 && lo < 0xe000)
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
				else
					*s = save;
			}
			if (out)
				put_utf8(out, cp);
			continue;
		default:
			return -1;
		}
		if (out)
			buf_add(out, &lit, 1);
	}
	return -1;
}

static int scan_value(struct scan *s, int depth);

static int scan_container(struct scan *s, int depth, char close, int keyed)
{
	s->p++;
	skip_ws(s);
	if (s->p < s->end && *s->p == close) {
		s->p++;
		return 0;
	}
	for (;;) {
		skip_ws(s);
		if (keyed) {
			if (scan_string(s, NULL))
				return -1;
			skip_ws(s);
			if (s->p >= s->end || *s->p != ':')
				return -1;
			s->p++;
		}
		if (scan_value(s, depth + 1))
			return -1;
		skip_ws(s);
		if (s->p >= s->end)
			return -1;
		if (*s->p == ',') {
			s->p++;
			continue;
		}
		if (*s->p == close) {
			s->p++;
			return 0;
		}
		return -1;
	}
}

static int scan_value(struct scan *s, int depth)
{
	if (depth > 64)
		return -1;
	skip_ws(s);
	if (s->p >= s->end)
		return -1;
	switch (*s->p) {
	case '"':
		return scan_string(s, NULL);
	case '{':
		return scan_container(s, depth, '}', 1);
	case '[':
		return scan_container(s, depth, ']', 0);
	default:
		/* number, true, false, null: a run of these characters */
		if (!strchr("-+.0123456789eEtrufalsn", *s->p))
			return -1;
		while (s->p < s->end && strchr("-+.0123456789eEtrufalsn", *s->p))
			s->p++;
		return 0;
	}
}

/*
 * Value of top-level string key `key` of the JSON object in `json`, decoded, or NULL (absent, not a
 * string, or the document is not a JSON object). The agent validates the config; this only needs the
 * socket path and the version to report errors in. *present (when given) says whether the key is there at all.
 */
static char *json_top_string(const char *json, size_t len, const char *key, int *present)
{
	struct scan s = { json, json + len };
	struct buf k = { 0 };
	char *found = NULL;

	if (present)
		*present = 0;
	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{')
		return NULL;
	s.p++;
	skip_ws(&s);
	if (s.p < s.end && *s.p == '}')
		return NULL;
	for (;;) {
		skip_ws(&s);
		k.len = 0;
		buf_reserve(&k, 0);
		k.data[0] = '\0';
		if (scan_string(&s, &k))
			break;
		skip_ws(&s);
		if (s.p >= s.end || *s.p != ':')
			break;
		s.p++;
		skip_ws(&s);
		if (present && strcmp(k.data, key) == 0)
			*present = 1;
		if (!found && strcmp(k.data, key) == 0 && s.p < s.end && *s.p == '"') {
			struct buf v = { 0 };
			buf_reserve(&v, 0);
			v.data[0] = '\0';
			if (scan_string(&s, &v)) {
				free(v.data);
				break;
			}
			/* An embedded NUL cannot be a path or a version; ignore such a value. */
			if (strlen(v.data) == v.len)
				found = v.data;
			else
				free(v.data);
		} else if (scan_value(&s, 1)) {
			break;
		}
		skip_ws(&s);
		if (s.p < s.end && *s.p == ',') {
			s.p++;
			continue;
		}
		break;
	}
	free(k.data);
	return found;
}

/* True when `json` is exactly one JSON object (whitespace around it allowed). */
static int json_is_object(const char *json, size_t len)
{
	struct scan s = { json, json + len };

	skip_ws(&s);
	if (s.p >= s.end || *s.p != '{' || scan_value(&s, 0))
		return 0;
	skip_ws(&s);
	return s.p == s.end;
}

static int supported_version(const char *v)
{
	static const char *const all[] = { "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0" };

	for (size_t i = 0; v && i < sizeof(all) / sizeof(all[0]); i++)
		if (strcmp(v, all[i]) == 0)
			return 1;
	return 0;
}

static void json_escape(struct buf *b, const char *s)
{
	buf_str(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };
			buf_add(b, e, 2);
		} else if (c < 0x20) {
			buf_printf(b, "\\u%04x", c);
		} else {
			buf_add(b, (const char *)&c, 1);
		}
	}
	buf_str(b, "\"");
}

/* Prints a CNI error object to stdout (where the runtime reads it) and exits 1. */
static void __attribute__((noreturn)) cni_fail(const char *version, int code, const char *msg, const char *details)
{
	struct buf b = { 0 };

	buf_str(&b, "{\"cniVersion\":");
	json_escape(&b, version ? version : LATEST_VERSION);
	buf_printf(&b, ",\"code\":%d,\"msg\":", code);
	json_escape(&b, msg);
	buf_str(&b, ",\"details\":");
	json_escape(&b, details);
	buf_str(&b, "}\n");
	write_all(STDOUT_FILENO, b.data, b.len);
	exit(1);
}

/* ---- HTTP transport ---- */

static long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000L + ts.tv_nsec / 1000000L;
}

/* Waits until fd is ready for `events` or the deadline passes: 0 ready, -1 timeout (errno ETIMEDOUT). */
static int wait_fd(int fd, short events, long deadline)
{
	for (;;) {
		long left = deadline - now_ms();
		if (left <= 0) {
			errno = ETIMEDOUT;
			return -1;
		}
		struct pollfd p = { .fd = fd, .events = events };
		int r = poll(&p, 1, left > 0x7fffffff ? 0x7fffffff : (int)left);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r > 0)
			return 0;
	}
}

/* Header values travel on one line: percent-encode '%', control characters and non-ASCII bytes. */
static void add_header(struct buf *req, const char *name, const char *value)
{
	if (!value)
		return;
	buf_str(req, name);
	buf_str(req, ": ");
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '%' || *p < 0x20 || *p >= 0x7f)
			buf_printf(req, "%%%02X", *p);
		else
			buf_add(req, (const char *)p, 1);
	}
	buf_str(req, "\r\n");
}

static const char *find_crlfcrlf(const char *p, size_t n)
{
	for (size_t i = 0; i + 3 < n; i++)
		if (p[i] == '\r' && p[i + 1] == '\n' && p[i + 2] == '\r' && p[i + 3] == '\n')
			return p + i;
	return NULL;
}

/* Value of header `name` in the header block [hdr, end), or NULL; *vlen receives its length. */
static const char *header_value(const char *hdr, const char *end, const char *name, size_t *vlen)
{
	size_t nlen = strlen(name);
	const char *line = hdr;

	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		if (!eol)
			eol = end;
		if ((size_t)(eol - line) > nlen && strncasecmp(line, name, nlen) == 0 && line[nlen] == ':') {
			const char *v = line + nlen + 1;
			const char *ve = eol;
			while (v < ve && (*v == ' ' || *v == '\t'))
				v++;
			while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
				ve--;
			*vlen = (size_t)(ve - v);
			return v;
		}
		line = eol + 1;
	}
	return NULL;
}

/* Decodes a chunked body in place; returns its length or -1 when malformed. */
static long dechunk(char *body, size_t n)
{
	size_t in = 0, out = 0;

	for (;;) {
		char *eol = memmem(body + in, n - in, "\r\n", 2);
		if (!eol)
			return -1;
		char *endp;
		unsigned long sz = strtoul(body + in, &endp, 16);
		if (endp == body + in)
			return -1;
		in = (size_t)(eol - body) + 2;
		if (sz == 0)
			return (long)out;
		if (sz > n - in)
			return -1;
		memmove(body + out, body + in, sz);
		out += sz;
		in += sz;
		if (n - in < 2 || body[in] != '\r' || body[in + 1] != '\n')
			return -1;
		in += 2;
	}
}

struct call {
	const char *socket_path;
	const char *version; /* config's cniVersion for our own error objects */
	long timeout_ms;
	/* What "no agent" means: 11 (try again later) for the verbs, 50 (cannot serve ADDs) for STATUS. */
	int unavailable;
};

static void __attribute__((noreturn)) unreachable(const struct call *c, const char *op, int err)
{
	char details[512];

	snprintf(details, sizeof(details), "%s %s: %s", op, c->socket_path, strerror(err));
	cni_fail(c->version, c->unavailable, "Tendril agent is not reachable", details);
}

static void __attribute__((noreturn)) bad_answer(const struct call *c, const char *what)
{
	char details[512];

	snprintf(details, sizeof(details), "%s: %s", c->socket_path, what);
	cni_fail(c->version, c->unavailable, "Tendril agent is not reachable", details);
}

static int connect_agent(const struct call *c)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };

	if (strlen(c->socket_path) >= sizeof(sa.sun_path))
		unreachable(c, "connect", ENAMETOOLONG);
	strcpy(sa.sun_path, c->socket_path);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		unreachable(c, "socket", errno);
	/* A unix connect does not block on a listening socket unless its backlog is full; then it waits. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		unreachable(c, "connect", errno);
	return fd;
}

/* When the shim started (CLOCK_REALTIME, microseconds): the agent charges exec -> its handler to "transport". */
static long long started_us;

static void __attribute__((noreturn)) forward(const struct call *c, const struct buf *in)
{
	long deadline = now_ms() + c->timeout_ms;
	struct buf req = { 0 };
	struct buf resp = { 0 };

	buf_str(&req, "POST /v1/cni HTTP/1.1\r\nHost: tendril-agent\r\nUser-Agent: tendril-cni\r\n");
	add_header(&req, "X-Cni-Command", getenv("CNI_COMMAND"));
	add_header(&req, "X-Cni-Containerid", getenv("CNI_CONTAINERID"));
	add_header(&req, "X-Cni-Netns", getenv("CNI_NETNS"));
	add_header(&req, "X-Cni-Ifname", getenv("CNI_IFNAME"));
	add_header(&req, "X-Cni-Args", getenv("CNI_ARGS"));
	add_header(&req, "X-Cni-Path", getenv("CNI_PATH"));
	buf_printf(&req, "X-Cni-Shim-Start: %lld\r\n", started_us);
	buf_printf(&req, "Content-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", in->len);
	buf_add(&req, in->data ? in->data : "", in->len);

	int fd = connect_agent(c);
	/* Send with deadline: the agent reads the body before answering, so a full socket buffer drains. */
	size_t off = 0;
	while (off < req.len) {
		if (wait_fd(fd, POLLOUT, deadline))
			unreachable(c, errno == ETIMEDOUT ? "timeout sending to" : "send to", errno);
		ssize_t w = send(fd, req.data + off, req.len - off, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			unreachable(c, "send to", errno);
		}
		off += (size_t)w;
	}

	/*
	 * Read until the server closes (Connection: close) or the declared length has arrived. The header end
	 * is kept as an offset: resp.data moves when the buffer grows.
	 */
	long hoff = -1;
	long want = -1;
	for (;;) {
		if (hoff >= 0 && want >= 0 && resp.len >= (size_t)want)
			break;
		if (wait_fd(fd, POLLIN, deadline)) {
			if (errno == ETIMEDOUT) {
				char what[128];
				snprintf(what, sizeof(what), "no answer within %ld ms", c->timeout_ms);
				cni_fail(c->version, c->unavailable, "Tendril agent did not answer in time", what);
			}
			unreachable(c, "receive from", errno);
		}
		buf_reserve(&resp, 65536);
		ssize_t n = recv(fd, resp.data + resp.len, resp.cap - resp.len - 1, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			unreachable(c, "receive from", errno);
		}
		if (n == 0)
			break;
		resp.len += (size_t)n;
		resp.data[resp.len] = '\0';
		if (hoff < 0) {
			const char *h = find_crlfcrlf(resp.data, resp.len);
			if (h) {
				size_t vl;
				const char *cl = header_value(resp.data, h, "Content-Length", &vl);
				hoff = (long)(h - resp.data);
				if (cl)
					want = hoff + 4 + strtol(cl, NULL, 10);
			}
		}
	}
	close(fd);

	if (resp.len == 0)
		bad_answer(c, "connection closed without an answer");
	const char *hend = hoff >= 0 ? resp.data + hoff : NULL;
	if (!hend || strncmp(resp.data, "HTTP/1.", 7) != 0)
		bad_answer(c, "the answer is not HTTP");
	int status = atoi(resp.data + 9);
	size_t vl;
	const char *ec = header_value(resp.data, hend, "X-Cni-Exit-Code", &vl);
	if (!ec || vl == 0 || vl > 3) {
		char what[64];
		snprintf(what, sizeof(what), "HTTP %d without X-Cni-Exit-Code", status);
		bad_answer(c, what);
	}
	int exit_code = 0;
	for (size_t i = 0; i < vl; i++) {
		if (ec[i] < '0' || ec[i] > '9')
			bad_answer(c, "malformed X-Cni-Exit-Code");
		exit_code = exit_code * 10 + (ec[i] - '0');
	}
	if (exit_code > 255)
		bad_answer(c, "malformed X-Cni-Exit-Code");

	char *body = (char *)hend + 4;
	size_t blen = resp.len - (size_t)(body - resp.data);
	const char *te = header_value(resp.data, hend, "Transfer-Encoding", &vl);
	if (te && vl == 7 && strncasecmp(te, "chunked", 7) == 0) {
		long n = dechunk(body, blen);
		if (n < 0)
			bad_answer(c, "malformed chunked body");
		blen = (size_t)n;
	} else if (want >= 0 && (size_t)want < resp.len) {
		blen = (size_t)want - (size_t)(body - resp.data);
	}
	if (write_all(STDOUT_FILENO, body, blen))
		exit(1);
	exit(exit_code);
}

int main(void)
{
	struct buf in = { 0 };
	const char *cmd = getenv("CNI_COMMAND");
	struct timespec ts;

	if (clock_gettime(CLOCK_REALTIME, &ts) == 0)
		started_us = (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;

	signal(SIGPIPE, SIG_IGN);
	/* Read stdin even for VERSION: a runtime still writing the config must not get EPIPE. */
	int rd = read_all(STDIN_FILENO, &in);
	if (cmd && strcmp(cmd, "VERSION") == 0) {
		/*
		 * Answered here: runtimes probe plugins with VERSION and it must work without an agent. The answer is
		 * in the caller's version when we speak it (as the agent's CniHandler answers).
		 */
		char *v = rd ? NULL : json_top_string(in.data ? in.data : "", in.len, "cniVersion", NULL);
		printf("{\"cniVersion\":\"%s\",\"supportedVersions\":" SUPPORTED_VERSIONS "}\n",
		       supported_version(v) ? v : LATEST_VERSION);
		free(v);
		free(in.data);
		return fflush(stdout) ? 1 : 0;
	}
	if (rd) {
		char details[256];
		snprintf(details, sizeof(details), "read stdin: %s", strerror(errno));
		cni_fail(NULL, CNI_IO_FAILURE, "Cannot read the network configuration", details);
	}
	buf_reserve(&in, 0);

	/*
	 * Without a readable config the shim cannot know which agent to ask, and asking none is no transient
	 * condition: a broken config stays broken, so it is 6/7 here, never "try again later".
	 */
	if (!json_is_object(in.data, in.len))
		cni_fail(NULL, CNI_DECODE_FAILURE, "decoding failure: network config on stdin is not a JSON object",
			 in.len == 0 ? "stdin is empty" : "the agent socket cannot be read from it");
	struct call c = { 0 };
	c.version = json_top_string(in.data, in.len, "cniVersion", NULL);
	if (!supported_version(c.version)) {
		free((char *)c.version);
		c.version = NULL;
	}
	int has_sock;
	char *sock = json_top_string(in.data, in.len, "agent-socket", &has_sock);
	if ((!sock || !*sock) && has_sock)
		cni_fail(c.version, CNI_INVALID_CONFIG, "invalid network config: \"agent-socket\" must be a non-empty string",
			 "it names the Tendril agent's unix socket");
	const char *env_sock = getenv("TENDRIL_AGENT_SOCKET");
	c.socket_path = sock && *sock ? sock : env_sock && *env_sock ? env_sock : DEFAULT_SOCKET;
	c.unavailable = cmd && strcmp(cmd, "STATUS") == 0 ? CNI_NOT_AVAILABLE : CNI_TRY_AGAIN_LATER;
	c.timeout_ms = DEFAULT_TIMEOUT_MS;
	const char *t = getenv("TENDRIL_CNI_TIMEOUT_MS");
	if (t && *t) {
		char *end;
		long v = strtol(t, &end, 10);
		if (*end == '\0' && v > 0)
			c.timeout_ms = v;
	}
	forward(&c, &in);
}
