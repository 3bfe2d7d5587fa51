/*
 * fuzz_event_json.c — an HTTP publish body as the server handles it: JSON (one event or an
 * array), each event mapped to fields, and back: the fields as an entry turned into JSON.
 */
#include <stdint.h>
#include <stdlib.h>

#include "event_json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_t *doc = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES, NULL);
    if (!doc)
        return 0;
    size_t n = json_is_array(doc) ? json_array_size(doc) : 1;
    for (size_t i = 0; i < n && i < 64; i++) {
        evs_field f[64];
        char *keep[1];
        size_t nf = 0, nkeep = 0;
        json_t *ev = json_is_array(doc) ? json_array_get(doc, i) : doc;
        if (!event_fields(ev, f, 64, &nf, keep, &nkeep)) {
            evs_entry e = {{(uint64_t)i, 1}, 1000, f, nf};
            json_t *back = event_json(&e);
            char *text = json_dumps(back, JSON_COMPACT);
            free(text);
            json_decref(back);
        }
        for (size_t k = 0; k < nkeep; k++)
            free(keep[k]);
    }
    json_decref(doc);
    /* arbitrary bytes as a JSON string */
    json_decref(json_bytes(data, size));
    return 0;
}
