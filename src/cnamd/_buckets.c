/* Per-source rate limits in memory shared by every worker process.
 *
 * Why: the SIP front's workers each read their own UDP socket, steered at
 * random, and the HTTP workers share one listening socket, so one source's
 * requests reach every worker. A per-process table let a source make
 * workers x the configured rate. Here all workers meter a source against one
 * table in a shared mapping (sharedlimits.py creates it before the workers
 * start and hands them its descriptor).
 *
 * The rule is GCRA, the token bucket written as one number per source: its
 * "theoretical arrival time" (tat, ns on CLOCK_MONOTONIC, which every process
 * of the host shares). A request at `now` is allowed when
 *     max(tat, now) + interval - now <= limit      (interval = 1/rate, limit = burst/rate)
 * and then tat becomes max(tat, now) + interval: exactly a bucket of `burst`
 * tokens refilled at `rate`. One number means one compare-and-swap, so there is
 * no lock a killed worker could leave held, and a source whose tat <= now
 * holds a full bucket: its slot may be reused without changing its answer.
 *
 * Table: `slots` (a power of 2, >= 8) entries of {uint64 key, int64 tat},
 * key = SipHash-1-3 of the source text under the region's random 128-bit seed
 * (0 marks an empty slot), so nobody outside can aim sources at one slot. A
 * source lives in the 8-slot window its hash names (two cache lines); a new
 * source takes the window's empty slot, or the one nearest to a full bucket
 * (smallest tat). Only a flood of sources each in debt can push a source out
 * early, which hands it a full bucket: what the per-process LRU did too.
 *
 * Races: two workers updating one source serialize on the CAS. A worker
 * claiming a slot while another updates the source it evicts may leave one
 * of them a request's worth off; both are within the limit's purpose.
 *
 * SharedBucket(region, offset, slots, seed0, seed1, rate, burst)
 *     region: a writable buffer (the mmap); the table starts at `offset`
 * .allow(source, now) -> bool         take one token (now: time.monotonic())
 * .available(source, now) -> float    tokens held, without taking one
 * .retune(rate, burst)                new limits; each source keeps its debt (in time)
 * .rate, .burst, .retry_after         as TokenBucket's
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define WINDOW 8
#define CLAIM_TRIES 4
#define MAX_SPAN ((int64_t)1 << 62) /* limits longer than ~146 years are "forever" */

typedef struct {
    uint64_t key;
    int64_t tat;
} Slot;

typedef struct {
    PyObject_HEAD
    Py_buffer view;
    Slot *slots;
    uint64_t mask;
    uint64_t k0, k1;
    int64_t interval; /* ns per token */
    int64_t limit;    /* ns: burst * interval */
    double rate, burst;
    long retry_after;
} SharedBucket;

/* SipHash-1-3 (Aumasson, Bernstein), 64-bit output. */
#define ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIPROUND                                                                    \
    do {                                                                            \
        v0 += v1; v1 = ROTL(v1, 13); v1 ^= v0; v0 = ROTL(v0, 32);                   \
        v2 += v3; v3 = ROTL(v3, 16); v3 ^= v2;                                      \
        v0 += v3; v3 = ROTL(v3, 21); v3 ^= v0;                                      \
        v2 += v1; v1 = ROTL(v1, 17); v1 ^= v2; v2 = ROTL(v2, 32);                   \
    } while (0)

static uint64_t siphash13(uint64_t k0, uint64_t k1, const unsigned char *in, size_t len)
{
    uint64_t v0 = 0x736f6d6570736575ULL ^ k0, v1 = 0x646f72616e646f6dULL ^ k1;
    uint64_t v2 = 0x6c7967656e657261ULL ^ k0, v3 = 0x7465646279746573ULL ^ k1;
    uint64_t b = (uint64_t)len << 56, m;
    size_t i, left = len & 7;
    const unsigned char *end = in + len - left;
    for (; in != end; in += 8) {
        memcpy(&m, in, 8); /* little-endian hosts; the key only has to be stable per host */
        v3 ^= m;
        SIPROUND;
        v0 ^= m;
    }
    for (i = 0; i < left; i++)
        b |= (uint64_t)in[i] << (8 * i);
    v3 ^= b;
    SIPROUND;
    v0 ^= b;
    v2 ^= 0xff;
    SIPROUND;
    SIPROUND;
    SIPROUND;
    return v0 ^ v1 ^ v2 ^ v3;
}

