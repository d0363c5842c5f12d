/* The full load's per-entry passes in C: rows in, a cache base's arrays out.
 *
 * Why: built in Python, a full load passed every entry through the interpreter
 * several times (asyncpg record -> tuple -> builder dict -> name dedup -> id join
 * -> index -> head filter marks) at 1-2 us per entry per pass: 123 s at 10M
 * names (bench/README.md). Here the rows are parsed straight from PostgreSQL's
 * binary COPY stream into flat arrays, and the passes after the trie is built
 * (name references, names blob, hash index, head filter) are loops over those
 * arrays. Only the marisa trie itself is still built through its Python API:
 * keys() hands it the keys and finish() joins its (key, id) items back to rows.
 *
 * The output is the one cache/trie.py's Python build gives for the same entries
 * added in the same order, byte for byte: the names blob holds each distinct
 * name once in order of its first row, a key added again keeps its first row
 * and takes the later name, the index is filled in the trie's items order, and
 * the head filter marks are the same numbers (cache/trie.py says what they are).
 *
 * A row's namespaced key is scope letter, owner in decimal, then '+' and 1-15
 * digits ("u42+4922166"); the global directory is "d0" (cache/trie.py).
 *
 * Builder()
 *   .add(full, name)        one entry from Python; a later add of a key wins
 *   .feed(chunk)            part of a COPY ... TO STDOUT (FORMAT binary) stream of
 *                           (scope text, owner_id int8, key text, name text) rows
 *   .complete()             False while a COPY stream is begun and its trailer unread
 *   .keys() -> list[str]    the distinct keys, first-added first
 *   .finish(items, namespace) -> (name_refs, names, index, counts, marks)
 *                           from the trie's (key, id) items: name_refs[id], the
 *                           names blob, the `namespace` hash index section (the
 *                           layout of _index.c), entries per scope letter "uged"
 *                           and the number of distinct head filter marks
 *   .head_filter(modulus) -> bytes   the head filter over those marks
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#include "_index_layout.h"

#define MAX_KEY (1 + 20 + 1 + MAX_DIGITS) /* letter, owner, '+', digits */
#define MAX_NAME 0xffff                   /* a name reference's 16 length bits */
/* the head filter (cache/trie.py): owner * STRIDE + 4 * first six digits + scope */
#define HEAD_DIGITS 6
#define STRIDE 4000003ULL

static const char TAGS[] = "uged";
static const char COPY_SIGNATURE[11] = "PGCOPY\n\377\r\n";

typedef unsigned __int128 u128;

typedef struct {
    char *data;
    size_t len, cap;
} Arena;

static int arena_put(Arena *a, const char *bytes, size_t n, uint64_t *at)
{
    if (a->len + n > a->cap) {
        size_t cap = a->cap ? a->cap : 1 << 16;
        while (cap < a->len + n)
            cap *= 2;
        char *grown = PyMem_RawRealloc(a->data, cap);
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        a->data = grown;
        a->cap = cap;
    }
    memcpy(a->data + a->len, bytes, n);
    *at = a->len;
    a->len += n;
    return 0;
}

typedef struct {
    uint64_t key;  /* offset << 8 | length in the key arena */
    uint64_t name; /* offset << 16 | length in the name arena */
} Row;

typedef struct {
    PyObject_HEAD
    Arena keys, names, carry;
    Row *rows;
    Py_ssize_t nrows, rows_cap;
    uint64_t *slots; /* key hash table (slot_entry) */
    uint64_t nslots;
    int header_read, trailer_read;
    u128 *marks; /* head filter marks set (finish): mark + 1, 0 empty */
    uint64_t nmarks_slots, nmarks;
} Builder;

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ n, word;
    while (n >= 8) {
        memcpy(&word, s, 8);
        h = mix(h ^ word);
        s += 8;
        n -= 8;
    }
    word = 0;
    memcpy(&word, s, n);
    return mix(h ^ word);
}

static inline const char *row_key(const Builder *b, const Row *r, size_t *n)
{
    *n = r->key & 0xff;
    return b->keys.data + (r->key >> 8);
}

