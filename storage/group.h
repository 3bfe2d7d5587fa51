/*
 * group.h — consumer-group state: the groups of a stream, their consumers and pending-entries
 * lists (PEL), kept in memory, changed only by applying REC_GROUP records (group.c), and
 * checkpointed in three index tables so an open loads them instead of re-reading the log.
 *
 * Invariants:
 *  G1. Group state changes only in group_apply(), from a record that is in the log batch being
 *      built (writer) or in the log (recovery, rebuild): replaying the log rebuilds it exactly
 *      (records carry full values and their own time, never "now").
 *  G2. st->gmu guards all group state: the writer holds it while applying, readers while
 *      walking. Lock order: st->lock before st->gmu; the writer never takes st->lock under it.
 *  G3. A group's PEL slots are sorted by ID; a slot with cons == PEL_FREE is an acknowledged
 *      hole (compacted when holes outnumber live slots). Every live slot's consumer is live,
 *      and each consumer's npending counts its live slots. pel_lo is the first live slot
 *      (npel when none) and the last slot is live (holes at the end are dropped), so the
 *      smallest and largest pending IDs cost nothing to find.
 *  G4. The index holds, for each group changed since the last index commit, its state as of
 *      that commit: the group row is rewritten whole, a consumer row when the consumer is on
 *      the group's dirty list (every change to a consumer puts it there), PEL rows change one
 *      by one in the same index batch as the records they come from (so they lag the log
 *      exactly like the rest of the index, and the tail replay brings them up to date). A
 *      commit writes what changed, not every consumer of a group that has thousands.
 *  G5. Every named consumer slot is on exactly one hash chain (cbucket, through hnext), the
 *      one of its name, and nnamed counts them; a deleted slot is on none. Finding a consumer
 *      by name costs one chain, not a walk of all of them.
 *  G6. A stream's groups are an array sorted by name (bytewise), found by binary search: a
 *      stream that thousands of groups read (one per subscriber) costs a lookup of log n.
 *      s->gtouched is set when one of them is touched, so an index commit of a stream whose
 *      groups did not change does not walk them.
 *
 * Index tables (big-endian integers):
 *   groups     no(4) name -> gno(4) last_ms(8) last_seq(8) entries_read(8) max_deliveries(8)
 *                            dead_letters(8) next_cno(4) decl_pos(8) dlq
 *   consumers  gno(4) cno(4) -> seen_ms(8) active_ms(8) name
 *   pel        gno(4) ms(8) seq(8) -> cno(4) deliveries(8) time_ms(8)
 * Group numbers are store-wide and come from the create record, so replay assigns the same.
 */
#ifndef EVS_GROUP_H
#define EVS_GROUP_H

#include "internal.h"

#define PEL_FREE UINT32_MAX

typedef struct pel_ent {
    evs_id id;
    uint64_t time_ms;   /* last delivery                                                    */
    uint64_t count;     /* deliveries                                                       */
    uint32_t cons;      /* consumer slot, or PEL_FREE                                       */
} pel_ent;

typedef struct gcons {
    uint8_t *name;      /* NULL: a deleted consumer's slot                                  */
    size_t len;
    uint64_t seen_ms, active_ms, npending;
    uint32_t hnext;     /* next slot on its hash chain, PEL_FREE at the end (G5)            */
    bool dirty;         /* on the group's dirty list (G4)                                   */
} gcons;

typedef struct cgroup {
    uint8_t *name;
    size_t len;
    uint32_t gno;
    evs_id last;                /* last-delivered ID                                        */
    uint64_t entries_read;      /* REC_G_ENTRIES_READ_NONE: unknown                         */
    uint64_t max_deliveries;
    uint8_t *dlq;
    size_t dlq_len;
    uint64_t dead_letters;
    gcons *cons;                /* by consumer number                                       */
    uint32_t ncons;             /* slots used (next consumer number)                        */
    uint32_t conscap;
    uint32_t nnamed;            /* live consumers (G5)                                      */
    uint32_t *cbucket;          /* hash chain heads, PEL_FREE when empty (G5)               */
    uint32_t ncbucket;          /* a power of two, at least nnamed; 0 before the first      */
    uint32_t *dirty;            /* consumers whose rows the next index commit writes (G4)   */
    uint32_t ndirty, dirtycap;
    pel_ent *pel;
    size_t npel, nlive, pelcap;
    size_t pel_lo;              /* the first live slot, npel when none (G3)                 */
    bool touched;               /* rewrite its rows at the next index commit                */
    bool restoring;             /* built by a REC_G_SNAP in this replay: take 13 and 14     */
    uint64_t decl_pos;          /* log position of its create or latest snapshot record     */
} cgroup;

/* Lookups (caller holds st->gmu, or is the writer). */
cgroup *group_find(const stream *s, const void *name, size_t len);
/* Consumer slot by name, or PEL_FREE. */
uint32_t group_consumer(const cgroup *g, const void *name, size_t len);
/* The first PEL slot with ID >= id (npel if none). */
size_t pel_lower(const cgroup *g, evs_id id);
/* The live slot holding id, or NULL. */
pel_ent *pel_find(cgroup *g, evs_id id);

/* Apply one REC_GROUP record at log position pos (G1). Takes st->gmu. */
int group_apply(evs_store *st, stream *s, const rec_hdr *h, const uint8_t *body, uint64_t pos,
                evs_error *err);
/* Emit the snapshot records (REC_G_SNAP...) of every group of s whose decl_pos is below upto
 * (writer; group_exec.c). */
int group_snapshot_emit(evs_store *st, stream *s, uint64_t upto, evs_error *err);
/* The stream is dropped: queue the deletion of its groups' rows, free them. Takes st->gmu. */
int group_drop_all(evs_store *st, stream *s);
/* Queue the rows of the stream's touched groups into the index batch (store_index_flush). */
int group_flush(evs_store *st, stream *s);
/* Load every group from the index (open). */
int group_load(evs_store *st, evs_error *err);
/* Free a stream's groups (store close). */
void group_free_all(stream *s);

/* Redis's estimate of how many entries precede `id` in the stream's history
 * (streamEstimateDistanceFromFirstEverEntry), or REC_G_ENTRIES_READ_NONE. `first`: the ID of
 * the stream's first live entry, Redis's first_id (reader_first_live). */
uint64_t group_estimate_read(const stream_state *s, evs_id first, evs_id id);
/* Does (start, end) hold the stream's latest tombstone (streamRangeHasTombstones)? */
bool group_range_has_tombstones(const stream_state *s, evs_id first, evs_id start);

#endif
