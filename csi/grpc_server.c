/*
 * The gRPC server: a unix socket, one nghttp2 server session per connection,
 * all on the libev loop of the main thread; requests run on worker threads.
 *
 * A request is one HTTP/2 stream: HEADERS (:method POST, :path
 * /csi.v1.<Service>/<Method>, content-type application/grpc...), DATA
 * carrying one length-prefixed message (grpc_frame.c), END_STREAM.  When the
 * stream ends the body is handed, with the method, to the pool (struct
 * csi_job); the worker posts the finished job back (done list + ev_async),
 * and the loop answers: HEADERS (:status 200, content-type), DATA (the
 * reply message), trailers (grpc-status, grpc-message percent-encoded); or
 * a trailers-only HEADERS for an error.
 *
 * Lifetime: a connection (struct conn) is freed when its socket is closed
 * and no job of it is still on a worker (jobs counts them); a job whose
 * stream or connection went away meanwhile is dropped by the loop.  Only the
 * loop thread touches conns and streams; workers touch only their job.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include "internal.h"
#include "tessera/common.h"

#define MAX_STREAMS  128 /* SETTINGS_MAX_CONCURRENT_STREAMS per connection */
#define MAX_CONNS    256
#define MAX_BUFFERED (256u << 20) /* request bytes held by all streams and queued jobs */
#define MAX_INFLIGHT 1024         /* jobs queued or running */

struct conn;

struct stream {
	int32_t id;                      /* HTTP/2 stream id */
	struct conn *conn;               /* owner */
	const struct csi_method *method; /* from :path; NULL = unknown */
	bool path_seen;                  /* :path header present */
	bool is_post;                    /* :method POST */
	bool grpc_type;                  /* content-type application/grpc[+proto|;...] */
	bool answered;                   /* a reply was submitted: ignore further input */
	bool dispatched;                 /* a job for it is on a worker */
	bool excluded;                   /* :path names a method of a service --mode leaves out */
	bool reset_after_reply;          /* answered early: RST_STREAM(NO_ERROR) once it is sent */
	uint8_t *body;                   /* request bytes so far (malloc); cap in srv->buffered */
	size_t len, cap;
	struct stream *prev, *next; /* conn->streams, so that closing the conn frees them */
	/* reply, owned once submitted */
	uint8_t *reply; /* framed reply message (malloc) or NULL */
	size_t reply_len, reply_off;
	int code;           /* grpc-status for the trailers */
	char status[12];    /* code as text (trailer value) */
	char message[1024]; /* grpc-message (already percent-encoded) */
};

struct conn {
	struct csi_server *srv;
	int fd; /* -1 once closed */
	ev_io rio, wio;
	nghttp2_session *session;
	uint8_t *pending; /* bytes nghttp2 produced that the socket did not take */
	size_t pending_len;
	unsigned jobs;          /* jobs on workers referring to this conn */
	struct stream *streams; /* open streams (nghttp2_session_del frees only its own) */
	struct conn *next;      /* srv->conns list */
};

struct csi_job {
	struct csi_job *next; /* queue link */
	struct conn *conn;    /* loop-owned; checked for liveness on return */
	int32_t stream_id;
	const struct csi_method *method;
	uint8_t *body; /* request (taken from the stream) */
	size_t len;
	size_t cap;     /* its allocation: in srv->buffered until the job returns */
	uint8_t *reply; /* produced by the worker */
	size_t reply_len;
	struct csi_call call; /* status, message, log details */
};

struct csi_server {
	struct csi_plugin *plugin;
	struct ev_loop *loop;
	int lfd; /* listening socket */
	char path[108];
	ev_io accept_io;
	ev_async done_async;
	ev_signal sigterm, sigint;
	struct conn *conns;
	unsigned nconns;
	size_t buffered;   /* loop thread: request bytes held, <= MAX_BUFFERED */
	unsigned inflight; /* loop thread: jobs queued or running, <= MAX_INFLIGHT */
	/* worker pool: todo queue and done list under mu */
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct csi_job *todo, *todo_tail, *done;
	bool stopping;
	pthread_t *threads;
	unsigned nthreads;
};

static void conn_flush(struct conn *c);
static void conn_close(struct conn *c);

/* ---- worker pool ------------------------------------------------------- */

