/* Group commit of key inserts: see groupcommit.h. */
#include "lib/store/groupcommit.h"

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kyok/err.h"

bool ky_gc_row_refused(int r)
{
	return r == KY_ERR_EXISTS || r == KY_ERR_KEY_LIMIT || r == KY_ERR_KEY_ALIAS_EXISTS;
}

int ky_gc_init(struct ky_gc *g)
{
	*g = (struct ky_gc){.head = NULL};
	g->tail = &g->head;
	if (pthread_mutex_init(&g->mu, NULL) != 0)
		return KY_ERR_INTERNAL;
	return 0;
}

int ky_gc_committer(struct ky_gc *g, ky_gc_lead_fn lead, void *ctx)
{
	if (pthread_cond_init(&g->work, NULL) != 0)
		return KY_ERR_INTERNAL;
	g->lead = lead;
	g->ctx = ctx;
	g->committer = true;
	return 0;
}

void ky_gc_destroy(struct ky_gc *g)
{
	if (g->running) {
		pthread_mutex_lock(&g->mu);
		g->stop = true;
		pthread_cond_signal(&g->work);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thread, NULL);
		g->running = false;
	}
	if (g->committer)
		pthread_cond_destroy(&g->work);
	pthread_mutex_destroy(&g->mu);
}

/* Takes everything queued and inserts it; called with g->mu held, returns with it held. */
static void gc_commit_locked(struct ky_gc *g, ky_gc_lead_fn lead, void *ctx)
{
	struct ky_gc_req *batch = g->head, *q;

	g->head = NULL;
	g->tail = &g->head;
	g->busy = true;
	pthread_mutex_unlock(&g->mu);
	lead(ctx, batch);
	pthread_mutex_lock(&g->mu);
	/* Each owner waits for g->mu before it can see done and leave: its q and cv last until
	 * this thread lets go of the mutex. */
	for (q = batch; q != NULL;) {
		struct ky_gc_req *next = q->next;
		q->done = true;
		pthread_cond_signal(&q->cv);
		q = next;
	}
	g->busy = false;
}

static void *gc_committer_main(void *arg)
{
	struct ky_gc *g = arg;

	/* Raising one's own nice value needs no privilege; failing to, the commits run at the
	 * same priority as the requests, as in leader mode. */
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), KY_GC_NICE);
	pthread_mutex_lock(&g->mu);
	for (;;) {
		while (g->head == NULL && !g->stop)
			pthread_cond_wait(&g->work, &g->mu);
		if (g->head == NULL)
			break; /* stopping, nothing queued */
		gc_commit_locked(g, g->lead, g->ctx);
	}
	pthread_mutex_unlock(&g->mu);
	return NULL;
}

int ky_gc_insert(struct ky_gc *g, struct ky_store_row *row, ky_gc_lead_fn lead, void *ctx,
                 int note[2])
{
	struct ky_gc_req req = {.row = row, .r = KY_ERR_INTERNAL};

	if (pthread_cond_init(&req.cv, NULL) != 0)
		return KY_ERR_INTERNAL;
	pthread_mutex_lock(&g->mu);
	/* The committer starts with the first insert; if it cannot be started, this insert and
	 * the next ones lead their own commits. */
	if (g->committer && !g->running && !g->stop) {
		if (pthread_create(&g->thread, NULL, gc_committer_main, g) == 0)
			g->running = true;
		else
			g->stop = true;
	}
	*g->tail = &req;
	g->tail = &req.next;
	if (g->running)
		pthread_cond_signal(&g->work);
	while (!req.done) {
		if (g->running || g->busy) {
			pthread_cond_wait(&req.cv, &g->mu);
			continue;
		}
		/* No commit under way: lead one for everything queued (ours included). */
		gc_commit_locked(g, g->committer ? g->lead : lead, g->committer ? g->ctx : ctx);
		if (g->head != NULL) /* rows came meanwhile: the first one's thread leads them */
			pthread_cond_signal(&g->head->cv);
	}
	pthread_mutex_unlock(&g->mu);
	pthread_cond_destroy(&req.cv);
	if (note != NULL) {
		note[0] = req.note[0];
		note[1] = req.note[1];
	}
	return req.r;
}
