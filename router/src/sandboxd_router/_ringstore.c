/* The request record's plain case written in C: `Store.plain` lays out `record.CORE` in the
 * record's slot and then sets the ring's `done`, as `Recorder.write` does in Python.
 *
 * Why C: compiled by mypyc, the plain record cost the router ~2,000 instructions a request
 * (a byte writer's calls, the bytes object it returns, a slice and two stores through the
 * mmap's item assignment); here it is one call whose arguments are copied into the slot. The
 * layout's constants are checked against `record`'s when the store is made (`LAYOUT`), and the
 * Python writer stays for the records with extra fields, for builds without a C compiler and
 * for the tests that compare the two byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <endian.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

enum {
    HEADER = 64,
    SLOT = 256,
    DONE_AT = 16,
    AT_SEQ = 0,
    AT_END = 8,
    AT_DURATION = 16,
    AT_BYTES_IN = 24,
    AT_BYTES_OUT = 32,
    AT_SHAPE = 40,
    SHAPE = 16,
    AT_TP_LEN = 56,
    AT_TP = 57,
    TRACEPARENT = 55,
    AT_TARGET_LEN = 112,
    AT_TARGET = 114,
    PATH = 40,
};

typedef struct {
    PyObject_HEAD
    Py_buffer view; /* the ring, held writable while the store lives (released by `release`) */
    char *ring;     /* NULL once released */
    uint64_t slots;
    double wall;    /* wall-clock time minus the monotonic clock (`Recorder._wall`) */
} Store;

/* little-endian, as `record.CORE` lays them out (one store on x86-64) */
static void put_u64(char *at, uint64_t v) {
    uint64_t le = htole64(v);
    memcpy(at, &le, 8);
}

static void put_f64(char *at, double d) {
    uint64_t v;
    memcpy(&v, &d, 8);
    put_u64(at, v);
}

/* `value`'s bytes as a field of `size` (cut, or padded with zeros) */
static void put_field(char *at, const char *value, Py_ssize_t n, Py_ssize_t size) {
    if (n >= size) {
        memcpy(at, value, (size_t)size);
    } else {
        memcpy(at, value, (size_t)n);
        memset(at + n, 0, (size_t)(size - n));
    }
}

/* An int as the Python writer's `write_i64_le` takes it (the "Q" fields hold numbers below
 * 2**63: the same 8 bytes), or -1 with an error set. */
static int as_u64(PyObject *o, uint64_t *out) {
    long long v = PyLong_AsLongLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    *out = (uint64_t)v;
    return 0;
}

static int Store_init(Store *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"ring", "slots", NULL};
    PyObject *ring;
    unsigned long long slots;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OK", names, &ring, &slots)) return -1;
    if (self->ring != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the store holds a ring already");
        return -1;
    }
    if (slots == 0) {
        PyErr_SetString(PyExc_ValueError, "a ring needs slots");
        return -1;
    }
    if (PyObject_GetBuffer(ring, &self->view, PyBUF_WRITABLE | PyBUF_SIMPLE) < 0) return -1;
    if ((unsigned long long)self->view.len < HEADER + slots * SLOT) {
        PyBuffer_Release(&self->view);
        PyErr_SetString(PyExc_ValueError, "the ring is smaller than its slots");
        return -1;
    }
    self->ring = self->view.buf;
    self->slots = slots;
    return 0;
}

static PyObject *Store_release(Store *self, PyObject *unused) {
    (void)unused;
    if (self->ring != NULL) {
        self->ring = NULL;
        PyBuffer_Release(&self->view);
    }
    Py_RETURN_NONE;
}