/* The key of `source` (a str or bytes), never 0; 0 with an exception set on error. */
static uint64_t source_key(SharedBucket *self, PyObject *source)
{
    const char *data;
    Py_ssize_t len;
    uint64_t key;
    if (PyUnicode_Check(source)) {
        data = PyUnicode_AsUTF8AndSize(source, &len); /* no copy for an ASCII address */
        if (data == NULL)
            return 0;
    } else if (PyBytes_Check(source)) {
        data = PyBytes_AS_STRING(source);
        len = PyBytes_GET_SIZE(source);
    } else {
        PyErr_SetString(PyExc_TypeError, "source must be str or bytes");
        return 0;
    }
    key = siphash13(self->k0, self->k1, (const unsigned char *)data, (size_t)len);
    return key ? key : 1;
}

static int64_t to_ns(double now) { return (int64_t)(now * 1e9); }

/* The slot holding `key`, or NULL. */
static Slot *find(SharedBucket *self, uint64_t key)
{
    Slot *window = self->slots + (key & self->mask & ~(uint64_t)(WINDOW - 1));
    int i;
    for (i = 0; i < WINDOW; i++)
        if (__atomic_load_n(&window[i].key, __ATOMIC_ACQUIRE) == key)
            return &window[i];
    return NULL;
}

/* The slot holding `key`, claimed (with a full bucket) if it had none; NULL only when
 * other workers kept changing the window under us (the caller lets the request pass). */
static Slot *find_or_claim(SharedBucket *self, uint64_t key, int64_t now)
{
    Slot *window = self->slots + (key & self->mask & ~(uint64_t)(WINDOW - 1));
    int attempt, i;
    for (attempt = 0; attempt < CLAIM_TRIES; attempt++) {
        Slot *victim = window;
        uint64_t victim_key = 0;
        int64_t oldest = INT64_MAX;
        for (i = 0; i < WINDOW; i++) {
            uint64_t k = __atomic_load_n(&window[i].key, __ATOMIC_ACQUIRE);
            int64_t tat;
            if (k == key)
                return &window[i];
            tat = k == 0 ? INT64_MIN : __atomic_load_n(&window[i].tat, __ATOMIC_RELAXED);
            if (tat < oldest) {
                oldest = tat;
                victim = &window[i];
                victim_key = k;
            }
        }
        if (__atomic_compare_exchange_n(&victim->key, &victim_key, key, 0, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE)) {
            __atomic_store_n(&victim->tat, now, __ATOMIC_RELEASE); /* a full bucket */
            return victim;
        }
    }
    return NULL;
}

static int take(SharedBucket *self, uint64_t key, int64_t now)
{
    Slot *slot = find_or_claim(self, key, now);
    int64_t tat, next;
    if (slot == NULL)
        return 1;
    tat = __atomic_load_n(&slot->tat, __ATOMIC_ACQUIRE);
    for (;;) {
        next = (tat > now ? tat : now) + self->interval;
        if (next - now > self->limit)
            return 0;
        if (__atomic_compare_exchange_n(&slot->tat, &tat, next, 1, __ATOMIC_ACQ_REL,
                                        __ATOMIC_ACQUIRE))
            return 1;
    }
}

static int set_limits(SharedBucket *self, double rate, double burst)
{
    double interval, limit;
    if (!(rate > 0) || !(burst >= 1) || !isfinite(rate) || !isfinite(burst)) {
        PyErr_SetString(PyExc_ValueError, "rate must be > 0 and burst >= 1");
        return -1;
    }
    interval = 1e9 / rate;
    limit = interval * burst;
    self->interval = interval < 1 ? 1 : (interval > (double)MAX_SPAN ? MAX_SPAN : (int64_t)interval);
    self->limit = limit > (double)MAX_SPAN ? MAX_SPAN : (int64_t)limit;
    self->rate = rate;
    self->burst = burst;
    self->retry_after = (long)ceil(1.0 / rate);
    if (self->retry_after < 1)
        self->retry_after = 1;
    return 0;
}

static int bucket_init(SharedBucket *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"region", "offset", "slots", "seed0", "seed1", "rate", "burst", NULL};
    PyObject *region;
    Py_ssize_t offset, slots;
    unsigned long long seed0, seed1;
    double rate, burst;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OnnKKdd:SharedBucket", kwlist, &region, &offset,
                                     &slots, &seed0, &seed1, &rate, &burst))
        return -1;
    if (slots < WINDOW || (slots & (slots - 1)) != 0) {
        PyErr_SetString(PyExc_ValueError, "slots must be a power of 2 >= 8");
        return -1;
    }
    if (set_limits(self, rate, burst) < 0)
        return -1;
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    if (PyObject_GetBuffer(region, &self->view, PyBUF_WRITABLE) < 0)
        return -1;
    if (offset < 0 || offset % 64 != 0
        || slots > (self->view.len - offset) / (Py_ssize_t)sizeof(Slot)) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "the table does not fit the region at that offset");
        return -1;
    }
    self->slots = (Slot *)((char *)self->view.buf + offset);
    self->mask = (uint64_t)slots - 1;
    self->k0 = seed0;
    self->k1 = seed1;
    return 0;
}

