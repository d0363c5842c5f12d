/* The SIP parser's fast path, in C: one pass over a request of the common shape.
 *
 * Why C: parse_request() compiled with mypyc still takes ~8 us for a plain
 * INVITE (a split per line, a dict probe per header, a regex for the Via), and
 * a dip's whole budget is ~30 us (bench/README.md). No maintained library
 * parses SIP at this speed for Python (aiosipua's parser measured 60-68 us per
 * dip in the Kamailio anchor's README), so this stays small instead.
 *
 * Contract: scan(data) returns the same fields message._parse() would produce
 * for `data`, or None whenever the message is outside the common shape: then
 * the Python parser reads it and decides. So this file never judges a message
 * invalid; it only recognises plain valid ones, conservatively:
 *   - a CRLF CRLF ends the header section; no other control byte, no TAB, no
 *     byte >= 0x7f in it; no folded line;
 *   - "METHOD sip:... SIP/2.0" with a known method and a plain sip: URI;
 *   - header names are tokens; From, To, Call-ID, CSeq and at least one Via
 *     present; no known header other than Via repeated; no Date header;
 *   - the top Via is "SIP/2.0/TRANSPORT host[:port][;param]*" without rport,
 *     received or maddr (message._VIA_FAST's shape);
 *   - From and To are name-addrs ("<uri>" with an optional plain display name)
 *     whose parameters hold no comma;
 *   - CSeq is "digits SP METHOD" of the request's own method;
 *   - Max-Forwards and Content-Length, when present, are plain valid numbers,
 *     and Content-Length does not exceed the body.
 * tests/sip/test_scan.py holds it to the Python parser, field by field, on the
 * RFC 4475 messages and on hypothesis' mutations of real requests.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdarg.h>
#include <string.h>

/* Header slots: must match message.py. */
enum { FROM, TO, CALL_ID, CSEQ, MAX_FORWARDS, CONTENT_LENGTH, DATE,
       PAI, RPID, PRIVACY, REQUIRE, CONTACT, NSLOTS };
#define SLOT_VIA (-2)
#define SLOT_SKIP (-1)

typedef struct { const char *p; Py_ssize_t n; } span;

static int is_token_char(unsigned char c)
{
    /* RFC 3261 §25.1 token: alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~" */
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
        return 1;
    return c != 0 && strchr("-.!%*_+`'~", c) != NULL;
}

static int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }

static int eq_nocase(const char *p, Py_ssize_t n, const char *lower)
{
    Py_ssize_t i;
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 'A' && c <= 'Z')
            c += 32;
        if (lower[i] == 0 || c != (unsigned char)lower[i])
            return 0;
    }
    return lower[n] == 0;
}

static int header_slot(const char *p, Py_ssize_t n)
{
    switch (n) {
    case 1:
        switch (p[0] | 0x20) {
        case 'v': return SLOT_VIA;
        case 'f': return FROM;
        case 't': return TO;
        case 'i': return CALL_ID;
        case 'l': return CONTENT_LENGTH;
        case 'm': return CONTACT;
        }
        return SLOT_SKIP;
    case 2: return eq_nocase(p, n, "to") ? TO : SLOT_SKIP;
    case 3: return eq_nocase(p, n, "via") ? SLOT_VIA : SLOT_SKIP;
    case 4:
        if (eq_nocase(p, n, "from")) return FROM;
        if (eq_nocase(p, n, "cseq")) return CSEQ;
        if (eq_nocase(p, n, "date")) return DATE;
        return SLOT_SKIP;
    case 7:
        if (eq_nocase(p, n, "call-id")) return CALL_ID;
        if (eq_nocase(p, n, "privacy")) return PRIVACY;
        if (eq_nocase(p, n, "require")) return REQUIRE;
        if (eq_nocase(p, n, "contact")) return CONTACT;
        return SLOT_SKIP;
    case 12: return eq_nocase(p, n, "max-forwards") ? MAX_FORWARDS : SLOT_SKIP;
    case 14: return eq_nocase(p, n, "content-length") ? CONTENT_LENGTH : SLOT_SKIP;
    case 15: return eq_nocase(p, n, "remote-party-id") ? RPID : SLOT_SKIP;
    case 19: return eq_nocase(p, n, "p-asserted-identity") ? PAI : SLOT_SKIP;
    }
    return SLOT_SKIP;
}