static void *worker_main(void *arg)
{
	struct csi_server *s = arg;

	tsr_log_set_thread_name("csi-worker");
	pthread_mutex_lock(&s->mu);
	for (;;) {
		struct csi_job *j;
		double t0;

		while (s->todo == NULL && !s->stopping)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->todo == NULL)
			break;
		j = s->todo;
		s->todo = j->next;
		if (s->todo == NULL)
			s->todo_tail = NULL;
		pthread_mutex_unlock(&s->mu);

		t0 = tsr_mono_ns() / 1e6;
		csi_method_run(&j->call, j->method, j->body, j->len, &j->reply, &j->reply_len);
		if (j->call.code == GRPC_OK)
			tsr_info("csi: %s%s%s: OK (%.1f ms)", j->method->name,
				 j->call.volume[0] ? " " : "", j->call.volume, tsr_mono_ns() / 1e6 - t0);
		else
			tsr_info("csi: %s%s%s: %s: %s (%.1f ms)", j->method->name,
				 j->call.volume[0] ? " " : "", j->call.volume,
				 grpc_code_name(j->call.code), j->call.message, tsr_mono_ns() / 1e6 - t0);
		free(j->body);
		j->body = NULL;

		pthread_mutex_lock(&s->mu);
		j->next = s->done;
		s->done = j;
		ev_async_send(s->loop, &s->done_async);
	}
	pthread_mutex_unlock(&s->mu);
	csi_admin_thread_close();
	return NULL;
}

/* ---- replies ----------------------------------------------------------- */

static struct stream *stream_get(struct conn *c, int32_t id)
{
	return nghttp2_session_get_stream_user_data(c->session, id);
}

#define NV(n, v)                                                                                   \
	{                                                                                          \
		(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v),                          \
		    NGHTTP2_NV_FLAG_NO_COPY_NAME                                                   \
	}

static ssize_t reply_read_cb(nghttp2_session *session, int32_t stream_id, uint8_t *buf,
			     size_t length, uint32_t *data_flags, nghttp2_data_source *source,
			     void *user_data)
{
	struct stream *st = source->ptr;
	size_t n = st->reply_len - st->reply_off;

	if (n > length)
		n = length;
	memcpy(buf, st->reply + st->reply_off, n);
	st->reply_off += n;
	if (st->reply_off == st->reply_len) {
		nghttp2_nv trailers[] = {NV("grpc-status", st->status)};

		*data_flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
		if (nghttp2_submit_trailer(session, stream_id, trailers, 1))
			return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
	}
	return (ssize_t)n;
}

/* Submit the reply for st: data + trailers, or trailers-only on error. */
static void stream_answer(struct conn *c, struct stream *st, int code, const char *message,
			  uint8_t *reply, size_t reply_len)
{
	char status[16];

	if (st->answered) {
		free(reply);
		return;
	}
	st->answered = true;
	snprintf(status, sizeof(status), "%d", code);
	if (code == GRPC_OK && reply) {
		nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
		nghttp2_data_provider prd;

		st->reply = reply;
		st->reply_len = reply_len;
		st->reply_off = 0;
		st->code = code;
		snprintf(st->status, sizeof(st->status), "%d", code);
		prd.source.ptr = st;
		prd.read_callback = reply_read_cb;
		if (nghttp2_submit_response(c->session, st->id, hdrs, 2, &prd))
			nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_INTERNAL_ERROR);
		return;
	}
	free(reply);
	grpc_percent_encode(message ? message : "", st->message, sizeof(st->message));
	{
		nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
				     NV("grpc-status", status), NV("grpc-message", st->message)};

		if (nghttp2_submit_response(c->session, st->id, hdrs, 4, NULL))
			nghttp2_submit_rst_stream(c->session, NGHTTP2_FLAG_NONE, st->id,
						  NGHTTP2_INTERNAL_ERROR);
	}
}

