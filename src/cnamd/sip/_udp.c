/* The UDP listener's receive/answer/send loop, in C, with recvmmsg and sendmmsg.
 *
 * Why C and not uvloop's datagram transport: per datagram, uvloop makes one
 * recvmsg and one sendmsg syscall, converts the source address to a new
 * (host, port) tuple, runs the protocol callback inside a contextvars
 * context, and converts the address back on sendto. Measured on the
 * Kamailio anchor (bench/README.md), that is ~10 us of a dip's CPU where a C
 * responder spends none. libuv can batch with recvmmsg but uvloop does not
 * expose it. Here a burst of datagrams costs one recvmmsg and one sendmmsg,
 * a repeated source address reuses one tuple, and an answer to the source
 * goes back to the raw address it came from.
 *
 * pump(fd, answer, fallback_send, budget) reads up to `budget` datagrams from
 * the non-blocking socket `fd` and for each calls answer(data, (host, port)),
 * which returns None or (response, (host, port)). Responses to the source
 * are sent in one sendmmsg per batch; one for another destination goes
 * through fallback_send(response, destination) (rare: a Via port that
 * differs from the source port without rport). It returns (datagrams read,
 * answers the kernel refused to send). An exception from a callback stops
 * the pump and propagates, after the batch's earlier answers are sent.
 */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <linux/filter.h>

#define VLEN 32
#define DATAGRAM_MAX 65536

static char buffers[VLEN][DATAGRAM_MAX];
static struct sockaddr_storage sources[VLEN];
static struct mmsghdr in_msgs[VLEN], out_msgs[VLEN];
static struct iovec in_iov[VLEN], out_iov[VLEN];
static PyObject *out_refs[VLEN];

/* The last source seen and its (host, port) tuple: a burst usually has one source. */
static struct sockaddr_storage last_addr;
static socklen_t last_len;
static PyObject *last_tuple;

static PyObject *address_tuple(const struct sockaddr_storage *addr, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    int port;
    if (last_tuple != NULL && len == last_len && memcmp(addr, &last_addr, len) == 0) {
        Py_INCREF(last_tuple);
        return last_tuple;
    }
    if (addr->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)addr;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (addr->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)addr;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    } else {
        host[0] = 0;
        port = 0;
    }
    Py_XDECREF(last_tuple);
    last_tuple = Py_BuildValue("(si)", host, port);
    if (last_tuple == NULL)
        return NULL;
    memcpy(&last_addr, addr, len);
    last_len = len;
    Py_INCREF(last_tuple);
    return last_tuple;
}

/* Send out_msgs[0..count): each refused one is skipped and counted. */
static Py_ssize_t send_all(int fd, int count)
{
    Py_ssize_t refused = 0;
    int sent = 0, i;
    while (sent < count) {
        /* non-blocking and brief: the GIL stays held, so the static arrays are never shared */
        int r = sendmmsg(fd, out_msgs + sent, (unsigned int)(count - sent), MSG_DONTWAIT);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            refused++; /* send buffer full, or this destination unreachable: drop it */
            sent++;
        } else {
            sent += r;
        }
    }
    for (i = 0; i < count; i++)
        Py_CLEAR(out_refs[i]);
    return refused;
}

/* Answer datagram i: queue an answer to its source as out_msgs[*outs], send one for
 * elsewhere through `fallback`. -1 with a Python exception set when a callback fails. */
static int answer_one(int i, PyObject *answer, PyObject *fallback, int *outs)
{
    PyObject *data, *source, *result = NULL, *response, *destination;
    int status = -1, to_source;

    data = PyBytes_FromStringAndSize(buffers[i], (Py_ssize_t)in_msgs[i].msg_len);
    source = data ? address_tuple(&sources[i], in_msgs[i].msg_hdr.msg_namelen) : NULL;
    result = source ? PyObject_CallFunctionObjArgs(answer, data, source, NULL) : NULL;
    Py_XDECREF(data);
    if (result == NULL)
        goto done;
    if (result == Py_None) {
        status = 0;
        goto done;
    }
    if (!PyTuple_Check(result) || PyTuple_GET_SIZE(result) != 2
        || !PyBytes_Check(PyTuple_GET_ITEM(result, 0))) {
        PyErr_SetString(PyExc_TypeError, "answer() must return None or (bytes, address)");
        goto done;
    }
    response = PyTuple_GET_ITEM(result, 0);
    destination = PyTuple_GET_ITEM(result, 1);
    /* compiled callers rebuild the tuple (mypyc unboxes it): compare by value */
    to_source = destination == source ? 1 : PyObject_RichCompareBool(destination, source, Py_EQ);
    if (to_source < 0)
        goto done;
    if (to_source) {
        int k = (*outs)++;
        Py_INCREF(response);
        out_refs[k] = response;
        out_iov[k].iov_base = PyBytes_AS_STRING(response);
        out_iov[k].iov_len = (size_t)PyBytes_GET_SIZE(response);
        memset(&out_msgs[k].msg_hdr, 0, sizeof out_msgs[k].msg_hdr);
        out_msgs[k].msg_hdr.msg_iov = &out_iov[k];
        out_msgs[k].msg_hdr.msg_iovlen = 1;
        out_msgs[k].msg_hdr.msg_name = &sources[i];
        out_msgs[k].msg_hdr.msg_namelen = in_msgs[i].msg_hdr.msg_namelen;
    } else {
        PyObject *r = PyObject_CallFunctionObjArgs(fallback, response, destination, NULL);
        if (r == NULL)
            goto done;
        Py_DECREF(r);
    }
    status = 0;
done:
    Py_XDECREF(result);
    Py_XDECREF(source);
    return status;
}

