/* Where a packed number goes in an open-addressing table: the hash and the linear
 * probe shared by the global index (_index_layout.h: _index.c, _builder.c) and the
 * held upstream answers (_held.c), so the tables written and read agree. */
#ifndef CNAMD_PROBE_H
#define CNAMD_PROBE_H

#include <stdint.h>

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
