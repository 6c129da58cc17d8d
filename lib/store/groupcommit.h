/* Group commit of key inserts, the backend-independent part: the queue and who commits.
 *
 * Threads inserting at once share one write transaction. A thread queues its row and waits;
 * whoever commits takes every row queued so far and calls the backend's lead function,
 * which inserts them in one transaction and sets each row's own result (a refused row, a
 * duplicate id or the key limit, must not cost the others theirs). Rows queued while a
 * commit is under way go in the next one. A backend that cannot keep one row's refusal from
 * ending the transaction sets the same error on every row of the batch: then none was
 * written.
 *
 * Who commits:
 *   leader     (ky_gc_init alone) the first queued thread that finds no commit under way
 *              leads one, for every row queued so far, its own included.
 *   committer  (ky_gc_committer after ky_gc_init) one thread of the store's, started at the
 *              first insert, at a lower scheduling priority (nice KY_GC_NICE): when the CPUs
 *              are all busy, requests that write nothing (an unwrap, a read) are run before
 *              the inserts' storage work, which then takes longer; alone, it takes the
 *              same time. The backend's lead function then runs on that thread only, and
 *              must use the store's connection for it, not the caller's.
 *
 * Use: ky_gc_init (and ky_gc_committer) once; ky_gc_insert from any thread; ky_gc_destroy
 * when no thread is inside (it stops the committer).
 */
#ifndef KYOK_STORE_GROUPCOMMIT_H
#define KYOK_STORE_GROUPCOMMIT_H

#include <pthread.h>
#include <stdbool.h>

#include "kyok/store.h"

#define KY_GC_NICE KY_STORE_WRITE_NICE

struct ky_store_row;

/* A queued insert: the row and, once done, its result, with what the backend wants its
 * caller to know of a failure (note: its own meaning, such as the failing call's error
 * numbers). Its thread waits on cv, signalled only when its row is done or when it is first
 * in the queue and the commit under way ends (leader mode): a commit wakes its own rows'
 * threads and the next leader, no one else. */
struct ky_gc_req {
	struct ky_store_row *row;
	int r;
	int note[2];
	bool done;
	pthread_cond_t cv;
	struct ky_gc_req *next;
};

/* The backend's part: insert every row of batch (a list through next) in one transaction,
 * in list order, and set each one's r (and note). ctx is what ky_gc_insert or
 * ky_gc_committer was given. */
typedef void (*ky_gc_lead_fn)(void *ctx, struct ky_gc_req *batch);

struct ky_gc {
	pthread_mutex_t mu;
	struct ky_gc_req *head, **tail;
	bool busy; /* a batch is being inserted */
	/* committer mode */
	bool committer, running, stop;
	pthread_cond_t work; /* the committer waits here for rows */
	pthread_t thread;
	ky_gc_lead_fn lead;
	void *ctx;
};

/* A result that refuses one row and leaves the batch's transaction usable for the others: the
 * id taken, the key limit reached, an alias taken. Anything else but 0 ends the transaction. */
bool ky_gc_row_refused(int r);

int ky_gc_init(struct ky_gc *g);
/* Committer mode: lead(ctx, batch) on the store's own thread from now on. */
int ky_gc_committer(struct ky_gc *g, ky_gc_lead_fn lead, void *ctx);
void ky_gc_destroy(struct ky_gc *g);

/* Queues row, leads or waits, and returns the row's result; note (may be NULL) receives the
 * row's note. In committer mode lead and ctx are not used (those of ky_gc_committer are). */
int ky_gc_insert(struct ky_gc *g, struct ky_store_row *row, ky_gc_lead_fn lead, void *ctx,
                 int note[2]);

#endif