static void bucket_dealloc(SharedBucket *self)
{
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int ready(SharedBucket *self)
{
    if (self->view.obj == NULL) {
        PyErr_SetString(PyExc_ValueError, "SharedBucket not initialized or released");
        return 0;
    }
    return 1;
}

PyDoc_STRVAR(allow_doc, "allow(source, now) -> bool: take one token for source at now "
                        "(seconds, monotonic); False when its bucket is empty.");

static PyObject *bucket_allow(SharedBucket *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t key;
    double now;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "allow(source, now)");
        return NULL;
    }
    if (!ready(self))
        return NULL;
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return NULL;
    key = source_key(self, args[0]);
    if (key == 0)
        return NULL;
    if (take(self, key, to_ns(now)))
        Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

PyDoc_STRVAR(available_doc, "available(source, now) -> float: tokens source holds at now, "
                            "without taking one.");

static PyObject *bucket_available(SharedBucket *self, PyObject *const *args, Py_ssize_t nargs)
{
    uint64_t key;
    double now_s, tokens;
    int64_t now, tat;
    Slot *slot;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "available(source, now)");
        return NULL;
    }
    if (!ready(self))
        return NULL;
    now_s = PyFloat_AsDouble(args[1]);
    if (now_s == -1.0 && PyErr_Occurred())
        return NULL;
    key = source_key(self, args[0]);
    if (key == 0)
        return NULL;
    slot = find(self, key);
    if (slot == NULL)
        return PyFloat_FromDouble(self->burst);
    now = to_ns(now_s);
    tat = __atomic_load_n(&slot->tat, __ATOMIC_ACQUIRE);
    tokens = (double)(self->limit - ((tat > now ? tat : now) - now)) / (double)self->interval;
    if (tokens < 0)
        tokens = 0;
    if (tokens > self->burst)
        tokens = self->burst;
    return PyFloat_FromDouble(tokens);
}

PyDoc_STRVAR(retune_doc, "retune(rate, burst): new limits for every source; each keeps its "
                         "debt, in time.");

static PyObject *bucket_retune(SharedBucket *self, PyObject *args)
{
    double rate, burst;
    if (!PyArg_ParseTuple(args, "dd:retune", &rate, &burst))
        return NULL;
    if (set_limits(self, rate, burst) < 0)
        return NULL;
    Py_RETURN_NONE;
}

PyDoc_STRVAR(release_doc, "release(): drop the region's buffer (before it is unmapped).");

static PyObject *bucket_release(SharedBucket *self, PyObject *unused)
{
    (void)unused;
    if (self->view.obj != NULL)
        PyBuffer_Release(&self->view);
    self->slots = NULL;
    Py_RETURN_NONE;
}

static PyObject *get_rate(SharedBucket *self, void *c) { (void)c; return PyFloat_FromDouble(self->rate); }
static PyObject *get_burst(SharedBucket *self, void *c) { (void)c; return PyFloat_FromDouble(self->burst); }
static PyObject *get_retry_after(SharedBucket *self, void *c)
{
    (void)c;
    return PyLong_FromLong(self->retry_after);
}

static PyMethodDef bucket_methods[] = {
    {"allow", (PyCFunction)(void (*)(void))bucket_allow, METH_FASTCALL, allow_doc},
    {"available", (PyCFunction)(void (*)(void))bucket_available, METH_FASTCALL, available_doc},
    {"retune", (PyCFunction)bucket_retune, METH_VARARGS, retune_doc},
    {"release", (PyCFunction)bucket_release, METH_NOARGS, release_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef bucket_getset[] = {
    {"rate", (getter)get_rate, NULL, "requests per second per source", NULL},
    {"burst", (getter)get_burst, NULL, "tokens a source may spend at once", NULL},
    {"retry_after", (getter)get_retry_after, NULL, "seconds until a refused source has a token",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject SharedBucketType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cnamd._buckets.SharedBucket",
    .tp_basicsize = sizeof(SharedBucket),
    .tp_dealloc = (destructor)bucket_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Per-source token buckets (GCRA) in a table shared by processes.",
    .tp_methods = bucket_methods,
    .tp_getset = bucket_getset,
    .tp_init = (initproc)bucket_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd._buckets", "Per-source rate limits shared by processes.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__buckets(void)
{
    PyObject *m;
    if (PyType_Ready(&SharedBucketType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&SharedBucketType);
    if (PyModule_AddObject(m, "SharedBucket", (PyObject *)&SharedBucketType) < 0) {
        Py_DECREF(&SharedBucketType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
