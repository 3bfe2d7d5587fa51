/*
 * crc.h — the store's one checksum: CRC-32 (ISO-HDLC, the polynomial of zlib's crc32), the value
 * docs/format.md specifies. libdeflate computes it: same function, same values as zlib's
 * crc32(), but with the carry-less-multiply (PCLMULQDQ) path that Debian's zlib 1.2.13 lacks —
 * 20 ns instead of 130 ns for a 248-byte record on this machine (docs/architecture.md,
 * "Dependencies"). zlib stays for compression (backups) and adler32.
 *
 * evs_crc32(0, p, n) is the CRC of n bytes; evs_crc32(c, q, m) continues c over m more bytes.
 */
#ifndef EVS_CRC_H
#define EVS_CRC_H

#include <libdeflate.h>
#include <stddef.h>
#include <stdint.h>

static inline uint32_t evs_crc32(uint32_t crc, const void *p, size_t n)
{
    return n ? (uint32_t)libdeflate_crc32(crc, p, n) : crc;
}

#endif
