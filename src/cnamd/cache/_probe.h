/* A number packed into one uint64 and where it goes in an open-addressing table: the
 * packing, the hash and the linear probe shared by the global index (_index_layout.h:
 * _index.c, _builder.c) and the held upstream answers (_held.c), so the tables written
 * and read agree. Include after <Python.h>. */
#ifndef CNAMD_PROBE_H
#define CNAMD_PROBE_H

#include <stdint.h>

#define MAX_DIGITS 15
#define VALUE_BITS 50

/* Pack "+" and 1-15 ASCII digits starting at `at` of a str, exactly (no hash to trust):
 * length << VALUE_BITS | value; 0 if it is not such a number. */
static inline uint64_t pack_number(PyObject *text, Py_ssize_t at)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text) - at, i;
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    uint64_t value = 0;
    if (n < 2 || n > MAX_DIGITS + 1 || PyUnicode_READ(kind, data, at) != '+')
        return 0;
    for (i = 1; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, at + i);
        if (c < '0' || c > '9')
            return 0;
        value = value * 10 + (c - '0');
    }
    return (uint64_t)(n - 1) << VALUE_BITS | value;
}

static inline uint64_t mix(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    k *= 0xc4ceb9fe1a85ec53ULL;
    k ^= k >> 33;
    return k;
}

/* The first slot to probe: high 32 bits of the mix scaled to the capacity, the same
 * on every platform (capacity < 2^32, so the product fits 64 bits). */
static inline uint64_t first_slot(uint64_t packed, uint64_t capacity)
{
    return ((mix(packed) >> 32) * capacity) >> 32;
}

/* Linear probing's next slot, wrapping at the end of the table. */
static inline uint64_t next_slot(uint64_t slot, uint64_t capacity)
{
    return slot + 1 == capacity ? 0 : slot + 1;
}

#endif
