/*
 * json.c — JSON string output. Field names and values are binary-safe bytes; JSON strings are
 * Unicode, so valid UTF-8 passes through, control characters are escaped, and each byte of an
 * invalid UTF-8 sequence is written as \u00XX (its Latin-1 reading: lossy, documented).
 */
#include "cli.h"

static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    unsigned min;
    if (c >= 0xc2 && c <= 0xdf) { len = 2; min = 0x80; }
    else if (c >= 0xe0 && c <= 0xef) { len = 3; min = 0x800; }
    else if (c >= 0xf0 && c <= 0xf4) { len = 4; min = 0x10000; }
    else return 0;
    if (n < len)
        return 0;
    unsigned cp = c & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

void json_str(FILE *f, const void *data, size_t len)
{
    const unsigned char *p = data;
    fputc('"', f);
    for (size_t i = 0; i < len;) {
        unsigned char c = p[i];
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            i++;
        } else if (c == '\n') { fputs("\\n", f); i++; }
        else if (c == '\r') { fputs("\\r", f); i++; }
        else if (c == '\t') { fputs("\\t", f); i++; }
        else if (c < 0x20 || c == 0x7f) { fprintf(f, "\\u%04x", c); i++; }
        else if (c < 0x80) { fputc(c, f); i++; }
        else {
            size_t l = utf8_len(p + i, len - i);
            if (l) {
                fwrite(p + i, 1, l, f);
                i += l;
            } else {
                fprintf(f, "\\u%04x", c);
                i++;
            }
        }
    }
    fputc('"', f);
}