static void done_cb(struct ev_loop *loop, ev_async *w, int revents)
{
	struct csi_server *s = w->data;
	struct csi_job *list, *j;

	pthread_mutex_lock(&s->mu);
	list = s->done;
	s->done = NULL;
	pthread_mutex_unlock(&s->mu);
	while ((j = list) != NULL) {
		struct conn *c = j->conn;
		list = j->next;
		c->jobs--;
		s->buffered -= j->cap;
		s->inflight--;
		if (c->fd >= 0) {
			struct stream *st = stream_get(c, j->stream_id);

			if (st) {
				st->dispatched = false;
				stream_answer(c, st, j->call.code, j->call.message, j->reply,
					      j->reply_len);
				j->reply = NULL;
				conn_flush(c);
			}
		} else if (c->jobs == 0) {
			conn_close(c); /* frees it now that no job refers to it */
		}
		free(j->reply);
		free(j);
	}
}

/* ---- request side ------------------------------------------------------ */

static void stream_drop_body(struct csi_server *s, struct stream *st)
{
	s->buffered -= st->cap;
	free(st->body);
	st->body = NULL;
	st->len = st->cap = 0;
}

static void stream_dispatch(struct conn *c, struct stream *st)
{
	struct csi_server *s = c->srv;
	struct csi_job *j;

	if (!st->is_post || !st->path_seen) {
		stream_answer(c, st, GRPC_INVALID_ARGUMENT,
			      "not a gRPC request (POST with :path "
			      "expected)",
			      NULL, 0);
		return;
	}
	if (!st->grpc_type) {
		stream_answer(c, st, GRPC_INVALID_ARGUMENT, "content-type must be application/grpc",
			      NULL, 0);
		return;
	}
	if (st->method == NULL) {
		stream_answer(c, st, GRPC_UNIMPLEMENTED,
			      st->excluded
				  ? "this tessera-csi instance does not serve that service "
				    "(see its --mode: controller or node)"
				  : "unknown method: tessera-csi serves the CSI v1 Identity, "
				    "Controller and Node services",
			      NULL, 0);
		return;
	}
	j = s->inflight < MAX_INFLIGHT ? calloc(1, sizeof(*j)) : NULL;
	if (j == NULL) {
		stream_drop_body(s, st);
		stream_answer(c, st, GRPC_RESOURCE_EXHAUSTED,
			      "server busy: too many calls in progress; retry later", NULL, 0);
		return;
	}
	j->conn = c;
	j->stream_id = st->id;
	j->method = st->method;
	j->body = st->body;
	j->len = st->len;
	j->cap = st->cap;
	j->call.plugin = s->plugin;
	j->call.method = st->method->name;
	st->body = NULL;
	st->len = st->cap = 0;
	st->dispatched = true;
	c->jobs++;
	s->inflight++;
	pthread_mutex_lock(&s->mu);
	if (s->todo_tail)
		s->todo_tail->next = j;
	else
		s->todo = j;
	s->todo_tail = j;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

static int on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = calloc(1, sizeof(*st));
	if (st == NULL)
		return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM */
	st->id = frame->hd.stream_id;
	st->conn = c;
	st->next = c->streams;
	if (c->streams)
		c->streams->prev = st;
	c->streams = st;
	nghttp2_session_set_stream_user_data(session, st->id, st);
	return 0;
}

static int on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name,
		     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
		     void *user_data)
{
	struct conn *c = user_data;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
		return 0;
	st = stream_get(c, frame->hd.stream_id);
	if (st == NULL)
		return 0;
	if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
		char path[128];

		st->path_seen = true;
		if (valuelen < sizeof(path)) {
			memcpy(path, value, valuelen);
			path[valuelen] = '\0';
			st->method = csi_method_find(c->srv->plugin, path, &st->excluded);
		}
	} else if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
		st->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
	} else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
		st->grpc_type = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
				(valuelen == 16 || value[16] == '+' || value[16] == ';');
	}
	return 0;
}

