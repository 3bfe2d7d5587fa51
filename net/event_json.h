/*
 * event_json.h — JSON events <-> stream entries (see event_json.c).
 */
#ifndef EVS_EVENT_JSON_H
#define EVS_EVENT_JSON_H

#include <jansson.h>
#include <stddef.h>

#include "evstore.h"

/* A JSON string for arbitrary bytes (valid UTF-8 as is, other bytes as U+00XX). New ref. */
json_t *json_bytes(const void *data, size_t len);
json_t *json_id(evs_id id);

/* The fields of one event object into f (at most cap); the payload's JSON text is malloc'd
 * into keep[(*nkeep)++] (the caller frees). Field slices point into ev, valid while it lives.
 * NULL, or why the event is refused. */
const char *event_fields(json_t *ev, evs_field *f, size_t cap, size_t *n, char **keep,
                         size_t *nkeep);

/* The JSON object of an entry (new reference). */
json_t *event_json(const evs_entry *e);

#endif
