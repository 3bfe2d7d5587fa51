/*
 * postings.h — the filter index's write side: while a batch is applied, entries with a
 * `source` or `type` field are gathered per (stream, field, value hash); at the end of the
 * batch each group becomes one `filt` key whose value lists the group's entries.
 *
 *   key   = no(4) field(1) hash(8) ms(8) seq(8)    the first entry of the group
 *   value = n x [ms(8) seq(8) pos(8)]              ascending IDs, 1 <= n <= POST_MAX
 *
 * One LMDB put per distinct value per batch instead of one per entry.
 */
#ifndef EVS_POSTINGS_H
#define EVS_POSTINGS_H

#include <stddef.h>
#include <stdint.h>

#include "evstore.h"

#define POST_MAX 256 /* entries per key: bounds a value to 6 KiB */
#define POST_TRIPLE 24

struct idx_batch;
typedef struct postings postings;

postings *post_new(void);
void post_free(postings *p);
/* Add one entry; may emit a full group into b. -ENOMEM on failure. */
int post_add(postings *p, struct idx_batch *b, uint32_t no, uint8_t field, uint64_t hash,
             evs_id id, uint64_t pos);
/* Emit every pending group into b and start empty. */
int post_flush(postings *p, struct idx_batch *b);
/* Forget pending groups (a failed batch). */
void post_clear(postings *p);

/* Reading a value: entry i of a value of vl bytes (vl % 24 == 0). */
void post_get(const void *v, size_t i, evs_id *id, uint64_t *pos);

#endif
