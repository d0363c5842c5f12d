/* The global directory's hash index section, as _index.c reads it and both _index.c
 * and _builder.c write it (_index.c's comment gives the layout and says why). One
 * header, so the two can never disagree on where a key goes. */
#ifndef CNAMD_INDEX_LAYOUT_H
#define CNAMD_INDEX_LAYOUT_H

#include <stdint.h>

#include "_probe.h"

#define MAGIC 0x58494e43u /* "CNIX" read as little-endian uint32 */
#define VERSION 1u
#define HEADER 32
#define LENGTH_BITS 16 /* a name reference: offset << 16 | length */

#endif
