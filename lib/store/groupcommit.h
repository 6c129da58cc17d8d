/* Group commit of key inserts, the backend-independent part: the queue and who leads.
 *
 * Threads inserting at once share one write transaction. A thread queues its row; if no
 * commit is under way it becomes the leader, takes every row queued so far (its own
 * included) and calls the backend's lead function, which inserts them in one transaction and
 * sets each row's own result (a refused row, a duplicate id or the key limit, must not cost
 * the others theirs); the others wait for their result. Rows queued while a commit is under
 * way go in the next one. A backend that cannot keep one row's refusal from ending the
 * transaction sets the same error on every row of the batch: then none was written.
 *
 * Use: ky_gc_init once; ky_gc_insert from any thread; ky_gc_destroy when no thread is inside.
 */
#ifndef KYOK_STORE_GROUPCOMMIT_H
#define KYOK_STORE_GROUPCOMMIT_H

#include <pthread.h>
#include <stdbool.h>

struct ky_store_row;

/* A queued insert: the row and, once done, its result. Its thread waits on cv, signalled
 * only when its row is done or when it is first in the queue and the commit under way ends:
 * a commit wakes its own rows' threads and the next leader, no one else. */
struct ky_gc_req {
	struct ky_store_row *row;
	int r;
	bool done;
	pthread_cond_t cv;
	struct ky_gc_req *next;
};

struct ky_gc {
	pthread_mutex_t mu;
	struct ky_gc_req *head, **tail;
	bool busy; /* a leader is inserting a batch */
};

/* The backend's part: insert every row of batch (a list through next) in one transaction,
 * in list order, and set each one's r. ctx is what ky_gc_insert was given. */
typedef void (*ky_gc_lead_fn)(void *ctx, struct ky_gc_req *batch);

/* A result that refuses one row and leaves the batch's transaction usable for the others: the
 * id taken, the key limit reached, an alias taken. Anything else but 0 ends the transaction. */
bool ky_gc_row_refused(int r);

int ky_gc_init(struct ky_gc *g);
void ky_gc_destroy(struct ky_gc *g);

/* Queues row, leads or waits, and returns the row's result. */
int ky_gc_insert(struct ky_gc *g, struct ky_store_row *row, ky_gc_lead_fn lead, void *ctx);

#endif