static span strip_spaces(const char *p, Py_ssize_t n)
{
    span s;
    while (n > 0 && p[0] == ' ') { p++; n--; }
    while (n > 0 && p[n - 1] == ' ') n--;
    s.p = p;
    s.n = n;
    return s;
}

/* A plain decimal of 1..10 digits, or -1. */
static long long number(span s)
{
    long long v = 0;
    Py_ssize_t i;
    if (s.n < 1 || s.n > 10)
        return -1;
    for (i = 0; i < s.n; i++) {
        if (!is_digit((unsigned char)s.p[i]))
            return -1;
        v = v * 10 + (s.p[i] - '0');
    }
    return v;
}

/* "rport", "received" or "maddr" (any case) followed by a non-word byte or the end. */
static int rewritten_param(const char *p, Py_ssize_t n)
{
    static const char *names[] = {"rport", "received", "maddr"};
    size_t k;
    for (k = 0; k < 3; k++) {
        Py_ssize_t len = (Py_ssize_t)strlen(names[k]);
        if (n >= len && eq_nocase(p, len, names[k])) {
            unsigned char c = n > len ? (unsigned char)p[len] : 0;
            int word = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || is_digit(c) || c == '_';
            if (!word)
                return 1;
        }
    }
    return 0;
}

/* message._VIA_FAST: fills transport, host and port (0 when absent); 0 if not that shape. */
static int scan_via(span v, span *transport, span *host, long *port)
{
    const char *p = v.p, *end = v.p + v.n, *q;
    if (v.n < 9 || memcmp(p, "SIP/2.0/", 8) != 0)
        return 0;
    p += 8;
    q = p;
    while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
        p++;
    if (p == q || p >= end || *p != ' ')
        return 0;
    transport->p = q;
    transport->n = p - q;
    q = ++p;
    while (p < end && ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || is_digit((unsigned char)*p)
                       || *p == '.' || *p == '-' || *p == '_'))
        p++;
    if (p == q)
        return 0;
    host->p = q;
    host->n = p - q;
    *port = 0;
    if (p < end && *p == ':') {
        span digits;
        long long value;
        q = ++p;
        while (p < end && is_digit((unsigned char)*p))
            p++;
        digits.p = q;
        digits.n = p - q;
        if (digits.n > 5)
            return 0;
        value = number(digits);
        if (value <= 0 || value >= 65536)
            return 0;
        *port = (long)value;
    }
    while (p < end) {
        if (*p != ';')
            return 0;
        q = ++p;
        while (p < end && *p != ';' && *p != ',' && *p != ' ')
            p++;
        if (p == q || rewritten_param(q, p - q))
            return 0;
    }
    return 1;
}

/* message.parse_name_addr for "<uri>params" and "display <uri>params"; 0 if not that shape. */
static int scan_name_addr(span v, span *display, span *uri, span *params)
{
    const char *p = v.p, *end = v.p + v.n, *lt, *gt;
    Py_ssize_t i;
    if (v.n == 0)
        return 0;
    if (*p == '<') {
        lt = p;
        display->p = p;
        display->n = 0;
    } else if (*p == '"') {
        const char *q = memchr(p + 1, '"', (size_t)(end - p - 1));
        if (q == NULL || memchr(p + 1, '\\', (size_t)(q - p - 1)) != NULL)
            return 0;
        lt = q + 1;
        while (lt < end && *lt == ' ')
            lt++;
        if (lt >= end || *lt != '<')
            return 0;
        display->p = p;
        display->n = q + 1 - p;
    } else {
        const char *d;
        lt = memchr(p, '<', (size_t)(end - p));
        if (lt == NULL)
            return 0;
        d = lt;
        while (d > p && d[-1] == ' ')
            d--;
        for (i = 0; i < d - p; i++)
            if (!is_token_char((unsigned char)p[i]) && p[i] != ' ')
                return 0;
        display->p = p;
        display->n = d - p;
    }
    gt = memchr(lt, '>', (size_t)(end - lt));
    if (gt == NULL || gt == lt + 1 || lt[1] == ' ' || gt[-1] == ' ')
        return 0;
    uri->p = lt + 1;
    uri->n = gt - lt - 1;
    *params = strip_spaces(gt + 1, end - gt - 1);
    if (params->n && (params->p[0] != ';' || memchr(params->p, ',', (size_t)params->n) != NULL))
        return 0;
    return 1;
}