/* A key table slot: the key hash's high 32 bits (a fingerprint: probes past other
 * keys without reading them) over row + 1; 0 is an empty slot. */
static inline uint64_t slot_entry(uint64_t hash, uint64_t row)
{
    return (hash >> 32) << 32 | (row + 1);
}

static inline int slot_may_hold(uint64_t entry, uint64_t hash)
{
    return entry >> 32 == hash >> 32;
}

/* The slot holding `key` (whose hash is `hash`), or the empty slot where it would go. */
static uint64_t find_slot(const Builder *b, const char *key, size_t n, uint64_t hash)
{
    uint64_t mask = b->nslots - 1, slot = hash & mask;
    for (;; slot = (slot + 1) & mask) {
        uint64_t entry = b->slots[slot];
        size_t len;
        const char *other;
        if (entry == 0)
            return slot;
        if (!slot_may_hold(entry, hash))
            continue;
        other = row_key(b, &b->rows[(uint32_t)entry - 1], &len);
        if (len == n && memcmp(other, key, n) == 0)
            return slot;
    }
}

static int grow_slots(Builder *b)
{
    uint64_t size = b->nslots ? b->nslots * 2 : 1 << 12, mask = size - 1;
    uint64_t *slots = PyMem_RawCalloc(size, sizeof(uint64_t));
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < b->nrows; i++) {
        size_t n;
        const char *key = row_key(b, &b->rows[i], &n);
        uint64_t hash = hash_bytes(key, n), slot = hash & mask;
        while (slots[slot])
            slot = (slot + 1) & mask;
        slots[slot] = slot_entry(hash, (uint64_t)i);
    }
    PyMem_RawFree(b->slots);
    b->slots = slots;
    b->nslots = size;
    return 0;
}

