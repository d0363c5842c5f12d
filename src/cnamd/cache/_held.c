/* Held upstream answers in one mapped section: an exact-number hash table in C.
 *
 * Why: every worker held every upstream answer in a dict of its own (~160 B per
 * answer per process, bench/README.md), so 1M answers cost ~170 MB in each
 * worker and a worker start read them all from PostgreSQL. The loader now
 * writes them once per host (cache/held_file.py) and every process maps the
 * file: read-only pages shared by all. A dip from the upstream scope probes this
 * table in one C call, as fast as the dict probe it replaces.
 *
 * Every number is "+" and 1-15 ASCII digits, so it packs exactly (no hash to
 * trust) into one uint64: length << 50 | value, _probe.h's pack_number(), as the global index packs keys.
 * Zero marks an empty slot. Linear probing over a table at most 3/4 full.
 *
 * Section layout (native little-endian, as the snapshot files require):
 *     0   magic     uint32  "CNUP"
 *     4   version   uint32  2
 *     8   capacity  uint64  slots (< 2^32)
 *     16  count     uint64  numbers held
 *     24  names     uint64  bytes of the name blob
 *     32  slots     Slot[capacity]    each 24 bytes:
 *                     key      uint64  the packed number; 0: an empty slot
 *                     expires  double  epoch seconds; +inf: pinned
 *                     ref      uint64  name offset << 16 | length; all ones: no name
 *     ..  sources   uint32[capacity]  index into the file's list of source names
 *     ..  names     bytes             UTF-8 names
 * A slot's three fields side by side: a dip's probe reads one cache line (two at
 * most) before the name, where version 1's three arrays cost three misses.
 *
 * build(rows) -> bytes        the section, from (number, name|None, source index, expires)
 *                             rows; ValueError for a number given twice or not "+digits"
 * Table(section)              checks the header and the size
 * Table.get(number, now) -> (name|None, source index, expires) | None
 *                             the answer held for exactly `number`, None if none or
 *                             expired (expires <= now)
 * Table.name(number, now) -> name | "" | None
 *                             the same answer's name alone ("" for a held negative
 *                             answer): a dip's probe, without a tuple and a float
 * Table.release()             drops the buffer (before the file unmaps)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_probe.h"

#define MAGIC 0x50554e43u /* "CNUP" read as little-endian uint32 */
#define VERSION 2u
#define HEADER 32
#define LENGTH_BITS 16
#define NO_NAME UINT64_MAX
#define SLOT_BYTES 28 /* a Slot 24 + its source 4 */

typedef struct {
    uint64_t key;
    double expires;
    uint64_t ref;
} Slot;
_Static_assert(sizeof(Slot) == 24, "the section layout above: a Slot is 24 bytes");

/* pack_number() of a whole str; 0 for anything else. */
static uint64_t pack(PyObject *number)
{
    return PyUnicode_Check(number) ? pack_number(number, 0) : 0;
}

PyDoc_STRVAR(packable_doc,
"packable(number) -> bool\n\n"
"Whether `number` is '+' and 1-15 ASCII digits: a number build() can hold.");

static PyObject *packable(PyObject *self, PyObject *number)
{
    (void)self;
    return PyBool_FromLong(pack(number) != 0);
}

PyDoc_STRVAR(build_doc,
"build(rows) -> bytes\n\n"
"The section over `rows`, a sequence of (number, name or None, source index,\n"
"expires) tuples. ValueError for a number given twice or that is not '+' and\n"
"1-15 digits (packable() tells), OverflowError past 2^31 rows.");

