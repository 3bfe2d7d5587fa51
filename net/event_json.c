/*
 * event_json.c — the mapping between JSON events and stream entries, both ways. Pure: no I/O.
 *
 * In:  {"source": s, "type": t, "payload": any, "<name>": string, ...}
 *      -> fields source, type, payload (compact JSON text), then the other members in order.
 * Out: entry -> {"id", "ts", "source", "type", "payload" (parsed when it is JSON), "fields"}.
 * Bytes that are not UTF-8 come out as U+00XX each.
 */
#include "event_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A JSON string for arbitrary bytes: valid UTF-8 as is (jansson checks), other bytes as
 * U+00XX each. */
json_t *json_bytes(const void *data, size_t len)
{
    json_t *ok = json_stringn(data, len);
    if (ok)
        return ok;
    const unsigned char *p = data;
    char *buf = malloc(len * 2 + 1);
    if (!buf)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (p[i] < 0x80) {
            buf[o++] = (char)p[i];
        } else {
            buf[o++] = (char)(0xc0 | (p[i] >> 6));
            buf[o++] = (char)(0x80 | (p[i] & 0x3f));
        }
    }
    json_t *s = json_stringn(buf, o);
    free(buf);
    return s;
}

json_t *json_id(evs_id id)
{
    char buf[EVS_ID_STRLEN];
    evs_id_format(id, buf);
    return json_string(buf);
}

/* The fields of one event object, into f (cap entries); JSON text buffers go to keep[]. */
const char *event_fields(json_t *ev, evs_field *f, size_t cap, size_t *n, char **keep,
                                size_t *nkeep)
{
    if (!json_is_object(ev))
        return "an event must be a JSON object";
    *n = 0;
    static const char *const first[] = {"source", "type"};
    for (size_t k = 0; k < 2; k++) {
        json_t *v = json_object_get(ev, first[k]);
        if (!v)
            continue;
        if (!json_is_string(v))
            return k ? "\"type\" must be a string" : "\"source\" must be a string";
        f[(*n)++] = (evs_field){{first[k], strlen(first[k])},
                                {json_string_value(v), json_string_length(v)}};
    }
    json_t *payload = json_object_get(ev, "payload");
    if (payload) {
        char *text = json_dumps(payload, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return "cannot encode payload";
        keep[(*nkeep)++] = text;
        f[(*n)++] = (evs_field){{"payload", 7}, {text, strlen(text)}};
    }
    const char *key;
    json_t *v;
    json_object_foreach(ev, key, v)
    {
        if (!strcmp(key, "source") || !strcmp(key, "type") || !strcmp(key, "payload"))
            continue;
        if (!json_is_string(v))
            return "extra event members must be strings (put structured data in \"payload\")";
        if (*n >= cap)
            return "too many members in an event";
        f[(*n)++] = (evs_field){{key, strlen(key)}, {json_string_value(v), json_string_length(v)}};
    }
    if (*n == 0)
        return "an event needs at least one of \"source\", \"type\", \"payload\"";
    return NULL;
}

json_t *event_json(const evs_entry *e)
{
    json_t *o = json_object();
    json_t *fields = json_object();
    json_object_set_new(o, "id", json_id(e->id));
    json_object_set_new(o, "ts", json_integer((json_int_t)(e->time_us / 1000)));
    for (size_t i = 0; i < e->nfields; i++) {
        const evs_field *f = &e->fields[i];
        bool is_payload = f->name.len == 7 && !memcmp(f->name.ptr, "payload", 7);
        bool is_top = is_payload || (f->name.len == 6 && !memcmp(f->name.ptr, "source", 6)) ||
                      (f->name.len == 4 && !memcmp(f->name.ptr, "type", 4));
        char key[EVS_ID_STRLEN + 512];
        json_t *v = NULL;
        if (is_payload) {
            v = json_loadb(f->value.ptr, f->value.len, JSON_DECODE_ANY, NULL);
            if (!v)
                v = json_bytes(f->value.ptr, f->value.len);
        } else {
            v = json_bytes(f->value.ptr, f->value.len);
        }
        /* member names: jansson needs UTF-8 without NUL */
        json_t *kn = json_bytes(f->name.ptr, f->name.len);
        snprintf(key, sizeof key, "%s", kn ? json_string_value(kn) : "?");
        json_decref(kn);
        json_t *dst = is_top ? o : fields;
        if (!json_object_get(dst, key)) /* the first of repeated names wins, as in the index */
            json_object_set_new(dst, key, v);
        else
            json_decref(v);
    }
    json_object_set_new(o, "fields", fields);
    return o;
}