static int on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id,
			 const uint8_t *data, size_t len, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st = stream_get(c, stream_id);
	size_t limit = CSI_MAX_MSG + GRPC_FRAME_HDR;

	if (st == NULL || st->answered || st->dispatched || len == 0)
		return 0;
	if (st->len + len > limit) {
		char msg[128];

		snprintf(msg, sizeof(msg), "request message larger than the %u-byte limit",
			 CSI_MAX_MSG);
		stream_drop_body(c->srv, st);
		stream_answer(c, st, GRPC_RESOURCE_EXHAUSTED, msg, NULL, 0);
		/*
		 * Stop the client sending the rest, but only after the status
		 * went out: a RST_STREAM queued now would cancel it.
		 */
		st->reset_after_reply = true;
		return 0;
	}
	if (st->len + len > st->cap) {
		size_t cap = st->cap ? st->cap : 4096;
		uint8_t *nb;

		while (cap < st->len + len)
			cap *= 2;
		if (cap > limit)
			cap = limit;
		nb = c->srv->buffered - st->cap + cap <= MAX_BUFFERED ? realloc(st->body, cap)
								      : NULL;
		if (nb == NULL) {
			stream_drop_body(c->srv, st);
			stream_answer(
			    c, st, GRPC_RESOURCE_EXHAUSTED,
			    "server busy: too many request bytes in progress; retry later", NULL,
			    0);
			st->reset_after_reply = true;
			return 0;
		}
		c->srv->buffered += cap - st->cap;
		st->body = nb;
		st->cap = cap;
	}
	memcpy(st->body + st->len, data, len);
	st->len += len;
	return 0;
}

static int on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st;

	if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) ||
	    !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = stream_get(c, frame->hd.stream_id);
	if (st == NULL || st->answered || st->dispatched)
		return 0;
	stream_dispatch(c, st);
	return 0;
}

static void stream_free(struct conn *c, struct stream *st)
{
	if (st->prev)
		st->prev->next = st->next;
	else
		c->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	stream_drop_body(c->srv, st);
	free(st->reply);
	free(st);
}

static int on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
	struct conn *c = user_data;
	struct stream *st;

	if (frame->hd.type != NGHTTP2_HEADERS || !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
		return 0;
	st = stream_get(c, frame->hd.stream_id);
	if (st && st->reset_after_reply) {
		st->reset_after_reply = false;
		nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, st->id, NGHTTP2_NO_ERROR);
	}
	return 0;
}

static int on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code,
			   void *user_data)
{
	struct conn *c = user_data;
	struct stream *st = stream_get(c, stream_id);

	if (st == NULL)
		return 0;
	nghttp2_session_set_stream_user_data(session, stream_id, NULL);
	stream_free(c, st);
	return 0;
}

/* ---- connection I/O ---------------------------------------------------- */

static void conn_free(struct conn *c)
{
	struct csi_server *s = c->srv;
	struct conn **pp;

	for (pp = &s->conns; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	s->nconns--;
	free(c->pending);
	free(c);
}

/* Close the socket and the session; free c unless a worker still has a job of it. */
static void conn_close(struct conn *c)
{
	if (c->fd >= 0) {
		ev_io_stop(c->srv->loop, &c->rio);
		ev_io_stop(c->srv->loop, &c->wio);
		close(c->fd);
		c->fd = -1;
		nghttp2_session_del(c->session); /* no on_stream_close: ours are freed here */
		c->session = NULL;
		while (c->streams)
			stream_free(c, c->streams);
	}
	if (c->jobs == 0)
		conn_free(c);
}

/* Write what nghttp2 has to say; close the connection on error or when both sides are done. */
static void conn_flush(struct conn *c)
{
	if (c->fd < 0)
		return;
	for (;;) {
		const uint8_t *data;
		ssize_t n, w;

		if (c->pending_len) {
			w = write(c->fd, c->pending, c->pending_len);
			if (w < 0) {
				if (errno == EAGAIN || errno == EINTR)
					break;
				conn_close(c);
				return;
			}
			memmove(c->pending, c->pending + w, c->pending_len - (size_t)w);
			c->pending_len -= (size_t)w;
			if (c->pending_len)
				break;
		}
		n = nghttp2_session_mem_send(c->session, &data);
		if (n < 0) {
			conn_close(c);
			return;
		}
		if (n == 0)
			break;
		w = write(c->fd, data, (size_t)n);
		if (w < 0) {
			if (errno != EAGAIN && errno != EINTR) {
				conn_close(c);
				return;
			}
			w = 0;
		}
		if (w < n) {
			uint8_t *p = realloc(c->pending, (size_t)(n - w));

			if (p == NULL) {
				conn_close(c);
				return;
			}
			c->pending = p;
			memcpy(p, data + w, (size_t)(n - w));
			c->pending_len = (size_t)(n - w);
			break;
		}
	}
	if (c->pending_len)
		ev_io_start(c->srv->loop, &c->wio);
	else
		ev_io_stop(c->srv->loop, &c->wio);
	if (!nghttp2_session_want_read(c->session) && !nghttp2_session_want_write(c->session) &&
	    c->pending_len == 0)
		conn_close(c);
}

static void conn_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	uint8_t buf[65536];
	ssize_t n = read(c->fd, buf, sizeof(buf));

	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		conn_close(c);
		return;
	}
	if (nghttp2_session_mem_recv(c->session, buf, (size_t)n) < 0) {
		tsr_debug("csi: connection sent bytes that are not HTTP/2; closing it");
		conn_close(c);
		return;
	}
	conn_flush(c);
}