static PyObject *bytes_of(span s) { return PyBytes_FromStringAndSize(s.p, s.n); }

/* A tuple of n new references, which it steals; NULL (every one released) if any is
 * NULL. Py_BuildValue would parse its format string on every call: ~0.5 us a message. */
static PyObject *steal_tuple(Py_ssize_t n, ...)
{
    va_list ap;
    PyObject *tuple = PyTuple_New(n);
    int failed = tuple == NULL;
    Py_ssize_t i;
    va_start(ap, n);
    for (i = 0; i < n; i++) {
        PyObject *item = va_arg(ap, PyObject *);
        failed |= item == NULL;
        if (failed)
            Py_XDECREF(item);
        else
            PyTuple_SET_ITEM(tuple, i, item);
    }
    va_end(ap);
    if (failed) {
        Py_XDECREF(tuple); /* its unset slots are NULL, which tuple deallocation skips */
        return NULL;
    }
    return tuple;
}

static PyObject *name_addr_tuple(span display, span uri, span params)
{
    return steal_tuple(3, bytes_of(display), bytes_of(uri), bytes_of(params));
}

static const char *const METHODS[] = {"INVITE", "ACK", "CANCEL", "OPTIONS", "BYE", "REGISTER"};

PyDoc_STRVAR(scan_doc,
"scan(data) -> tuple | None\n\n"
"The common-shape fast path of message.parse_request: (method, uri, vias,\n"
"(transport, host, port), headers, from (display, uri, params), to (...),\n"
"max_forwards, body), or None to let the Python parser read the message.");