static void Store_dealloc(Store *self) {
    Store_release(self, NULL);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* plain(seq, started, bytes_in, bytes_out, shape, traceparent, target): the record of a
 * request with no extra fields, ended now; `started` is its `time.perf_counter()` (the same
 * clock, CLOCK_MONOTONIC, as read here), `shape` its 16 `record.SHAPE` bytes, `traceparent`
 * bytes or None. Then `done` becomes seq + 1. */
static PyObject *Store_plain(Store *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 7) {
        PyErr_SetString(PyExc_TypeError, "plain() takes 7 arguments");
        return NULL;
    }
    if (self->ring == NULL) {
        PyErr_SetString(PyExc_ValueError, "the store was released");
        return NULL;
    }
    uint64_t seq, bytes_in, bytes_out;
    if (as_u64(args[0], &seq) < 0) return NULL;
    double started = PyFloat_AsDouble(args[1]);
    if (started == -1.0 && PyErr_Occurred()) return NULL;
    if (as_u64(args[2], &bytes_in) < 0 || as_u64(args[3], &bytes_out) < 0) return NULL;
    PyObject *shape = args[4], *tp = args[5], *target = args[6];
    if (!PyBytes_CheckExact(shape) || PyBytes_GET_SIZE(shape) != SHAPE) {
        PyErr_SetString(PyExc_TypeError, "shape: 16 bytes");
        return NULL;
    }
    if ((tp != Py_None && !PyBytes_Check(tp)) || !PyBytes_Check(target)) {
        PyErr_SetString(PyExc_TypeError, "traceparent and target: bytes");
        return NULL;
    }
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    /* as time.perf_counter() makes its float: nanoseconds, then seconds */
    double now = (double)((int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9;

    char *slot = self->ring + HEADER + (seq % self->slots) * SLOT;
    put_u64(slot + AT_SEQ, seq);
    put_f64(slot + AT_END, now + self->wall);
    put_f64(slot + AT_DURATION, now - started);
    put_u64(slot + AT_BYTES_IN, bytes_in);
    put_u64(slot + AT_BYTES_OUT, bytes_out);
    memcpy(slot + AT_SHAPE, PyBytes_AS_STRING(shape), SHAPE);
    if (tp == Py_None) {
        memset(slot + AT_TP_LEN, 0, 1 + TRACEPARENT);
    } else {
        Py_ssize_t n = PyBytes_GET_SIZE(tp);
        slot[AT_TP_LEN] = (char)(n < 255 ? n : 255); /* the reader tells a longer one by it */
        put_field(slot + AT_TP, PyBytes_AS_STRING(tp), n, TRACEPARENT);
    }
    Py_ssize_t length = PyBytes_GET_SIZE(target);
    if (length > 0xFFFF) length = 0xFFFF;
    slot[AT_TARGET_LEN] = (char)(length & 0xFF);
    slot[AT_TARGET_LEN + 1] = (char)(length >> 8);
    put_field(slot + AT_TARGET, PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target), PATH);
    /* last, and released: the record is whole before the reader may see it */
    __atomic_store_n((uint64_t *)(self->ring + DONE_AT), seq + 1, __ATOMIC_RELEASE);
    Py_RETURN_NONE;
}

static PyMethodDef Store_methods[] = {
    {"plain", (PyCFunction)(void (*)(void))Store_plain, METH_FASTCALL,
     "Write a plain record into its slot, then set done."},
    {"release", (PyCFunction)Store_release, METH_NOARGS, "Let go of the ring (idempotent)."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Store_members[] = {
    {"wall", T_DOUBLE, offsetof(Store, wall), 0, "wall-clock time minus the monotonic clock"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject StoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "sandboxd_router._ringstore.Store",
    .tp_basicsize = sizeof(Store),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Writes plain request records into a record ring (see record.py).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Store_init,
    .tp_dealloc = (destructor)Store_dealloc,
    .tp_methods = Store_methods,
    .tp_members = Store_members,
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_ringstore", "The request record's plain case, in C.", -1,
    NULL, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ringstore(void) {
    if (PyType_Ready(&StoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    /* what record.py checks before using the store: the layout this file was written for */
    PyObject *layout = Py_BuildValue(
        "(iiiiiiiii)", HEADER, SLOT, DONE_AT, AT_SHAPE, SHAPE, AT_TP_LEN, TRACEPARENT,
        AT_TARGET_LEN, PATH);
    if (layout == NULL || PyModule_AddObject(m, "LAYOUT", layout) < 0) {
        Py_XDECREF(layout);
        Py_DECREF(m);
        return NULL;
    }
    Py_INCREF(&StoreType);
    if (PyModule_AddObject(m, "Store", (PyObject *)&StoreType) < 0) {
        Py_DECREF(&StoreType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