static void conn_write_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	conn_flush(w->data);
}

/* A connection on fd (taken: closed on failure).  0, or -ENOMEM. */
static int conn_new(struct csi_server *s, int fd)
{
	nghttp2_session_callbacks *cbs = NULL;
	nghttp2_settings_entry settings[] = {
	    {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, MAX_STREAMS},
	    {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
	};
	struct conn *c = calloc(1, sizeof(*c));

	if (c == NULL || nghttp2_session_callbacks_new(&cbs)) {
		free(c);
		close(fd);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
	nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
	nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk);
	nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
	nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
	nghttp2_session_callbacks_set_on_frame_send_callback(cbs, on_frame_send);
	if (nghttp2_session_server_new(&c->session, cbs, c)) {
		nghttp2_session_callbacks_del(cbs);
		free(c);
		close(fd);
		return -ENOMEM;
	}
	nghttp2_session_callbacks_del(cbs);
	nghttp2_submit_settings(c->session, NGHTTP2_FLAG_NONE, settings, 2);
	nghttp2_session_set_local_window_size(c->session, NGHTTP2_FLAG_NONE, 0, 8 << 20);
	c->srv = s;
	c->fd = fd;
	c->next = s->conns;
	s->conns = c;
	s->nconns++;
	ev_io_init(&c->rio, conn_read_cb, fd, EV_READ);
	ev_io_init(&c->wio, conn_write_cb, fd, EV_WRITE);
	c->rio.data = c->wio.data = c;
	ev_io_start(s->loop, &c->rio);
	conn_flush(c); /* our SETTINGS; may close c */
	return 0;
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct csi_server *s = w->data;
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	if (fd < 0)
		return;
	if (s->nconns >= MAX_CONNS) {
		tsr_warn("csi: %u connections open; refusing another", s->nconns);
		close(fd);
		return;
	}
	if (conn_new(s, fd))
		tsr_warn("csi: out of memory for a new connection");
}

/* ---- fuzzing: one connection, no threads -------------------------------- */

static void drain(int fd)
{
	uint8_t buf[65536];

	while (read(fd, buf, sizeof(buf)) > 0)
		;
}

int csi_server_feed(struct csi_plugin *p, const uint8_t *data, size_t len)
{
	struct csi_server s = {.plugin = p, .lfd = -1};
	size_t off = 0;
	int sv[2];

	s.loop = ev_loop_new(EVFLAG_AUTO);
	if (s.loop == NULL)
		return -ENOMEM;
	s.done_async.data = &s;
	pthread_mutex_init(&s.mu, NULL);
	pthread_cond_init(&s.cv, NULL);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv)) {
		ev_loop_destroy(s.loop);
		return -errno;
	}
	if (conn_new(&s, sv[0]) == 0) {
		while (off < len && s.conns && s.conns->fd >= 0) {
			size_t n = len - off < 16384 ? len - off : 16384;
			ssize_t w = write(sv[1], data + off, n);

			if (w <= 0)
				break;
			off += (size_t)w;
			conn_read_cb(s.loop, &s.conns->rio, EV_READ);
			drain(sv[1]);
		}
		/* the worker's part, inline: calls that need no tesserad run, others fail */
		while (s.todo) {
			struct csi_job *j = s.todo;
			const char *m = j->method->name;

			s.todo = j->next;
			if (!strcmp(m, "GetPluginInfo") || !strcmp(m, "GetPluginCapabilities") ||
			    !strcmp(m, "ControllerGetCapabilities") ||
			    !strcmp(m, "NodeGetCapabilities"))
				csi_method_run(&j->call, j->method, j->body, j->len, &j->reply,
					       &j->reply_len);
			else
				csi_fail(&j->call, GRPC_UNAVAILABLE, "fuzzing: no tesserad");
			free(j->body);
			j->body = NULL;
			j->next = s.done;
			s.done = j;
		}
		s.todo_tail = NULL;
		done_cb(s.loop, &s.done_async, 0);
		drain(sv[1]);
	}
	while (s.conns) {
		s.conns->jobs = 0;
		conn_close(s.conns);
	}
	close(sv[1]);
	ev_loop_destroy(s.loop);
	pthread_mutex_destroy(&s.mu);
	pthread_cond_destroy(&s.cv);
	return 0;
}