/* scan(), or with check_only its verdict alone: True (common shape) or None, building nothing. */
static PyObject *scan_message(PyObject *arg, int check_only)
{
    const char *data, *end, *head_end, *line, *eol, *p;
    Py_ssize_t size, i;
    span values[NSLOTS], vias[32], method = {0}, uri = {0}, transport, host, fd, fu, fp, td, tu, tp;
    int seen[NSLOTS] = {0}, nvias = 0;
    long port;
    long long max_forwards = -1, cseq_number;
    span body;
    PyObject *via_list = NULL, *header_list = NULL, *result = NULL;

    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "scan() takes bytes");
        return NULL;
    }
    data = PyBytes_AS_STRING(arg);
    size = PyBytes_GET_SIZE(arg);
    end = data + size;
    head_end = NULL;
    for (p = data; p + 3 < end; p++) {
        unsigned char c = (unsigned char)*p;
        if (c == '\r') {
            if (p[1] != '\n')
                Py_RETURN_NONE;
            if (p[2] == '\r' && p[3] == '\n') {
                head_end = p;
                break;
            }
            p++; /* skip the LF */
        } else if (c < 0x20 || c >= 0x7f) {
            Py_RETURN_NONE; /* bare LF, TAB, other controls, non-ASCII: the Python parser decides */
        }
    }
    if (head_end == NULL)
        Py_RETURN_NONE;

    /* Start line. */
    eol = memchr(data, '\r', (size_t)(head_end + 2 - data));
    line = data;
    p = memchr(line, ' ', (size_t)(eol - line));
    if (p == NULL)
        Py_RETURN_NONE;
    method.p = line;
    method.n = p - line;
    for (i = 0; i < 6; i++)
        if ((Py_ssize_t)strlen(METHODS[i]) == method.n && memcmp(METHODS[i], line, (size_t)method.n) == 0)
            break;
    if (i == 6)
        Py_RETURN_NONE;
    uri.p = p + 1;
    p = memchr(uri.p, ' ', (size_t)(eol - uri.p));
    if (p == NULL)
        Py_RETURN_NONE;
    uri.n = p - uri.p;
    if (eol - p - 1 != 7 || memcmp(p + 1, "SIP/2.0", 7) != 0)
        Py_RETURN_NONE;
    if (uri.n < 5 || memcmp(uri.p, "sip:", 4) != 0)
        Py_RETURN_NONE;
    for (i = 0; i < uri.n; i++) {
        unsigned char c = (unsigned char)uri.p[i];
        if (c <= ' ' || c == '"' || c == '<' || c == '>' || c == '?')
            Py_RETURN_NONE;
    }

    /* Header lines. */
    while (eol < head_end) {
        const char *colon, *name_end;
        int slot;
        line = eol + 2;
        eol = memchr(line, '\r', (size_t)(head_end + 2 - line));
        colon = memchr(line, ':', (size_t)(eol - line));
        if (colon == NULL || colon == line)
            Py_RETURN_NONE;
        for (name_end = line; name_end < colon; name_end++)
            if (!is_token_char((unsigned char)*name_end))
                Py_RETURN_NONE; /* also a folded line: it starts with a space */
        slot = header_slot(line, colon - line);
        if (slot == SLOT_SKIP)
            continue;
        if (slot == SLOT_VIA) {
            if (nvias == 32)
                Py_RETURN_NONE;
            vias[nvias++] = strip_spaces(colon + 1, eol - colon - 1);
            continue;
        }
        if (seen[slot] || slot == DATE)
            Py_RETURN_NONE;
        seen[slot] = 1;
        values[slot] = strip_spaces(colon + 1, eol - colon - 1);
    }
    if (nvias == 0 || !seen[FROM] || !seen[TO] || !seen[CALL_ID] || !seen[CSEQ])
        Py_RETURN_NONE;
    if (!scan_via(vias[0], &transport, &host, &port))
        Py_RETURN_NONE;
    if (!scan_name_addr(values[FROM], &fd, &fu, &fp) || !scan_name_addr(values[TO], &td, &tu, &tp))
        Py_RETURN_NONE;
    /* CSeq: digits SP method */
    p = memchr(values[CSEQ].p, ' ', (size_t)values[CSEQ].n);
    if (p == NULL)
        Py_RETURN_NONE;
    {
        span digits = {values[CSEQ].p, p - values[CSEQ].p};
        cseq_number = number(digits);
        if (cseq_number < 0 || cseq_number >= 2147483648LL)
            Py_RETURN_NONE;
        if (values[CSEQ].p + values[CSEQ].n - p - 1 != method.n || memcmp(p + 1, method.p, (size_t)method.n) != 0)
            Py_RETURN_NONE;
    }
    if (seen[MAX_FORWARDS]) {
        max_forwards = number(values[MAX_FORWARDS]);
        if (max_forwards < 0 || max_forwards > 255)
            Py_RETURN_NONE;
    }
    body.p = head_end + 4;
    body.n = end - body.p;
    if (seen[CONTENT_LENGTH]) {
        long long length = number(values[CONTENT_LENGTH]);
        if (length < 0 || length > body.n)
            Py_RETURN_NONE;
        body.n = (Py_ssize_t)length; /* the rest of a datagram is discarded (RFC 3261 §18.3) */
    }
    if (seen[CONTACT] && memchr(values[CONTACT].p, '<', (size_t)values[CONTACT].n) == NULL
        && memchr(values[CONTACT].p, '?', (size_t)values[CONTACT].n) != NULL)
        Py_RETURN_NONE;
    if (check_only)
        Py_RETURN_TRUE;

    via_list = PyList_New(nvias);
    header_list = PyList_New(NSLOTS);
    if (via_list == NULL || header_list == NULL)
        goto done;
    for (i = 0; i < nvias; i++) {
        PyObject *v = bytes_of(vias[i]);
        if (v == NULL)
            goto done;
        PyList_SET_ITEM(via_list, i, v);
    }
    for (i = 0; i < NSLOTS; i++) {
        PyObject *v;
        if (seen[i]) {
            v = bytes_of(values[i]);
            if (v == NULL)
                goto done;
        } else {
            v = Py_None;
            Py_INCREF(v);
        }
        PyList_SET_ITEM(header_list, i, v);
    }
    {
        /* Upper-cased as it is copied into a new object. Never in place after
         * bytes_of(): for one byte PyBytes_FromStringAndSize(p, 1) returns CPython's
         * shared single-byte object, and writing to it changed that byte in every
         * bytes object of the process (b"p" became b"P"). With a NULL source the
         * object is always new (the empty one is not written to). */
        PyObject *transport_obj = PyBytes_FromStringAndSize(NULL, transport.n), *from_obj, *to_obj;
        if (transport_obj == NULL)
            goto done;
        {
            char *t = PyBytes_AS_STRING(transport_obj);
            for (i = 0; i < transport.n; i++) {
                char c = transport.p[i];
                t[i] = (char)(c >= 'a' && c <= 'z' ? c - 32 : c);
            }
        }
        from_obj = name_addr_tuple(fd, fu, fp);
        to_obj = name_addr_tuple(td, tu, tp);
        Py_INCREF(via_list);
        Py_INCREF(header_list);
        result = steal_tuple(9, bytes_of(method), bytes_of(uri), via_list,
                             steal_tuple(3, transport_obj, bytes_of(host), PyLong_FromLong(port)),
                             header_list, from_obj, to_obj, PyLong_FromLongLong(max_forwards),
                             bytes_of(body));
    }
