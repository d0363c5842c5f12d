/* The global directory's hash index section, as _index.c reads it and both _index.c
 * and _builder.c write it (_index.c's comment gives the layout and says why). One
 * header, so the two can never disagree on where a key goes. */
#ifndef CNAMD_INDEX_LAYOUT_H
#define CNAMD_INDEX_LAYOUT_H

#include <stdint.h>

#define MAGIC 0x58494e43u /* "CNIX" read as little-endian uint32 */
#define VERSION 1u
#define HEADER 32
#define MAX_DIGITS 15
#define VALUE_BITS 50
#define LENGTH_BITS 16 /* a name reference: offset << 16 | length */

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