/* ---- start / run / stop ------------------------------------------------ */

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	tsr_info("csi: signal %d: stopping", w->signum);
	ev_break(loop, EVBREAK_ALL);
}

int csi_server_start(struct csi_plugin *p, const char *path, unsigned nworkers,
		     struct csi_server **out)
{
	struct csi_server *s = calloc(1, sizeof(*s));
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct stat sb;
	unsigned i;
	int ret;

	if (s == NULL)
		return -ENOMEM;
	s->lfd = -1;
	s->plugin = p;
	/* not ev_default_loop: its SIGCHLD handler would reap the children csi_run waits for */
	s->loop = ev_loop_new(EVFLAG_AUTO);
	if (s->loop == NULL) {
		free(s);
		return -ENOMEM;
	}
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (strlen(path) >= sizeof(sa.sun_path)) {
		tsr_error("csi: endpoint %s: path too long (at most %zu bytes)", path,
			  sizeof(sa.sun_path) - 1);
		ret = -ENAMETOOLONG;
		goto err;
	}
	snprintf(s->path, sizeof(s->path), "%s", path);
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if (lstat(path, &sb) == 0 && S_ISSOCK(sb.st_mode))
		unlink(path); /* a stale socket from a previous run */
	s->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->lfd < 0 || bind(s->lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(s->lfd, 128)) {
		ret = -errno;
		tsr_error("csi: endpoint %s: %s", path, strerror(-ret));
		goto err;
	}
	ev_io_init(&s->accept_io, accept_cb, s->lfd, EV_READ);
	s->accept_io.data = s;
	ev_io_start(s->loop, &s->accept_io);
	ev_async_init(&s->done_async, done_cb);
	s->done_async.data = s;
	ev_async_start(s->loop, &s->done_async);
	ev_signal_init(&s->sigterm, signal_cb, SIGTERM);
	ev_signal_init(&s->sigint, signal_cb, SIGINT);
	ev_signal_start(s->loop, &s->sigterm);
	ev_signal_start(s->loop, &s->sigint);
	signal(SIGPIPE, SIG_IGN);
	s->threads = calloc(nworkers, sizeof(*s->threads));
	if (s->threads == NULL) {
		ret = -ENOMEM;
		goto err;
	}
	for (i = 0; i < nworkers; i++) {
		ret = -pthread_create(&s->threads[i], NULL, worker_main, s);
		if (ret) {
			tsr_error("csi: cannot start worker thread: %s", strerror(-ret));
			goto err;
		}
		s->nthreads++;
	}
	*out = s;
	return 0;
err:
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL);
	free(s->threads);
	if (s->lfd >= 0) {
		close(s->lfd);
		unlink(s->path);
	}
	ev_loop_destroy(s->loop);
	free(s);
	return ret;
}

void csi_server_run(struct csi_server *s)
{
	unsigned i;

	ev_run(s->loop, 0);
	ev_io_stop(s->loop, &s->accept_io);
	close(s->lfd);
	unlink(s->path);
	pthread_mutex_lock(&s->mu);
	s->stopping = true;
	while (s->todo) { /* not started: drop */
		struct csi_job *j = s->todo;

		s->todo = j->next;
		j->conn->jobs--;
		s->buffered -= j->cap;
		s->inflight--;
		free(j->body);
		free(j);
	}
	s->todo_tail = NULL;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
	for (i = 0; i < s->nthreads; i++)
		pthread_join(s->threads[i], NULL); /* running handlers finish their step */
	done_cb(s->loop, &s->done_async, 0);
	while (s->conns) {
		struct conn *c = s->conns;

		c->jobs = 0;
		conn_close(c);
	}
	free(s->threads);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	ev_loop_destroy(s->loop);
	free(s);
}