static PyObject *build(PyObject *self, PyObject *args)
{
    PyObject *rows, *seq, *out = NULL, **texts = NULL;
    Py_ssize_t n, i;
    uint64_t capacity, blob = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "O:build", &rows))
        return NULL;
    seq = PySequence_Fast(rows, "rows must be a sequence of tuples");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if ((uint64_t)n >= UINT32_MAX / 2) {
        PyErr_SetString(PyExc_OverflowError, "too many rows for one table");
        goto done;
    }
    texts = PyMem_Calloc((size_t)n + 1, sizeof(PyObject *));
    if (texts == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* First pass: check the rows, encode the names, size the blob. */
    for (i = 0; i < n; i++) {
        PyObject *row = PySequence_Fast_GET_ITEM(seq, i), *name;
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 4) {
            PyErr_SetString(PyExc_TypeError, "rows must be (number, name, source, expires) tuples");
            goto done;
        }
        name = PyTuple_GET_ITEM(row, 1);
        if (name != Py_None) {
            texts[i] = PyUnicode_AsUTF8String(name);
            if (texts[i] == NULL)
                goto done;
            if (PyBytes_GET_SIZE(texts[i]) >= 0xffff) {
                PyErr_SetString(PyExc_ValueError, "a name of 64 KiB or more");
                goto done;
            }
            blob += (uint64_t)PyBytes_GET_SIZE(texts[i]);
        }
    }
    if (blob >= (1ULL << (64 - LENGTH_BITS - 1))) {
        PyErr_SetString(PyExc_OverflowError, "names too large for one table");
        goto done;
    }
    capacity = (uint64_t)n + (uint64_t)n / 3 + 8;
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)(HEADER + SLOT_BYTES * capacity + blob));
    if (out == NULL)
        goto done;
    {
        char *raw = PyBytes_AS_STRING(out);
        Slot *slots = (Slot *)(raw + HEADER);
        uint32_t *sources = (uint32_t *)(raw + HEADER + sizeof(Slot) * capacity);
        char *names = raw + HEADER + SLOT_BYTES * capacity;
        uint64_t at = 0, count = (uint64_t)n;
        uint32_t head[2] = {MAGIC, VERSION};
        memset(raw, 0, HEADER + SLOT_BYTES * capacity);
        memcpy(raw, head, 8);
        memcpy(raw + 8, &capacity, 8);
        memcpy(raw + 16, &count, 8);
        memcpy(raw + 24, &blob, 8);
        for (i = 0; i < n; i++) {
            PyObject *row = PySequence_Fast_GET_ITEM(seq, i);
            uint64_t packed = pack(PyTuple_GET_ITEM(row, 0)), slot;
            unsigned long source = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(row, 2));
            double until = PyFloat_AsDouble(PyTuple_GET_ITEM(row, 3));
            if ((source == (unsigned long)-1 || until == -1.0) && PyErr_Occurred())
                goto fail;
            if (packed == 0) {
                PyErr_Format(PyExc_ValueError, "number %R is not '+' and 1-15 digits",
                             PyTuple_GET_ITEM(row, 0));
                goto fail;
            }
            if (source >= UINT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "source index too large");
                goto fail;
            }
            for (slot = first_slot(packed, capacity); slots[slot].key;
                 slot = next_slot(slot, capacity)) {
                if (slots[slot].key == packed) {
                    PyErr_Format(PyExc_ValueError, "number %R given twice", PyTuple_GET_ITEM(row, 0));
                    goto fail;
                }
            }
            slots[slot].key = packed;
            slots[slot].expires = until;
            sources[slot] = (uint32_t)source;
            if (texts[i] == NULL) {
                slots[slot].ref = NO_NAME;
            } else {
                uint64_t len = (uint64_t)PyBytes_GET_SIZE(texts[i]);
                memcpy(names + at, PyBytes_AS_STRING(texts[i]), (size_t)len);
                slots[slot].ref = at << LENGTH_BITS | len;
                at += len;
            }
        }
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    if (texts != NULL) {
        for (i = 0; i < n; i++)
            Py_XDECREF(texts[i]);
        PyMem_Free(texts);
    }
    Py_DECREF(seq);
    return out;
}

typedef struct {
    PyObject_HEAD
    int held;
    Py_buffer section;
    const Slot *slots;
    const uint32_t *sources;
    const char *names;
    uint64_t capacity, count, blob;
} Table;

static void table_release_buffer(Table *t)
{
    if (t->held) {
        t->held = 0;
        PyBuffer_Release(&t->section);
    }
}

static int table_init(Table *t, PyObject *args, PyObject *kwds)
{
    PyObject *section;
    static char *kwlist[] = {"section", NULL};
    uint32_t head[2];
    const char *raw;
    Py_ssize_t size;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O:Table", kwlist, &section))
        return -1;
    table_release_buffer(t);
    if (PyObject_GetBuffer(section, &t->section, PyBUF_SIMPLE) < 0)
        return -1;
    t->held = 1;
    raw = t->section.buf;
    size = t->section.len;
    if (size < HEADER || (uintptr_t)raw % 8 != 0) {
        PyErr_SetString(PyExc_ValueError, "upstream table unreadable: short or misaligned");
        goto fail;
    }
    memcpy(head, raw, 8);
    memcpy(&t->capacity, raw + 8, 8);
    memcpy(&t->count, raw + 16, 8);
    memcpy(&t->blob, raw + 24, 8);
    if (head[0] != MAGIC || head[1] != VERSION) {
        PyErr_SetString(PyExc_ValueError, "upstream table unreadable: unknown magic or version");
        goto fail;
    }
    if (t->capacity <= t->count || t->capacity >= UINT32_MAX || t->blob > (uint64_t)size ||
        (uint64_t)size != HEADER + SLOT_BYTES * t->capacity + t->blob) {
        PyErr_SetString(PyExc_ValueError, "upstream table unreadable: size disagrees with header");
        goto fail;
    }
    t->slots = (const Slot *)(raw + HEADER);
    t->sources = (const uint32_t *)(raw + HEADER + sizeof(Slot) * t->capacity);
    t->names = raw + HEADER + SLOT_BYTES * t->capacity;
    return 0;
fail:
    table_release_buffer(t);
    return -1;
}