/* Record one entry whose namespaced key is already checked; a key seen before takes the new name. */
static int put_row(Builder *b, const char *key, size_t key_len, const char *name, size_t name_len)
{
    uint64_t slot, name_at, key_at, hash;
    if ((uint64_t)(b->nrows + 1) * 2 > b->nslots && grow_slots(b) < 0)
        return -1;
    if (b->nrows >= (Py_ssize_t)UINT32_MAX - 1) {
        PyErr_SetString(PyExc_OverflowError, "too many entries for one cache");
        return -1;
    }
    if (arena_put(&b->names, name, name_len, &name_at) < 0)
        return -1;
    hash = hash_bytes(key, key_len);
    slot = find_slot(b, key, key_len, hash);
    if (b->slots[slot]) {
        b->rows[(uint32_t)b->slots[slot] - 1].name = name_at << LENGTH_BITS | name_len;
        return 0;
    }
    if (b->nrows == b->rows_cap) {
        Py_ssize_t cap = b->rows_cap ? b->rows_cap * 2 : 1024;
        Row *rows = PyMem_RawRealloc(b->rows, (size_t)cap * sizeof(Row));
        if (rows == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        b->rows = rows;
        b->rows_cap = cap;
    }
    if (arena_put(&b->keys, key, key_len, &key_at) < 0)
        return -1;
    b->rows[b->nrows].key = key_at << 8 | key_len;
    b->rows[b->nrows].name = name_at << LENGTH_BITS | name_len;
    b->slots[slot] = slot_entry(hash, (uint64_t)b->nrows++);
    return 0;
}

/* 1 if `s` is a namespaced key: a letter of TAGS, an owner (0 for 'd'), '+', 1-15 digits. */
static int valid_key(const char *s, size_t n)
{
    size_t i = 1, owner_start = 1, plus;
    if (n < 4 || n > MAX_KEY || s[0] == '\0' || strchr(TAGS, s[0]) == NULL)
        return 0;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    plus = i;
    if (plus == owner_start || plus - owner_start > 19 || (s[owner_start] == '0' && plus - owner_start > 1))
        return 0;
    if (plus - owner_start == 19 && memcmp(s + owner_start, "9223372036854775807", 19) > 0)
        return 0;
    if (s[0] == 'd' && !(plus - owner_start == 1 && s[owner_start] == '0'))
        return 0;
    if (plus >= n || s[plus] != '+' || n - plus - 1 < 1 || n - plus - 1 > MAX_DIGITS)
        return 0;
    for (i = plus + 1; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* 1 if s[0:n] is well-formed UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int valid_utf8(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        size_t extra;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            extra = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            extra = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            extra = 3, cp = c & 0x07;
        else
            return 0;
        if (i + extra >= n)
            return 0;
        for (size_t k = 1; k <= extra; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return 0;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((extra == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (extra == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        i += extra + 1;
    }
    return 1;
}

static PyObject *builder_add(Builder *b, PyObject *args)
{
    const char *key, *name;
    Py_ssize_t key_len, name_len;
    PyObject *key_obj, *name_obj;
    if (!PyArg_ParseTuple(args, "UU:add", &key_obj, &name_obj))
        return NULL;
    if ((key = PyUnicode_AsUTF8AndSize(key_obj, &key_len)) == NULL ||
        (name = PyUnicode_AsUTF8AndSize(name_obj, &name_len)) == NULL)
        return NULL;
    if (!valid_key(key, (size_t)key_len)) {
        PyErr_Format(PyExc_ValueError, "not a namespaced cache key: %R", key_obj);
        return NULL;
    }
    if (name_len > MAX_NAME) {
        PyErr_Format(PyExc_ValueError, "a name is longer than %d bytes", MAX_NAME);
        return NULL;
    }
    if (put_row(b, key, (size_t)key_len, name, (size_t)name_len) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static inline uint32_t be32(const unsigned char *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* One COPY row field: its bytes and length; 0 if `end` comes first, -1 (error set) if NULL. */
static int take_field(const unsigned char **at, const unsigned char *end, const unsigned char **field,
                      uint32_t *len)
{
    if (end - *at < 4)
        return 0;
    *len = be32(*at);
    if (*len == UINT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "COPY stream: a served row has a NULL column");
        return -1;
    }
    if ((uint64_t)(end - *at - 4) < *len)
        return 0;
    *field = *at + 4;
    *at += 4 + *len;
    return 1;
}

static int scope_letter(const unsigned char *label, uint32_t n, char *letter)
{
    static const char *const labels[] = {"user", "usergroup", "enterprise", "global"};
    for (int i = 0; i < 4; i++) {
        if (strlen(labels[i]) == n && memcmp(labels[i], label, n) == 0) {
            *letter = TAGS[i];
            return 1;
        }
    }
    PyErr_Format(PyExc_ValueError, "COPY stream: unknown scope %.*s", (int)n, label);
    return 0;
}

/* Parse whole rows of `buf`; the bytes used, or -1 with an error set. */
static Py_ssize_t parse_rows(Builder *b, const unsigned char *buf, Py_ssize_t size)
{
    const unsigned char *at = buf, *end = buf + size;
    if (!b->header_read) {
        uint32_t extension;
        if (size < 19)
            return 0;
        if (memcmp(at, COPY_SIGNATURE, 11) != 0) {
            PyErr_SetString(PyExc_ValueError, "COPY stream: not PostgreSQL's binary format");
            return -1;
        }
        extension = be32(at + 15);
        if ((uint64_t)size < 19 + (uint64_t)extension)
            return 0;
        at += 19 + extension;
        b->header_read = 1;
    }
    while (at < end && !b->trailer_read) {
        const unsigned char *row = at, *scope, *owner, *key, *name;
        uint32_t fields, scope_len, owner_len, key_len, name_len;
        char full[MAX_KEY + 1];
        int n, ok;
        int64_t owner_id;
        if (end - at < 2)
            break;
        fields = (uint32_t)at[0] << 8 | at[1];
        at += 2;
        if (fields == 0xffff) {
            b->trailer_read = 1;
            break;
        }
        if (fields != 4) {
            PyErr_Format(PyExc_ValueError, "COPY stream: rows of %u columns, expected 4", fields);
            return -1;
        }
        if ((ok = take_field(&at, end, &scope, &scope_len)) <= 0 ||
            (ok = take_field(&at, end, &owner, &owner_len)) <= 0 ||
            (ok = take_field(&at, end, &key, &key_len)) <= 0 ||
            (ok = take_field(&at, end, &name, &name_len)) <= 0) {
            if (ok < 0)
                return -1;
            at = row;
            break;
        }
        if (owner_len != 8) {
            PyErr_SetString(PyExc_ValueError, "COPY stream: owner_id is not an int8");
            return -1;
        }
        owner_id = (int64_t)((uint64_t)be32(owner) << 32 | be32(owner + 4));
        if (!scope_letter(scope, scope_len, full))
            return -1;
        n = 1 + snprintf(full + 1, 21, "%lld", (long long)owner_id);
        if (owner_id < 0 || key_len > MAX_DIGITS + 1 || (size_t)n + key_len > MAX_KEY) {
            PyErr_SetString(PyExc_ValueError, "COPY stream: a served row's owner or key is invalid");
            return -1;
        }
        memcpy(full + n, key, key_len);
        if (!valid_key(full, (size_t)n + key_len)) {
            PyErr_Format(PyExc_ValueError, "COPY stream: not a namespaced cache key: %.*s",
                         (int)(n + (int)key_len), full);
            return -1;
        }
        if (name_len > MAX_NAME || !valid_utf8(name, name_len)) {
            PyErr_SetString(PyExc_ValueError, "COPY stream: a name is too long or not UTF-8");
            return -1;
        }
        if (put_row(b, full, (size_t)n + key_len, (const char *)name, name_len) < 0)
            return -1;
    }
    return at - buf;
}

static PyObject *builder_feed(Builder *b, PyObject *chunk)
{
    Py_buffer view;
    Py_ssize_t used;
    if (PyObject_GetBuffer(chunk, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    if (b->trailer_read) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "COPY stream: data after its trailer");
        return NULL;
    }
    if (b->carry.len == 0) {
        used = parse_rows(b, view.buf, view.len);
        if (used >= 0 && used < view.len) {
            uint64_t at;
            if (arena_put(&b->carry, (const char *)view.buf + used, (size_t)(view.len - used), &at) < 0)
                used = -1;
        }
    } else {
        /* a row split over two chunks: parse the carried bytes with this chunk behind them */
        uint64_t at;
        used = -1;
        if (arena_put(&b->carry, view.buf, (size_t)view.len, &at) == 0)
            used = parse_rows(b, (const unsigned char *)b->carry.data, (Py_ssize_t)b->carry.len);
        if (used >= 0) {
            memmove(b->carry.data, b->carry.data + used, b->carry.len - (size_t)used);
            b->carry.len -= (size_t)used;
        }
    }
    PyBuffer_Release(&view);
    if (used < 0)
        return NULL;
    if (b->trailer_read && b->carry.len) {
        PyErr_SetString(PyExc_ValueError, "COPY stream: data after its trailer");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *builder_complete(Builder *b, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong((!b->header_read && b->carry.len == 0) || (b->trailer_read && b->carry.len == 0));
}

static PyObject *builder_keys(Builder *b, PyObject *unused)
{
    PyObject *list = PyList_New(b->nrows);
    (void)unused;
    if (list == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < b->nrows; i++) {
        size_t n;
        const char *key = row_key(b, &b->rows[i], &n);
        PyObject *text = PyUnicode_New((Py_ssize_t)n, 127);
        if (text == NULL) {
            Py_DECREF(list);
            return NULL;
        }
        memcpy(PyUnicode_DATA(text), key, n);
        PyList_SET_ITEM(list, i, text);
    }
    return list;
}

/* Add a head filter mark to the set; -1 (error set) on no memory. */
static int add_mark(Builder *b, u128 mark)
{
    uint64_t mask, slot;
    if ((b->nmarks + 1) * 2 > b->nmarks_slots) {
        uint64_t size = b->nmarks_slots ? b->nmarks_slots * 2 : 1 << 12;
        u128 *grown = PyMem_RawCalloc(size, sizeof(u128));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (uint64_t i = 0; i < b->nmarks_slots; i++) {
            u128 m = b->marks[i];
            if (m == 0)
                continue;
            slot = mix((uint64_t)m ^ mix((uint64_t)(m >> 64))) & (size - 1);
            while (grown[slot])
                slot = (slot + 1) & (size - 1);
            grown[slot] = m;
        }
        PyMem_RawFree(b->marks);
        b->marks = grown;
        b->nmarks_slots = size;
    }
    mark += 1;
    mask = b->nmarks_slots - 1;
    for (slot = mix((uint64_t)mark ^ mix((uint64_t)(mark >> 64))) & mask; b->marks[slot];
         slot = (slot + 1) & mask)
        if (b->marks[slot] == mark)
            return 0;
    b->marks[slot] = mark;
    b->nmarks++;
    return 0;
}

/* The head filter marks of one private key (cache/trie.py's _marks). */
static int key_marks(Builder *b, const char *key, size_t n, int scope)
{
    size_t plus = 1;
    uint64_t owner = 0, head = 0;
    while (key[plus] != '+')
        owner = owner * 10 + (uint64_t)(key[plus++] - '0');
    size_t digits = n - plus - 1;
    u128 base = (u128)owner * STRIDE + (u128)scope;
    for (size_t i = 0; i < digits && i < HEAD_DIGITS; i++)
        head = head * 10 + (uint64_t)(key[plus + 1 + i] - '0');
    if (digits >= HEAD_DIGITS)
        return add_mark(b, base + 4 * (u128)head);
    uint64_t spread = 1;
    for (size_t i = digits; i < HEAD_DIGITS; i++)
        spread *= 10;
    for (uint64_t value = head * spread; value < (head + 1) * spread; value++)
        if (add_mark(b, base + 4 * (u128)value) < 0)
            return -1;
    return 0;
}

#define NAME_AHEAD 16
#define NAME_RING 32 /* > NAME_AHEAD */

/* The names blob and each row's reference in it: distinct names once, first row first. */
static PyObject *names_blob(Builder *b, uint64_t *refs_by_row)
{
    uint64_t size = 1 << 12, mask, total = 0, hashes[NAME_RING];
    uint32_t *slots;
    PyObject *blob;
    char *out;
    while (size < (uint64_t)b->nrows * 2)
        size *= 2;
    mask = size - 1;
    slots = PyMem_RawCalloc(size, sizeof(uint32_t)); /* first row with the name, + 1 */
    if (slots == NULL)
        return PyErr_NoMemory();
    for (Py_ssize_t i = 0; i < NAME_AHEAD && i < b->nrows; i++) {
        uint64_t ref = b->rows[i].name;
        hashes[i] = hash_bytes(b->names.data + (ref >> LENGTH_BITS), ref & MAX_NAME) & mask;
    }
    for (Py_ssize_t i = 0; i < b->nrows; i++) {
        uint64_t ref = b->rows[i].name, len = ref & MAX_NAME;
        const char *name = b->names.data + (ref >> LENGTH_BITS);
        uint64_t slot = hashes[i % NAME_RING];
        if (i + NAME_AHEAD < b->nrows) { /* ask for a later row's slot before it is needed */
            uint64_t later = b->rows[i + NAME_AHEAD].name;
            uint64_t hash = hash_bytes(b->names.data + (later >> LENGTH_BITS), later & MAX_NAME);
            hashes[(i + NAME_AHEAD) % NAME_RING] = hash & mask;
            __builtin_prefetch(&slots[hash & mask]);
        }
        for (;; slot = (slot + 1) & mask) {
            uint32_t first = slots[slot];
            if (first == 0) {
                slots[slot] = (uint32_t)(i + 1);
                refs_by_row[i] = total << LENGTH_BITS | len; /* an offset in the blob */
                total += len;
                break;
            }
            uint64_t other = b->rows[first - 1].name;
            if ((other & MAX_NAME) == len &&
                memcmp(b->names.data + (other >> LENGTH_BITS), name, len) == 0) {
                refs_by_row[i] = refs_by_row[first - 1];
                break;
            }
        }
    }
    PyMem_RawFree(slots);
    blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (blob == NULL)
        return NULL;
    out = PyBytes_AS_STRING(blob);
    for (Py_ssize_t i = 0; i < b->nrows; i++) {
        uint64_t ref = b->rows[i].name, at = refs_by_row[i] >> LENGTH_BITS;
        /* each distinct name is copied where its first row put it (later copies rewrite it) */
        memcpy(out + at, b->names.data + (ref >> LENGTH_BITS), ref & MAX_NAME);
    }
    return blob;
}

PyDoc_STRVAR(finish_doc,
"finish(items, namespace) -> (name_refs, names, index, counts, marks)\n\n"
"Join the trie's (key, id) `items` (every key of keys(), once) to the rows:\n"
"name_refs (uint64 per key id), the names blob, the hash index section of\n"
"`namespace`'s keys, entries per scope letter and distinct head filter marks.");

/* The namespace's key packed as _index.c does (length << 50 | value), or 0 if not of it. */
static inline uint64_t pack_indexed(const char *key, size_t len, const char *space, size_t space_len)
{
    uint64_t value = 0;
    if (len <= space_len + 1 || memcmp(key, space, space_len) != 0 || key[space_len] != '+')
        return 0;
    for (size_t k = space_len + 1; k < len; k++)
        value = value * 10 + (uint64_t)(key[k] - '0');
    return (uint64_t)(len - space_len - 1) << VALUE_BITS | value;
}

typedef struct {
    uint64_t packed;
    uint64_t id;
} Indexed;

/* One trie item on its way through the join's pipeline. */
typedef struct {
    PyObject *key_obj;
    const char *key;
    Py_ssize_t len;
    size_t id;
    uint64_t hash;
    uint32_t row; /* + 1; 0 none */
} Probe;

#define AHEAD 8
#define RING 32 /* > 3 * AHEAD: an item stays in the ring until its last stage */

static PyObject *builder_finish(Builder *b, PyObject *args)
{
    PyObject *items, *namespace, *seq = NULL, *refs = NULL, *blob = NULL, *index = NULL;
    PyObject *result = NULL;
    uint64_t *refs_by_row = NULL, *name_refs, *keys;
    uint32_t *ids;
    unsigned char *seen = NULL;
    Indexed *indexed = NULL;
    Probe ring[RING];
    const char *space;
    Py_ssize_t space_len, n;
    uint64_t counts[4] = {0, 0, 0, 0}, nindexed = 0, capacity, lengths = 0;
    if (!PyArg_ParseTuple(args, "OU:finish", &items, &namespace))
        return NULL;
    if ((space = PyUnicode_AsUTF8AndSize(namespace, &space_len)) == NULL)
        return NULL;
    seq = PySequence_Fast(items, "items must be a sequence of (key, id) pairs");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n != b->nrows) {
        PyErr_Format(PyExc_ValueError, "%zd trie items for %zd keys", n, b->nrows);
        goto done;
    }
    refs_by_row = PyMem_RawMalloc(((size_t)n + 1) * sizeof(uint64_t));
    seen = PyMem_RawCalloc((size_t)n + 1, 1);
    indexed = PyMem_RawMalloc(((size_t)n + 1) * sizeof(Indexed));
    if (refs_by_row == NULL || seen == NULL || indexed == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if ((blob = names_blob(b, refs_by_row)) == NULL)
        goto done;
    refs = PyBytes_FromStringAndSize(NULL, 8 * n);
    if (refs == NULL)
        goto done;
    name_refs = (uint64_t *)PyBytes_AS_STRING(refs);
    /* The join, in the trie's items order; the index's keys are packed on the way, so
     * that it is filled in this order too without going back to the rows. Each item
     * costs a few cache misses (its slot, its row, the row's key, the row's name
     * reference) that do not depend on the items before it: a pipeline asks for
     * them AHEAD items early, one stage at a time, instead of waiting on each. */
    for (Py_ssize_t i = 0; i < n + 3 * AHEAD; i++) {
        Py_ssize_t staged = i - AHEAD, fetched = i - 2 * AHEAD, done_at = i - 3 * AHEAD;
        if (i < n) {
            Probe *p = &ring[i % RING];
            PyObject *pair = PySequence_Fast_GET_ITEM(seq, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
                !PyUnicode_Check(p->key_obj = PyTuple_GET_ITEM(pair, 0))) {
                PyErr_SetString(PyExc_TypeError, "items must be (str, int) pairs");
                goto done;
            }
            if ((p->key = PyUnicode_AsUTF8AndSize(p->key_obj, &p->len)) == NULL)
                goto done;
            p->id = PyLong_AsSize_t(PyTuple_GET_ITEM(pair, 1));
            if (p->id == (size_t)-1 && PyErr_Occurred())
                goto done;
            p->hash = hash_bytes(p->key, (size_t)p->len);
            __builtin_prefetch(&b->slots[p->hash & (b->nslots - 1)]);
        }
        if (staged >= 0 && staged < n) {
            /* the first slot whose fingerprint matches: nearly always the key's own */
            Probe *p = &ring[staged % RING];
            uint64_t mask = b->nslots - 1, slot = p->hash & mask, entry;
            while ((entry = b->slots[slot]) != 0 && !slot_may_hold(entry, p->hash))
                slot = (slot + 1) & mask;
            p->row = (uint32_t)entry; /* row + 1, or 0 */
            if (p->row) {
                __builtin_prefetch(&b->rows[p->row - 1]);
                __builtin_prefetch(&refs_by_row[p->row - 1]);
            }
        }
        if (fetched >= 0 && fetched < n) {
            Probe *p = &ring[fetched % RING];
            if (p->row)
                __builtin_prefetch(b->keys.data + (b->rows[p->row - 1].key >> 8));
        }
        if (done_at >= 0) {
            Probe *p = &ring[done_at % RING];
            size_t len;
            const char *key = p->row ? row_key(b, &b->rows[p->row - 1], &len) : NULL;
            uint64_t packed;
            if (key == NULL || len != (size_t)p->len || memcmp(key, p->key, len) != 0) {
                /* a fingerprint shared with another key: the whole probe */
                uint64_t entry = b->slots[find_slot(b, p->key, (size_t)p->len, p->hash)];
                p->row = (uint32_t)entry;
            }
            if (p->row == 0 || p->id >= (size_t)n || seen[p->id]) {
                PyErr_Format(PyExc_ValueError, "trie item (%R, %zu) is not one of the keys",
                             p->key_obj, p->id);
                goto done;
            }
            seen[p->id] = 1;
            name_refs[p->id] = refs_by_row[p->row - 1];
            packed = pack_indexed(p->key, (size_t)p->len, space, (size_t)space_len);
            if (packed) {
                indexed[nindexed].packed = packed;
                indexed[nindexed++].id = p->id;
                lengths |= 1ULL << (packed >> VALUE_BITS);
            }
        }
    }
    /* Counts and head filter marks, per row. */
    for (Py_ssize_t i = 0; i < n; i++) {
        size_t len;
        const char *key = row_key(b, &b->rows[i], &len);
        int scope = (int)(strchr(TAGS, key[0]) - TAGS);
        counts[scope]++;
        if (key[0] != 'd' && key_marks(b, key, len, scope) < 0)
            goto done;
    }
    capacity = nindexed + nindexed / 3 + 8;
    index = PyBytes_FromStringAndSize(NULL, HEADER + 12 * (Py_ssize_t)capacity);
    if (index == NULL)
        goto done;
    {
        char *raw = PyBytes_AS_STRING(index);
        uint32_t head[2] = {MAGIC, VERSION};
        memset(raw, 0, (size_t)PyBytes_GET_SIZE(index));
        memcpy(raw, head, 8);
        memcpy(raw + 8, &capacity, 8);
        memcpy(raw + 16, &nindexed, 8);
        memcpy(raw + 24, &lengths, 8);
        keys = (uint64_t *)(raw + HEADER);
        ids = (uint32_t *)(raw + HEADER + 8 * capacity);
    }
    for (uint64_t i = 0; i < nindexed; i++) {
        uint64_t slot = first_slot(indexed[i].packed, capacity);
        while (keys[slot])
            slot = next_slot(slot, capacity);
        keys[slot] = indexed[i].packed;
        ids[slot] = (uint32_t)indexed[i].id;
    }
    result = Py_BuildValue("(OOO(KKKK)K)", refs, blob, index, (unsigned long long)counts[0],
                           (unsigned long long)counts[1], (unsigned long long)counts[2],
                           (unsigned long long)counts[3], (unsigned long long)b->nmarks);
done:
    Py_XDECREF(seq);
    Py_XDECREF(refs);
    Py_XDECREF(blob);
    Py_XDECREF(index);
    PyMem_RawFree(refs_by_row);
    PyMem_RawFree(seen);
    PyMem_RawFree(indexed);
    return result;
}

static PyObject *builder_head_filter(Builder *b, PyObject *arg)
{
    unsigned long long modulus = PyLong_AsUnsignedLongLong(arg);
    PyObject *bits;
    unsigned char *out;
    if (modulus == (unsigned long long)-1 && PyErr_Occurred())
        return NULL;
    if (modulus == 0) {
        PyErr_SetString(PyExc_ValueError, "modulus must be positive");
        return NULL;
    }
    bits = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)((modulus + 7) / 8));
    if (bits == NULL)
        return NULL;
    out = (unsigned char *)PyBytes_AS_STRING(bits);
    memset(out, 0, (size_t)((modulus + 7) / 8));
    for (uint64_t i = 0; i < b->nmarks_slots; i++) {
        if (b->marks[i]) {
            uint64_t bit = (uint64_t)((b->marks[i] - 1) % modulus);
            out[bit >> 3] |= (unsigned char)(1u << (bit & 7));
        }
    }
    return bits;
}

static Py_ssize_t builder_len(Builder *b)
{
    return b->nrows;
}

static void builder_dealloc(Builder *b)
{
    PyMem_RawFree(b->keys.data);
    PyMem_RawFree(b->names.data);
    PyMem_RawFree(b->carry.data);
    PyMem_RawFree(b->rows);
    PyMem_RawFree(b->slots);
    PyMem_RawFree(b->marks);
    Py_TYPE(b)->tp_free((PyObject *)b);
}

static PyMethodDef builder_methods[] = {
    {"add", (PyCFunction)builder_add, METH_VARARGS, "add(full, name): one entry; a later add of a key wins."},
    {"feed", (PyCFunction)builder_feed, METH_O, "feed(chunk): part of the binary COPY stream."},
    {"complete", (PyCFunction)builder_complete, METH_NOARGS,
     "False while a COPY stream is begun and its trailer not yet read."},
    {"keys", (PyCFunction)builder_keys, METH_NOARGS, "The distinct keys, first added first."},
    {"finish", (PyCFunction)builder_finish, METH_VARARGS, finish_doc},
    {"head_filter", (PyCFunction)builder_head_filter, METH_O, "head_filter(modulus) -> bytes"},
    {NULL, NULL, 0, NULL},
};

static PySequenceMethods builder_as_sequence = {.sq_length = (lenfunc)builder_len};

static PyTypeObject BuilderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "cnamd.cache._builder.Builder",
    .tp_basicsize = sizeof(Builder),
    .tp_dealloc = (destructor)builder_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "A full load's entries in flat arrays, and the base's arrays built from them.",
    .tp_methods = builder_methods,
    .tp_as_sequence = &builder_as_sequence,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd.cache._builder", "The full load's per-entry passes in C.", -1, NULL,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__builder(void)
{
    PyObject *m;
    if (PyType_Ready(&BuilderType) < 0)
        return NULL;
    m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&BuilderType);
    if (PyModule_AddObject(m, "Builder", (PyObject *)&BuilderType) < 0) {
        Py_DECREF(&BuilderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