PyDoc_STRVAR(pump_doc,
"pump(fd, answer, fallback_send, budget) -> (read, refused)\n\n"
"Read up to `budget` datagrams, answer each through `answer`, send the\n"
"answers in batches (see _udp.c).");

static PyObject *pump(PyObject *self, PyObject *args)
{
    int fd, budget, i;
    PyObject *answer, *fallback;
    Py_ssize_t total = 0, refused = 0;
    (void)self;

    if (!PyArg_ParseTuple(args, "iOOi:pump", &fd, &answer, &fallback, &budget))
        return NULL;
    while (total < budget) {
        int want = budget - total < VLEN ? (int)(budget - total) : VLEN, got, outs = 0;
        for (i = 0; i < want; i++) {
            in_iov[i].iov_base = buffers[i];
            in_iov[i].iov_len = DATAGRAM_MAX;
            memset(&in_msgs[i].msg_hdr, 0, sizeof in_msgs[i].msg_hdr);
            in_msgs[i].msg_hdr.msg_iov = &in_iov[i];
            in_msgs[i].msg_hdr.msg_iovlen = 1;
            in_msgs[i].msg_hdr.msg_name = &sources[i];
            in_msgs[i].msg_hdr.msg_namelen = sizeof sources[i];
        }
        got = recvmmsg(fd, in_msgs, (unsigned int)want, MSG_DONTWAIT, NULL);
        if (got <= 0) {
            if (got < 0 && errno == EINTR)
                continue;
            break; /* drained (EAGAIN), or an ICMP error queued by an earlier answer */
        }
        total += got;
        for (i = 0; i < got; i++) {
            if (answer_one(i, answer, fallback, &outs) < 0) {
                send_all(fd, outs); /* the batch's earlier answers still go out */
                return NULL;
            }
        }
        refused += send_all(fd, outs);
        if (got < want)
            break; /* the socket is drained */
    }
    return Py_BuildValue("(nn)", total, refused);
}

PyDoc_STRVAR(steer_randomly_doc,
"steer_randomly(fd, n)\n\n"
"Attach to the SO_REUSEPORT group of `fd` a classic BPF program that sends\n"
"each datagram to the group's socket number random() % n: one busy source\n"
"spreads over every worker, and only the worker whose socket got the\n"
"datagram wakes (a socket all workers poll wakes them all). OSError if the\n"
"kernel refuses.");

static PyObject *steer_randomly(PyObject *self, PyObject *args)
{
    int fd, n;
    (void)self;
    if (!PyArg_ParseTuple(args, "ii:steer_randomly", &fd, &n))
        return NULL;
    if (n < 1) {
        PyErr_SetString(PyExc_ValueError, "n must be >= 1");
        return NULL;
    }
#ifdef SO_ATTACH_REUSEPORT_CBPF
    {
        struct sock_filter code[] = {
            {BPF_LD | BPF_W | BPF_ABS, 0, 0, (unsigned int)(SKF_AD_OFF + SKF_AD_RANDOM)},
            {BPF_ALU | BPF_MOD | BPF_K, 0, 0, (unsigned int)n},
            {BPF_RET | BPF_A, 0, 0, 0},
        };
        struct sock_fprog program = {(unsigned short)(sizeof code / sizeof code[0]), code};
        if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &program, sizeof program) != 0)
            return PyErr_SetFromErrno(PyExc_OSError);
    }
    Py_RETURN_NONE;
#else
    errno = ENOPROTOOPT;
    return PyErr_SetFromErrno(PyExc_OSError);
#endif
}

static PyMethodDef methods[] = {
    {"pump", pump, METH_VARARGS, pump_doc},
    {"steer_randomly", steer_randomly, METH_VARARGS, steer_randomly_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "cnamd.sip._udp", "The UDP listener's batched loop.", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__udp(void) { return PyModule_Create(&module); }
