/* The global directory's hash index: longest-prefix match in one C call.
 *
 * Why, next to the marisa trie that already holds every key: a SIP dip asks
 * the global directory for nearly every call, and asking the trie through its
 * Python API costs a generator, a (key, id) tuple and a key string per stored
 * prefix, then a slice and a decode of the name in Python. Measured in the
 * daemon (bench/README.md) that path was ~12 us of a ~40 us dip, against
 * ~1 us for the trie walk itself. Here one call probes a hash table of the
 * namespace's keys, longest length first, and returns the decoded name.
 * The trie stays the source of truth (iteration, overlay merges, private
 * namespaces); this index is derived from it and saved beside it in the
 * snapshot, so forked workers share one mapped copy.
 *
 * Every key of the indexed namespace is "+" and 1-15 ASCII digits, so a key
 * packs exactly (no hash to trust) into one uint64: length << 50 | value
 * (10^15 < 2^50; the length keeps leading zeros apart). Zero marks an empty
 * slot. Linear probing over a table at most 3/4 full, with the slot taken
 * from the high bits of a 64-bit mix of the packed key.
 *
 * Section layout (native little-endian, as the snapshot requires):
 *     0   magic     uint32  "CNIX"
 *     4   version   uint32  1
 *     8   capacity  uint64  slots (< 2^32)
 *     16  count     uint64  keys
 *     24  lengths   uint64  bit n set if some key has n digits
 *     32  keys      uint64[capacity]
 *     ..  ids       uint32[capacity]  the trie's key id of each key
 *
 * build(items, namespace) -> bytes     the section, from the trie's (key, id) items
 * Index(section, name_refs, names)     checks the section's header and size
 * Index.match(number) -> (name, n) | None   name of the longest key prefixing
 *                                      number, and that key's length in characters
 * Index.release()                      drops the buffers (before the snapshot unmaps)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_index_layout.h"

PyDoc_STRVAR(build_doc,
"build(items, namespace) -> bytes\n\n"
"The index section over every key of `items` ((key, key id) pairs, as\n"
"marisa_trie.Trie.items() gives them) that is `namespace` followed by '+' and\n"
"1-15 digits. ValueError for such a key twice, OverflowError past 2^32 - 1\n"
"keys or key ids.");

static PyObject *build(PyObject *self, PyObject *args)
{
    PyObject *items, *namespace, *seq, *out = NULL;
    Py_ssize_t n, i, cut;
    uint64_t count = 0, capacity = 0, lengths = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "OU:build", &items, &namespace))
        return NULL;
    seq = PySequence_Fast(items, "items must be a sequence of (key, id) pairs");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    cut = PyUnicode_GET_LENGTH(namespace);
    /* Two passes: count the namespace's keys to size the table, then fill it. */
    for (int pass = 0; pass < 2; pass++) {
        uint64_t *keys = NULL;
        uint32_t *ids = NULL;
        if (pass == 1) {
            if (count >= UINT32_MAX / 2) {
                PyErr_SetString(PyExc_OverflowError, "too many keys for one index");
                goto done;
            }
            capacity = count + count / 3 + 8;
            out = PyBytes_FromStringAndSize(NULL, HEADER + 12 * (Py_ssize_t)capacity);
            if (out == NULL)
                goto done;
            char *raw = PyBytes_AS_STRING(out);
            memset(raw, 0, (size_t)PyBytes_GET_SIZE(out));
            uint32_t head[2] = {MAGIC, VERSION};
            memcpy(raw, head, 8);
            memcpy(raw + 8, &capacity, 8);
            memcpy(raw + 16, &count, 8);
            keys = (uint64_t *)(raw + HEADER);
            ids = (uint32_t *)(raw + HEADER + 8 * capacity);
        }
        for (i = 0; i < n; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i), *key;
            uint64_t packed, slot;
            unsigned long long id;
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_Check(key = PyTuple_GET_ITEM(pair, 0))) {
                PyErr_SetString(PyExc_TypeError, "items must be (str, int) pairs");
                goto done;
            }
            if (PyUnicode_GET_LENGTH(key) <= cut ||
                PyUnicode_Tailmatch(key, namespace, 0, cut, -1) != 1 ||
                (packed = pack_number(key, cut)) == 0)
                continue;
            if (pass == 0) {
                count++;
                lengths |= 1ULL << (packed >> VALUE_BITS);
                continue;
            }
            id = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(pair, 1));
            if (id == (unsigned long long)-1 && PyErr_Occurred())
                goto done;
            if (id >= UINT32_MAX) {
                PyErr_SetString(PyExc_OverflowError, "key id too large for the index");
                goto done;
            }
            for (slot = first_slot(packed, capacity); keys[slot]; slot = next_slot(slot, capacity)) {
                if (keys[slot] == packed) {
                    PyErr_Format(PyExc_ValueError, "key %R given twice", key);
                    goto done;
                }
            }
            keys[slot] = packed;
            ids[slot] = (uint32_t)id;
        }
        if (pass == 1)
            memcpy(PyBytes_AS_STRING(out) + 24, &lengths, 8);
    }
    Py_DECREF(seq);
    return out;
