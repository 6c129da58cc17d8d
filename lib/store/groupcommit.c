/* Group commit of key inserts: see groupcommit.h. */
#include "lib/store/groupcommit.h"

#include "kyok/err.h"

bool ky_gc_row_refused(int r)
{
	return r == KY_ERR_EXISTS || r == KY_ERR_KEY_LIMIT || r == KY_ERR_KEY_ALIAS_EXISTS;
}

int ky_gc_init(struct ky_gc *g)
{
	g->head = NULL;
	g->tail = &g->head;
	g->busy = false;
	if (pthread_mutex_init(&g->mu, NULL) != 0)
		return KY_ERR_INTERNAL;
	return 0;
}

void ky_gc_destroy(struct ky_gc *g)
{
	pthread_mutex_destroy(&g->mu);
}

int ky_gc_insert(struct ky_gc *g, struct ky_store_row *row, ky_gc_lead_fn lead, void *ctx)
{
	struct ky_gc_req req = {.row = row, .r = KY_ERR_INTERNAL};

	if (pthread_cond_init(&req.cv, NULL) != 0)
		return KY_ERR_INTERNAL;
	pthread_mutex_lock(&g->mu);
	*g->tail = &req;
	g->tail = &req.next;
	while (!req.done) {
		struct ky_gc_req *batch, *q;

		if (g->busy) {
			pthread_cond_wait(&req.cv, &g->mu);
			continue;
		}
		/* No commit under way: lead one for everything queued (ours included). */
		batch = g->head;
		g->head = NULL;
		g->tail = &g->head;
		g->busy = true;
		pthread_mutex_unlock(&g->mu);
		lead(ctx, batch);
		pthread_mutex_lock(&g->mu);
		/* Each owner waits for g->mu before it can see done and leave: its q and cv last
		 * until this thread lets go of the mutex. */
		for (q = batch; q != NULL;) {
			struct ky_gc_req *next = q->next;
			q->done = true;
			pthread_cond_signal(&q->cv);
			q = next;
		}
		g->busy = false;
		if (g->head != NULL) /* rows came meanwhile: the first one's thread leads them */
			pthread_cond_signal(&g->head->cv);
	}
	pthread_mutex_unlock(&g->mu);
	pthread_cond_destroy(&req.cv);
	return req.r;
}