done:
    Py_XDECREF(via_list);
    Py_XDECREF(header_list);
    return result;
}

static PyObject *scan(PyObject *self, PyObject *arg)
{
    (void)self;
    return scan_message(arg, 0);
}

PyDoc_STRVAR(common_shape_doc,
"common_shape(data) -> True | None\n\n"
"True where scan(data) would return its tuple, without building it: a valid\n"
"message the fast path reads (the dip only counts a well-formed ACK).");

static PyObject *common_shape(PyObject *self, PyObject *arg)
{
    (void)self;
    return scan_message(arg, 1);
}

PyDoc_STRVAR(content_length_doc,
"content_length(head) -> int\n\n"
"message.stream_content_length() for a header block without folded lines:\n"
"the Content-Length, 0 when absent, -1 when invalid or repeated; -2 when a\n"
"line is folded (the Python version unfolds and reads it).");

static PyObject *content_length(PyObject *self, PyObject *arg)
{
    const char *head, *end, *line, *crlf;
    long long found = -2;
    (void)self;
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "content_length() takes bytes");
        return NULL;
    }
    head = PyBytes_AS_STRING(arg);
    end = head + PyBytes_GET_SIZE(arg);
    if (memmem(head, (size_t)(end - head), "\r\n ", 3) || memmem(head, (size_t)(end - head), "\r\n\t", 3))
        return PyLong_FromLong(-2);
    /* Lines as bytes.split(b"\r\n") cuts them; the start line is skipped. */
    crlf = memmem(head, (size_t)(end - head), "\r\n", 2);
    while (crlf != NULL) {
        const char *colon, *n, *v, *v_end;
        long long value = 0;
        line = crlf + 2;
        crlf = memmem(line, (size_t)(end - line), "\r\n", 2);
        v_end = crlf != NULL ? crlf : end;
        if (line >= v_end || ((*line | 0x20) != 'l' && (*line | 0x20) != 'c'))
            continue;
        colon = memchr(line, ':', (size_t)(v_end - line));
        if (colon == NULL)
            continue;
        n = colon;
        while (n > line && (n[-1] == ' ' || n[-1] == '\t'))
            n--;
        if (!(n - line == 1 && (*line | 0x20) == 'l')
            && !(n - line == 14 && strncasecmp(line, "content-length", 14) == 0))
            continue;
        v = colon + 1;
        while (v < v_end && (*v == ' ' || *v == '\t'))
            v++;
        while (v_end > v && (v_end[-1] == ' ' || v_end[-1] == '\t'))
            v_end--;
        if (found != -2 || v_end == v || v_end - v > 10)
            return PyLong_FromLong(-1);
        for (; v < v_end; v++) {
            if (*v < '0' || *v > '9')
                return PyLong_FromLong(-1);
            value = value * 10 + (*v - '0');
        }
        found = value;
    }
    return PyLong_FromLongLong(found == -2 ? 0 : found);
}

static PyMethodDef methods[] = {
    {"scan", scan, METH_O, scan_doc},
    {"common_shape", common_shape, METH_O, common_shape_doc},
    {"content_length", content_length, METH_O, content_length_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd.sip._scan", "The SIP parser's C fast path.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__scan(void) { return PyModule_Create(&module); }