done:
    Py_DECREF(seq);
    Py_XDECREF(out);
    return NULL;
}

typedef struct {
    PyObject_HEAD
    int held;
    Py_buffer section, refs, names;
    const uint64_t *keys, *name_refs;
    const uint32_t *ids;
    uint64_t capacity, lengths, nrefs;
} Index;

static void index_release_buffers(Index *ix)
{
    if (ix->held) {
        ix->held = 0;
        PyBuffer_Release(&ix->section);
        PyBuffer_Release(&ix->refs);
        PyBuffer_Release(&ix->names);
    }
}

static int check(int ok, const char *what)
{
    if (!ok)
        PyErr_Format(PyExc_ValueError, "index section unreadable: %s", what);
    return ok;
}

static int index_init(Index *ix, PyObject *args, PyObject *kwds)
{
    PyObject *section, *refs, *names;
    static char *kwlist[] = {"section", "name_refs", "names", NULL};
    uint32_t head[2];
    uint64_t count;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO:Index", kwlist, &section, &refs, &names))
        return -1;
    index_release_buffers(ix);
    if (PyObject_GetBuffer(section, &ix->section, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(refs, &ix->refs, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&ix->section);
        return -1;
    }
    if (PyObject_GetBuffer(names, &ix->names, PyBUF_SIMPLE) < 0) {
        PyBuffer_Release(&ix->section);
        PyBuffer_Release(&ix->refs);
        return -1;
    }
    ix->held = 1;
    const char *raw = ix->section.buf;
    Py_ssize_t size = ix->section.len;
    if (!check(size >= HEADER, "shorter than its header"))
        goto fail;
    memcpy(head, raw, 8);
    memcpy(&ix->capacity, raw + 8, 8);
    memcpy(&count, raw + 16, 8);
    memcpy(&ix->lengths, raw + 24, 8);
    if (!check(head[0] == MAGIC && head[1] == VERSION, "unknown magic or version") ||
        !check(ix->capacity > count && ix->capacity < UINT32_MAX, "capacity out of range") ||
        !check((uint64_t)size == HEADER + 12 * ix->capacity, "size disagrees with capacity") ||
        !check(ix->refs.len % 8 == 0 && (ix->refs.len == 0 || (uintptr_t)ix->refs.buf % 8 == 0) &&
                   (uintptr_t)raw % 8 == 0, "misaligned arrays"))
        goto fail;
    ix->keys = (const uint64_t *)(raw + HEADER);
    ix->ids = (const uint32_t *)(raw + HEADER + 8 * ix->capacity);
    ix->name_refs = ix->refs.buf;
    ix->nrefs = (uint64_t)ix->refs.len / 8;
    /* No pass over every slot here: at 10M keys it took 0.25 s, on the event loop of every
     * worker mapping a new snapshot. The file's CRC guards the content; match() checks
     * each reference it follows, so damage is an error, never a read out of bounds. */
    return 0;
fail:
    index_release_buffers(ix);
    return -1;
}

static void index_dealloc(Index *ix)
{
    index_release_buffers(ix);
    Py_TYPE(ix)->tp_free((PyObject *)ix);
}

PyDoc_STRVAR(match_doc,
"match(number) -> (name, length) | None\n\n"
"The name of the longest key that prefixes `number`, and that key's length in\n"
"characters ('+' included); None if no key does. Keys are '+' and digits, so\n"
"only the run of ASCII digits after a leading '+' can match.");

static PyObject *index_match(Index *ix, PyObject *number)
{
    uint64_t prefix[MAX_DIGITS + 1], value = 0;
    Py_ssize_t n, digits = 0;
    int kind;
    const void *data;
    if (!ix->held) {
        PyErr_SetString(PyExc_ValueError, "index released");
        return NULL;
    }
    if (!PyUnicode_Check(number)) {
        PyErr_SetString(PyExc_TypeError, "number must be a str");
        return NULL;
    }
    n = PyUnicode_GET_LENGTH(number);
    kind = PyUnicode_KIND(number);
    data = PyUnicode_DATA(number);
    if (n < 2 || PyUnicode_READ(kind, data, 0) != '+')
        Py_RETURN_NONE;
    while (digits < MAX_DIGITS && digits + 1 < n) {
        Py_UCS4 c = PyUnicode_READ(kind, data, digits + 1);
        if (c < '0' || c > '9')
            break;
        value = value * 10 + (c - '0');
        prefix[++digits] = value;
    }
    for (; digits > 0; digits--) {
        uint64_t packed, slot, probes;
        if (!(ix->lengths >> digits & 1))
            continue;
        packed = (uint64_t)digits << VALUE_BITS | prefix[digits];
        /* At most `capacity` probes: a table with no empty slot (damage) cannot loop for ever. */
        for (slot = first_slot(packed, ix->capacity), probes = 0; probes < ix->capacity && ix->keys[slot];
             slot = next_slot(slot, ix->capacity), probes++) {
            if (ix->keys[slot] == packed) {
                uint64_t id = ix->ids[slot], ref = id < ix->nrefs ? ix->name_refs[id] : UINT64_MAX;
                const char *name;
                if (id >= ix->nrefs || (ref >> LENGTH_BITS) + (ref & 0xffff) > (uint64_t)ix->names.len) {
                    PyErr_SetString(PyExc_ValueError, "index section unreadable: a reference past its arrays");
                    return NULL;
                }
                name = (const char *)ix->names.buf + (ref >> LENGTH_BITS);
                PyObject *text = PyUnicode_DecodeUTF8(name, (Py_ssize_t)(ref & 0xffff), NULL);
                PyObject *length = PyLong_FromSsize_t(digits + 1), *pair = PyTuple_New(2);
                if (text == NULL || length == NULL || pair == NULL) {
                    Py_XDECREF(text);
                    Py_XDECREF(length);
                    Py_XDECREF(pair);
                    return NULL;
                }
                PyTuple_SET_ITEM(pair, 0, text);
                PyTuple_SET_ITEM(pair, 1, length);
                return pair;
            }
        }
    }
    Py_RETURN_NONE;
}

static PyObject *index_release(Index *ix, PyObject *unused)
{
    (void)unused;
    index_release_buffers(ix);
    Py_RETURN_NONE;
}

static PyObject *index_len(Index *ix, void *closure)
{
    uint64_t count;
    (void)closure;
    if (!ix->held)
        return PyLong_FromLong(0);
    memcpy(&count, (const char *)ix->section.buf + 16, 8);
    return PyLong_FromUnsignedLongLong(count);
}

static PyMethodDef index_methods[] = {
    {"match", (PyCFunction)index_match, METH_O, match_doc},
    {"release", (PyCFunction)index_release, METH_NOARGS, "Drop the buffers; match() then raises."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef index_getset[] = {
    {"count", (getter)index_len, NULL, "Keys in the index (0 once released).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject IndexType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cnamd.cache._index.Index",
    .tp_basicsize = sizeof(Index),
    .tp_dealloc = (destructor)index_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A namespace's hash index over mapped (or built) buffers.",
    .tp_methods = index_methods,
    .tp_getset = index_getset,
    .tp_init = (initproc)index_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef methods[] = {
    {"build", build, METH_VARARGS, build_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd.cache._index", "The global directory's hash index.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__index(void)
{
    PyObject *m;
    if (PyType_Ready(&IndexType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&IndexType);
    if (PyModule_AddObject(m, "Index", (PyObject *)&IndexType) < 0) {
        Py_DECREF(&IndexType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
