/* punctum — chunk-encoding thread pool (see chunkpool.h). */
#include "io/chunkpool.h"

#include <pthread.h>
#include <signal.h>
#include <stdlib.h>

#include "punctum/common.h"

enum { MAX_THREADS = 64 };

typedef struct {
    pt_cjob *head, *tail;
} jobq;

struct pt_cpool {
    pthread_mutex_t mu;
    pthread_cond_t work_cv, done_cv;
    jobq todo, done;
    int running, in_flight, stop;
    int n_workers, n_coders;
    pthread_t *workers;
    pt_chunk_coder **coders; /* [0]: the owner's, [1 + k]: worker k's */
    pt_cpool_stats st;
};

static void q_push(jobq *q, pt_cjob *j) {
    j->next = NULL;
    if (q->tail)
        q->tail->next = j;
    else
        q->head = j;
    q->tail = j;
}

static pt_cjob *q_pop(jobq *q) {
    pt_cjob *j = q->head;
    if (j) {
        q->head = j->next;
        if (!q->head) q->tail = NULL;
        j->next = NULL;
    }
    return j;
}

static void encode(pt_chunk_coder *c, pt_cjob *j) {
    j->saturated = 0;
    j->out_len =
        pt_chunk_encode(c, &j->fmt, j->src, j->stored_planes, j->out, j->out_cap, &j->saturated);
    j->probed = j->probe && j->out_len ? pt_chunk_probe(c, &j->fmt) : j->stored_planes;
}

/* Run job j on coder c (the mutex is held on entry and on return). */
static void run_job(pt_cpool *p, pt_chunk_coder *c, pt_cjob *j) {
    p->running++;
    pthread_mutex_unlock(&p->mu);
    const double t0 = pt_now();
    encode(c, j);
    const double dt = pt_now() - t0;
    pthread_mutex_lock(&p->mu);
    p->running--;
    p->st.busy_s += dt;
    p->st.bytes_in += (int64_t)(j->fmt.n_elems * j->fmt.store_esz);
    p->st.bytes_out += (int64_t)j->out_len;
    p->st.chunks++;
    q_push(&p->done, j);
    pthread_cond_broadcast(&p->done_cv);
}

typedef struct {
    pt_cpool *p;
    int k;
} worker_arg;

static void *worker_main(void *arg) {
    worker_arg *a = arg;
    pt_cpool *p = a->p;
    pt_chunk_coder *c = p->coders[1 + a->k];
    free(a);
    pthread_mutex_lock(&p->mu);
    for (;;) {
        pt_cjob *j = q_pop(&p->todo);
        if (j) {
            run_job(p, c, j);
            continue;
        }
        if (p->stop) break;
        pthread_cond_wait(&p->work_cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

pt_cpool *pt_cpool_new(int threads, int level) {
    if (threads < 1) threads = 1;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    pt_cpool *p = pt_xcalloc(1, sizeof *p);
    p->coders = pt_xcalloc((size_t)threads, sizeof *p->coders);
    p->n_coders = threads;
    for (int k = 0; k < threads; k++)
        if (!(p->coders[k] = pt_chunk_coder_new(level))) {
            pt_cpool_free(p);
            return NULL;
        }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->work_cv, NULL);
    pthread_cond_init(&p->done_cv, NULL);
    p->st.threads = threads;
    p->workers = pt_xcalloc((size_t)threads, sizeof(pthread_t));
    /* workers take no signals: the main thread's handlers see them all */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    for (int k = 0; k + 1 < threads; k++) {
        worker_arg *a = pt_xmalloc(sizeof *a);
        *a = (worker_arg){p, k};
        if (pthread_create(&p->workers[k], NULL, worker_main, a)) {
            free(a);
            break; /* fewer workers: the owner encodes the rest */
        }
        p->n_workers++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    p->st.threads = p->n_workers + 1;
    return p;
}

void pt_cpool_free(pt_cpool *p) {
    if (!p) return;
    if (p->workers) {
        pthread_mutex_lock(&p->mu);
        p->stop = 1;
        pthread_cond_broadcast(&p->work_cv);
        pthread_mutex_unlock(&p->mu);
        for (int k = 0; k < p->n_workers; k++) pthread_join(p->workers[k], NULL);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->work_cv);
        pthread_cond_destroy(&p->done_cv);
    }
    for (int k = 0; k < p->n_coders; k++) pt_chunk_coder_free(p->coders[k]);
    free(p->coders);
    free(p->workers);
    free(p);
}

void pt_cpool_push(pt_cpool *p, pt_cjob *j) {
    pthread_mutex_lock(&p->mu);
    q_push(&p->todo, j);
    p->in_flight++;
    pthread_cond_signal(&p->work_cv);
    pthread_mutex_unlock(&p->mu);
}

pt_cjob *pt_cpool_pop_done(pt_cpool *p) {
    pthread_mutex_lock(&p->mu);
    pt_cjob *j = q_pop(&p->done);
    if (j) p->in_flight--;
    pthread_mutex_unlock(&p->mu);
    return j;
}

int pt_cpool_help(pt_cpool *p) {
    pthread_mutex_lock(&p->mu);
    pt_cjob *j = q_pop(&p->todo);
    if (j) run_job(p, p->coders[0], j);
    pthread_mutex_unlock(&p->mu);
    return j != NULL;
}

void pt_cpool_wait(pt_cpool *p) {
    pthread_mutex_lock(&p->mu);
    while (!p->done.head && (p->todo.head || p->running)) {
        if (p->todo.head && p->n_workers == 0) break; /* nobody else will run it */
        pthread_cond_wait(&p->done_cv, &p->mu);
    }
    pthread_mutex_unlock(&p->mu);
}

int pt_cpool_in_flight(pt_cpool *p) {
    pthread_mutex_lock(&p->mu);
    const int n = p->in_flight;
    pthread_mutex_unlock(&p->mu);
    return n;
}

void pt_cpool_get_stats(pt_cpool *p, pt_cpool_stats *s) {
    pthread_mutex_lock(&p->mu);
    *s = p->st;
    pthread_mutex_unlock(&p->mu);
}