static void table_dealloc(Table *t)
{
    table_release_buffer(t);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* The slot holding `packed`, or -1. */
static int64_t find(const Table *t, uint64_t packed)
{
    uint64_t slot, probes;
    for (slot = first_slot(packed, t->capacity), probes = 0;
         probes < t->capacity && t->slots[slot].key; slot = next_slot(slot, t->capacity), probes++) {
        if (t->slots[slot].key == packed)
            return (int64_t)slot;
    }
    return -1;
}

/* The held name of slot `slot` as a new str, or "" when the answer is negative. */
static PyObject *slot_name(Table *t, int64_t slot)
{
    uint64_t ref = t->slots[slot].ref;
    if (ref == NO_NAME)
        return PyUnicode_New(0, 0);
    if ((ref >> LENGTH_BITS) + (ref & 0xffff) > t->blob) {
        PyErr_SetString(PyExc_ValueError, "upstream table unreadable: a name past the blob");
        return NULL;
    }
    return PyUnicode_DecodeUTF8(t->names + (ref >> LENGTH_BITS), (Py_ssize_t)(ref & 0xffff), NULL);
}

#define PROBE_ERROR (-2)

/* get()'s and name()'s common part: the live slot held for args (number, now),
 * -1 when none is, PROBE_ERROR with an exception set. */
static int64_t live_slot(Table *t, PyObject *const *args, Py_ssize_t nargs, const char *usage)
{
    uint64_t packed;
    int64_t slot;
    double now;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, usage);
        return PROBE_ERROR;
    }
    if (!t->held) {
        PyErr_SetString(PyExc_ValueError, "table released");
        return PROBE_ERROR;
    }
    now = PyFloat_AsDouble(args[1]);
    if (now == -1.0 && PyErr_Occurred())
        return PROBE_ERROR;
    packed = pack(args[0]);
    if (packed == 0)
        return -1;
    slot = find(t, packed);
    if (slot < 0 || t->slots[slot].expires <= now)
        return -1;
    return slot;
}

PyDoc_STRVAR(get_doc,
"get(number, now) -> (name | None, source index, expires) | None\n\n"
"The answer held for exactly `number`; None if there is none or it expired\n"
"(expires <= now).");

static PyObject *table_get(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *name;
    int64_t slot = live_slot(t, args, nargs, "get(number, now)");
    if (slot == PROBE_ERROR)
        return NULL;
    if (slot < 0)
        Py_RETURN_NONE;
    if (t->slots[slot].ref == NO_NAME) {
        name = Py_None;
        Py_INCREF(name);
    } else if ((name = slot_name(t, slot)) == NULL) {
        return NULL;
    }
    return Py_BuildValue("(NId)", name, (unsigned int)t->sources[slot], t->slots[slot].expires);
}

PyDoc_STRVAR(name_doc,
"name(number, now) -> str | None\n\n"
"The name held for exactly `number`, \"\" when the answer held is that it has\n"
"none, None when nothing live is held (never asked, or expired).");

static PyObject *table_name(Table *t, PyObject *const *args, Py_ssize_t nargs)
{
    int64_t slot = live_slot(t, args, nargs, "name(number, now)");
    if (slot == PROBE_ERROR)
        return NULL;
    if (slot < 0)
        Py_RETURN_NONE;
    return slot_name(t, slot);
}

PyDoc_STRVAR(holds_doc,
"holds(number) -> bool\n\n"
"Whether `number` has a row in the table, expired or not.");

static PyObject *table_holds(Table *t, PyObject *number)
{
    uint64_t packed;
    if (!t->held) {
        PyErr_SetString(PyExc_ValueError, "table released");
        return NULL;
    }
    packed = pack(number);
    return PyBool_FromLong(packed != 0 && find(t, packed) >= 0);
}

static PyObject *table_release(Table *t, PyObject *unused)
{
    (void)unused;
    table_release_buffer(t);
    Py_RETURN_NONE;
}

static PyObject *table_count(Table *t, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLongLong(t->held ? t->count : 0);
}

static PyMethodDef table_methods[] = {
    {"get", (PyCFunction)(void (*)(void))table_get, METH_FASTCALL, get_doc},
    {"name", (PyCFunction)(void (*)(void))table_name, METH_FASTCALL, name_doc},
    {"holds", (PyCFunction)table_holds, METH_O, holds_doc},
    {"release", (PyCFunction)table_release, METH_NOARGS, "Drop the buffer; get() then raises."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef table_getset[] = {
    {"count", (getter)table_count, NULL, "Numbers in the table (0 once released).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject TableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cnamd.cache._held.Table",
    .tp_basicsize = sizeof(Table),
    .tp_dealloc = (destructor)table_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Held upstream answers over a mapped (or built) section.",
    .tp_methods = table_methods,
    .tp_getset = table_getset,
    .tp_init = (initproc)table_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, build_doc},
    {"packable", packable, METH_O, packable_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd.cache._held", "Held upstream answers' hash table.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__held(void)
{
    PyObject *m;
    if (PyType_Ready(&TableType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&TableType);
    if (PyModule_AddObject(m, "Table", (PyObject *)&TableType) < 0) {
        Py_DECREF(&TableType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
