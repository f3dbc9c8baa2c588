/* The compiled stack reader: other threads' stacks as frame identifiers.
 *
 * It walks the interpreter's own frame records of the threads asked for, with
 * the GIL held and without making a single Python object while it walks: no
 * frame object (CPython 3.11 and later make those lazily, and on 3.11 making
 * one can start a garbage collection whose finalizers hand the GIL to the
 * thread being read, see _threads.py), no allocation of any kind, no Python
 * code.  So no other thread can run, return from a frame or free it meanwhile.
 * Only once every frame is copied out -- each code object with a strong
 * reference and its instruction offset, into memory of our own -- are
 * identifiers made; then nothing points into another thread's frames.
 *
 * Identifiers come from a table keyed by (code object, instruction offset)
 * that holds a strong reference to both the code object and its identifier,
 * so a code object's address cannot be reused while it is a key, and a hit
 * needs no line-table look-up.  A miss finds the line and calls the Python
 * factory set by set_identifier_factory(): the one definition of an
 * identifier stays in session.py.
 *
 * Thread states are walked as sys._current_frames() walks them, holding the
 * GIL; a thread state is unlinked only by a thread that holds the GIL, and one
 * linked without it (PyGILState_Ensure on a new C thread) is put at the head,
 * whole, before the head points to it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define Py_BUILD_CORE 1
#if PY_VERSION_HEX >= 0x030B0000
#  include "internal/pycore_frame.h"
#else
#  include <frameobject.h>
#endif
/* The collector's state, for young_gc_room().  Python.h, included as an extension's,
 * defines _PyGC_FINALIZED as a macro, which the internal headers define again. */
#undef _PyGC_FINALIZED
#include "internal/pycore_interp.h"
#undef Py_BUILD_CORE

#ifdef Py_GIL_DISABLED
#  error "The compiled stack reader is not for free-threaded builds: there the sampler is off."
#endif

/* -- the frames copied out of a thread's stack ------------------------------------ */

typedef struct {
    PyCodeObject *code; /* strong reference */
    int offset;         /* byte offset of the instruction, for PyCode_Addr2Line */
} Copied;

typedef struct {
    Copied *items;
    Py_ssize_t count;
    Py_ssize_t capacity;
    int owned; /* the code objects are strong references (copied_own) */
} CopiedFrames;

/* Raw allocation: it makes no Python object and cannot start a collection. */
static int
copied_push(CopiedFrames *frames, PyCodeObject *code, int offset)
{
    if (frames->count == frames->capacity) {
        Py_ssize_t capacity = frames->capacity ? frames->capacity * 2 : 64;
        Copied *items = PyMem_RawRealloc(frames->items, (size_t)capacity * sizeof(Copied));
        if (items == NULL) {
            return -1;
        }
        frames->items = items;
        frames->capacity = capacity;
    }
    if (frames->owned) {
        Py_INCREF(code);
    }
    frames->items[frames->count].code = code;
    frames->items[frames->count].offset = offset;
    frames->count++;
    return 0;
}

/* Take a strong reference to every code object copied so far, and to those copied
 * from now on. Until then the copies borrow: valid only while no Python code runs
 * and nothing is allocated (the frames' threads cannot run meanwhile). */
static void
copied_own(CopiedFrames *frames)
{
    if (!frames->owned) {
        for (Py_ssize_t i = 0; i < frames->count; i++) {
            Py_INCREF(frames->items[i].code);
        }
        frames->owned = 1;
    }
}

static void
copied_release(CopiedFrames *frames)
{
    if (frames->owned) {
        for (Py_ssize_t i = 0; i < frames->count; i++) {
            Py_DECREF(frames->items[i].code);
        }
    }
    frames->count = 0;
    frames->owned = 0;
}

static int
copied_equal(CopiedFrames *a, CopiedFrames *b)
{
    if (a->count != b->count) {
        return 0;
    }
    for (Py_ssize_t i = 0; i < a->count; i++) {
        if (a->items[i].code != b->items[i].code || a->items[i].offset != b->items[i].offset) {
            return 0;
        }
    }
    return 1;
}

/* -- walking, per CPython version ------------------------------------------------- */

#if PY_VERSION_HEX >= 0x030B0000
typedef _PyInterpreterFrame WalkFrame;

static PyCodeObject *
frame_code(WalkFrame *frame)
{
#  if PY_VERSION_HEX >= 0x030D0000
    PyObject *executable = frame->f_executable;
    return (executable != NULL && PyCode_Check(executable)) ? (PyCodeObject *)executable : NULL;
#  else
    return frame->f_code;
#  endif
}

/* The frames sys._current_frames() and f_back would show: no C-stack shims, none
 * that has not started its first instruction. */
static int
frame_is_shown(WalkFrame *frame)
{
#  if PY_VERSION_HEX >= 0x030C0000
    if (frame->owner == FRAME_OWNED_BY_CSTACK) {
        return 0;
    }
#  endif
    if (frame_code(frame) == NULL) {
        return 0;
    }
    return !_PyFrame_IsIncomplete(frame);
}

static WalkFrame *
thread_top(PyThreadState *tstate)
{
#  if PY_VERSION_HEX >= 0x030D0000
    return tstate->current_frame;
#  else
    return tstate->cframe != NULL ? tstate->cframe->current_frame : NULL;
#  endif
}

static WalkFrame *
frame_object_record(PyFrameObject *frame)
{
    return frame->f_frame;
}

static int
copy_frames(WalkFrame *frame, CopiedFrames *out, Py_ssize_t limit)
{
    for (; frame != NULL && out->count < limit; frame = frame->previous) {
        if (!frame_is_shown(frame)) {
            continue;
        }
        int offset = _PyInterpreterFrame_LASTI(frame) * (int)sizeof(_Py_CODEUNIT);
        if (copied_push(out, frame_code(frame), offset) < 0) {
            return -1;
        }
    }
    return 0;
}
#else /* 3.10: every frame is a frame object already; walking one makes nothing. */
typedef PyFrameObject WalkFrame;

static WalkFrame *
thread_top(PyThreadState *tstate)
{
    return tstate->frame;
}

static WalkFrame *
frame_object_record(PyFrameObject *frame)
{
    return frame;
}

static int
copy_frames(WalkFrame *frame, CopiedFrames *out, Py_ssize_t limit)
{
    for (; frame != NULL && out->count < limit; frame = frame->f_back) {
        /* f_lasti counts code units (two bytes) on 3.10; -1 before the first. */
        int offset = frame->f_lasti < 0 ? -1 : frame->f_lasti * (int)sizeof(_Py_CODEUNIT);
        if (copied_push(out, frame->f_code, offset) < 0) {
            return -1;
        }
    }
    return 0;
}
#endif

/* -- identifiers by (code, offset) ------------------------------------------------- */

typedef struct {
    PyCodeObject *code; /* strong reference; NULL: empty slot */
    int offset;
    PyObject *identifier; /* strong reference */
} Slot;

#define TABLE_SIZE 32768 /* a power of two */
#define TABLE_MAX_FILL 20000

static Slot *table = NULL;
static Py_ssize_t table_fill = 0;
static PyObject *identifier_factory = NULL;
/* Set while identifiers are made: the factory is Python code, during which another
 * thread may call in; that call is refused (None) rather than see a half-made table. */
static int busy = 0;
static unsigned long long hits = 0, misses = 0;

static size_t
slot_of(PyCodeObject *code, int offset)
{
    size_t h = (size_t)(uintptr_t)code;
    h ^= h >> 17;
    h = h * 0x9E3779B97F4A7C15ULL + (size_t)(unsigned int)offset;
    h ^= h >> 29;
    return h & (TABLE_SIZE - 1);
}

static void
table_clear(void)
{
    if (table == NULL) {
        return;
    }
    /* Take the entries out first: a decref may run code (a weakref callback). */
    Slot *old = table;
    table = NULL;
    table_fill = 0;
    for (Py_ssize_t i = 0; i < TABLE_SIZE; i++) {
        if (old[i].code != NULL) {
            Py_DECREF(old[i].identifier);
            Py_DECREF(old[i].code);
        }
    }
    PyMem_RawFree(old);
}

/* A new reference to the identifier of code at offset, or NULL with an exception set. */
static PyObject *
identifier_of(PyCodeObject *code, int offset)
{
    if (table == NULL) {
        table = PyMem_RawCalloc(TABLE_SIZE, sizeof(Slot));
        if (table == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    size_t i = slot_of(code, offset);
    while (table[i].code != NULL) {
        if (table[i].code == code && table[i].offset == offset) {
            hits++;
            return Py_NewRef(table[i].identifier);
        }
        i = (i + 1) & (TABLE_SIZE - 1);
    }
    misses++;
    int line = offset < 0 ? code->co_firstlineno : PyCode_Addr2Line(code, offset);
    if (identifier_factory == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "no identifier factory set");
        return NULL;
    }
    PyObject *identifier =
        PyObject_CallFunction(identifier_factory, "Oi", (PyObject *)code, line < 0 ? 0 : line);
    if (identifier == NULL) {
        return NULL;
    }
    if (!PyUnicode_Check(identifier)) {
        Py_DECREF(identifier);
        PyErr_SetString(PyExc_TypeError, "the identifier factory must return a str");
        return NULL;
    }
    if (table_fill >= TABLE_MAX_FILL) {
        table_clear();
        table = PyMem_RawCalloc(TABLE_SIZE, sizeof(Slot));
        if (table == NULL) {
            Py_DECREF(identifier);
            PyErr_NoMemory();
            return NULL;
        }
    }
    /* The factory ran Python code, but no other call could touch the table (busy). */
    i = slot_of(code, offset);
    while (table[i].code != NULL) {
        i = (i + 1) & (TABLE_SIZE - 1);
    }
    table[i].code = (PyCodeObject *)Py_NewRef((PyObject *)code);
    table[i].offset = offset;
    table[i].identifier = Py_NewRef(identifier);
    table_fill++;
    return identifier;
}

/* The copied frames as a tuple of identifiers, the root first. The first `reuse`
 * of them (from the root) are those of `previous`, a stack read before. */
static PyObject *
identifiers_of_reusing(CopiedFrames *frames, PyObject *previous, Py_ssize_t reuse)
{
    PyObject *stack = PyTuple_New(frames->count);
    if (stack == NULL) {
        return NULL;
    }
    for (Py_ssize_t k = 0; k < reuse; k++) {
        PyTuple_SET_ITEM(stack, k, Py_NewRef(PyTuple_GET_ITEM(previous, k)));
    }
    for (Py_ssize_t k = reuse; k < frames->count; k++) {
        Copied *copied = &frames->items[frames->count - 1 - k];
        PyObject *identifier = identifier_of(copied->code, copied->offset);
        if (identifier == NULL) {
            Py_DECREF(stack);
            return NULL;
        }
        PyTuple_SET_ITEM(stack, k, identifier);
    }
    return stack;
}

static PyObject *
identifiers_of(CopiedFrames *frames)
{
    return identifiers_of_reusing(frames, NULL, 0);
}

/* -- the last stack read of each thread ---------------------------------------------- */

/* A thread's stack changes little from one sample to the next: a thread that waits
 * has the same stack, a busy one the same frames near the root. The last read of
 * each thread is kept, its code objects as strong references (so an equal address is
 * the same code object), with the tuple made of it: an unchanged stack is that
 * tuple again, a changed one reuses the identifiers of the frames it shares from
 * the root. That keeps a sample from touching a table entry and an identifier per
 * frame, which is most of its cost when the sampler wakes with cold caches. */
#define LAST_MAX 64

typedef struct {
    unsigned long thread_id;
    CopiedFrames frames; /* owned */
    PyObject *stack;     /* strong reference; NULL: a free entry */
} Last;

static Last last_reads[LAST_MAX];
static int last_next = 0; /* the entry replaced next when every one is in use */

static Last *
last_of(unsigned long thread_id)
{
    for (int i = 0; i < LAST_MAX; i++) {
        if (last_reads[i].stack != NULL && last_reads[i].thread_id == thread_id) {
            return &last_reads[i];
        }
    }
    return NULL;
}

/* Root-side frames `frames` shares with `last`. */
static Py_ssize_t
shared_from_root(CopiedFrames *frames, Last *last)
{
    if (last == NULL) {
        return 0;
    }
    Py_ssize_t a = frames->count, b = last->frames.count, k = 0;
    while (k < a && k < b) {
        Copied *x = &frames->items[a - 1 - k], *y = &last->frames.items[b - 1 - k];
        if (x->code != y->code || x->offset != y->offset) {
            break;
        }
        k++;
    }
    return k;
}

/* Keep `frames` (owned; taken over, left empty) and `stack` as the thread's last read.
 * What it replaces is moved to `dropped`, released by the caller once nothing here
 * can be disturbed by a decref running code. */
static void
last_store(unsigned long thread_id, CopiedFrames *frames, PyObject *stack, Last *dropped)
{
    Last *entry = last_of(thread_id);
    if (entry == NULL) {
        for (int i = 0; i < LAST_MAX && entry == NULL; i++) {
            if (last_reads[i].stack == NULL) {
                entry = &last_reads[i];
            }
        }
    }
    if (entry == NULL) {
        entry = &last_reads[last_next];
        last_next = (last_next + 1) % LAST_MAX;
    }
    *dropped = *entry;
    entry->thread_id = thread_id;
    entry->frames = *frames;
    entry->stack = Py_NewRef(stack);
    frames->items = NULL;
    frames->count = frames->capacity = 0;
    frames->owned = 0;
}

static void
last_release(Last *entry)
{
    copied_release(&entry->frames);
    PyMem_RawFree(entry->frames.items);
    entry->frames.items = NULL;
    entry->frames.capacity = 0;
    Py_CLEAR(entry->stack);
}

static void
last_clear(void)
{
    Last old[LAST_MAX];
    memcpy(old, last_reads, sizeof(old));
    memset(last_reads, 0, sizeof(last_reads));
    for (int i = 0; i < LAST_MAX; i++) {
        last_release(&old[i]);
    }
}

/* -- the module's functions ---------------------------------------------------------- */

static PyObject *
read_stacks(PyObject *module, PyObject *args)
{
    PyObject *wanted;
    Py_ssize_t hint = 0; /* the pure-Python reader's thread count hint: not needed here */
    Py_ssize_t limit = 10000;
    if (!PyArg_ParseTuple(args, "O!|nn:read_stacks", &PyTuple_Type, &wanted, &hint, &limit)) {
        return NULL;
    }
    Py_ssize_t asked = PyTuple_GET_SIZE(wanted);
    if (asked > 256) {
        PyErr_SetString(PyExc_ValueError, "at most 256 threads at a time");
        return NULL;
    }
    unsigned long ids[256];
    for (Py_ssize_t i = 0; i < asked; i++) {
        ids[i] = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(wanted, i));
        if (ids[i] == (unsigned long)-1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    if (busy) {
        Py_RETURN_NONE;
    }
    busy = 1;
    CopiedFrames frames[256];
    int found[256];
    PyObject *unchanged[256]; /* borrowed from the thread's last read */
    Last dropped[256];
    memset(frames, 0, sizeof(CopiedFrames) * (size_t)asked);
    memset(found, 0, sizeof(int) * (size_t)asked);
    memset(dropped, 0, sizeof(Last) * (size_t)asked);
    long threads = 0;
    int failed = 0;

    /* Walking: nothing below makes a Python object or runs Python code, so the copies
     * may borrow the code objects until they are compared with the last reads. */
    PyInterpreterState *interp = PyInterpreterState_Get();
    for (PyThreadState *t = PyInterpreterState_ThreadHead(interp); t != NULL;
         t = PyThreadState_Next(t)) {
        threads++;
        for (Py_ssize_t i = 0; i < asked && !failed; i++) {
            if (t->thread_id == ids[i] && !found[i]) {
                found[i] = 1;
                if (copy_frames(thread_top(t), &frames[i], limit) < 0) {
                    failed = 1;
                }
            }
        }
    }
    /* Still nothing allocated: an unchanged stack needs no reference to its code
     * objects; a changed one takes them before anything else happens. */
    for (Py_ssize_t i = 0; i < asked; i++) {
        unchanged[i] = NULL;
        if (!found[i] || failed) {
            continue;
        }
        Last *last = last_of(ids[i]);
        if (last != NULL && copied_equal(&frames[i], &last->frames)) {
            unchanged[i] = last->stack;
            frames[i].count = 0;
        }
        else {
            copied_own(&frames[i]);
        }
    }

    /* Only our copies and strong references from here on. */
    PyObject *result = NULL;
    PyObject *stacks = NULL;
    if (failed) {
        PyErr_NoMemory();
        goto done;
    }
    stacks = PyDict_New();
    if (stacks == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < asked; i++) {
        if (!found[i]) {
            continue;
        }
        PyObject *stack;
        if (unchanged[i] != NULL) {
            stack = Py_NewRef(unchanged[i]);
        }
        else {
            Last *last = last_of(ids[i]);
            Py_ssize_t reuse = shared_from_root(&frames[i], last);
            stack = identifiers_of_reusing(&frames[i], reuse ? last->stack : NULL, reuse);
            if (stack == NULL) {
                goto done;
            }
            last_store(ids[i], &frames[i], stack, &dropped[i]);
        }
        int set = PyDict_SetItem(stacks, PyTuple_GET_ITEM(wanted, i), stack);
        Py_DECREF(stack);
        if (set < 0) {
            goto done;
        }
    }
    result = Py_BuildValue("(lO)", threads, stacks);
done:
    Py_XDECREF(stacks);
    for (Py_ssize_t i = 0; i < asked; i++) {
        copied_release(&frames[i]);
        PyMem_RawFree(frames[i].items);
    }
    busy = 0;
    /* Released last: a decref may run code, which may read stacks again. */
    for (Py_ssize_t i = 0; i < asked; i++) {
        last_release(&dropped[i]);
    }
    return result;
}

static PyObject *
read_frame(PyObject *module, PyObject *args)
{
    PyObject *frame;
    Py_ssize_t limit = 10000;
    if (!PyArg_ParseTuple(args, "O|n:read_frame", &frame, &limit)) {
        return NULL;
    }
    if (frame == Py_None) {
        return PyTuple_New(0);
    }
    if (!PyFrame_Check(frame)) {
        PyErr_SetString(PyExc_TypeError, "read_frame() needs a frame or None");
        return NULL;
    }
    if (busy) {
        Py_RETURN_NONE;
    }
    busy = 1;
    CopiedFrames frames = {NULL, 0, 0, 1};
    PyObject *result = NULL;
    if (copy_frames(frame_object_record((PyFrameObject *)frame), &frames, limit) < 0) {
        PyErr_NoMemory();
    }
    else {
        result = identifiers_of(&frames);
    }
    copied_release(&frames);
    PyMem_RawFree(frames.items);
    busy = 0;
    return result;
}

/* The frame of a suspended generator or coroutine: 1 copied, 0 not suspended (created
 * or ended: the chain ends), -1 it runs (its frames are on a thread's stack). */
static int
copy_suspended(PyObject *gen, CopiedFrames *out)
{
#if PY_VERSION_HEX >= 0x030B0000
    int8_t state = ((PyGenObject *)gen)->gi_frame_state;
    if (state == FRAME_EXECUTING) {
        return -1;
    }
#  if PY_VERSION_HEX >= 0x030D0000
    int suspended = FRAME_STATE_SUSPENDED(state);
#  else
    int suspended = state == FRAME_SUSPENDED;
#  endif
    if (!suspended) {
        return 0;
    }
    WalkFrame *frame = (WalkFrame *)((PyGenObject *)gen)->gi_iframe;
    PyCodeObject *code = frame_code(frame);
    if (code == NULL) {
        return 0;
    }
    int offset = _PyInterpreterFrame_LASTI(frame) * (int)sizeof(_Py_CODEUNIT);
#else
    PyFrameObject *frame = ((PyGenObject *)gen)->gi_frame;
    if (frame == NULL || frame->f_lasti < 0) {
        return 0;
    }
    if (frame->f_state == FRAME_EXECUTING) {
        return -1;
    }
    PyCodeObject *code = frame->f_code;
    int offset = frame->f_lasti * (int)sizeof(_Py_CODEUNIT);
#endif
    return copied_push(out, code, offset) < 0 ? -2 : 1;
}

static PyObject *
read_awaiting(PyObject *module, PyObject *args)
{
    PyObject *coroutine;
    Py_ssize_t limit = 50;
    if (!PyArg_ParseTuple(args, "O|n:read_awaiting", &coroutine, &limit)) {
        return NULL;
    }
    if (busy) {
        Py_RETURN_NONE;
    }
    busy = 1;
    CopiedFrames frames = {NULL, 0, 0, 1};
    PyObject *result = NULL;
    int running = 0;
    /* Coroutines that are suspended are on no thread's stack, and none can resume
     * while this runs: it holds the GIL and runs no Python code. Their awaited
     * objects come from C getters that make no frame object. */
    PyObject *current = Py_NewRef(coroutine);
    while (frames.count < limit) {
        const char *awaits;
        if (PyCoro_CheckExact(current)) {
            awaits = "cr_await";
        }
        else if (PyGen_CheckExact(current)) {
            awaits = "gi_yieldfrom";
        }
        else {
            break; /* a future, or the end of the chain */
        }
        int copied = copy_suspended(current, &frames);
        if (copied == -2) {
            PyErr_NoMemory();
            goto done;
        }
        if (copied == -1) {
            running = 1;
            break;
        }
        if (copied == 0) {
            break;
        }
        PyObject *next = PyObject_GetAttrString(current, awaits);
        if (next == NULL) {
            goto done;
        }
        Py_SETREF(current, next);
    }
    if (running) {
        result = Py_NewRef(Py_None);
    }
    else {
        /* innermost last: the copies are in await order, the coroutine first */
        for (Py_ssize_t i = 0, j = frames.count - 1; i < j; i++, j--) {
            Copied swap = frames.items[i];
            frames.items[i] = frames.items[j];
            frames.items[j] = swap;
        }
        result = identifiers_of(&frames);
    }
done:
    Py_DECREF(current);
    copied_release(&frames);
    PyMem_RawFree(frames.items);
    busy = 0;
    return result;
}

/* Whether the calling thread can make `needed` objects the collector tracks without
 * starting a collection: an allocation that takes the young generation over its
 * threshold makes the allocating thread run the collection, and with it every
 * finalizer and weakref callback of the garbage found, however long they take (on
 * 3.12 the collection is scheduled for whichever thread next checks for pending
 * work).  Reads the interpreter's counters; makes no object. */
static PyObject *
young_gc_room(PyObject *module, PyObject *arg)
{
    long needed = PyLong_AsLong(arg);
    if (needed == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyInterpreterState *interp = PyInterpreterState_Get();
    struct _gc_runtime_state *gc = &interp->gc;
    int threshold = gc->generations[0].threshold;
    if (!gc->enabled || threshold <= 0 || gc->collecting) {
        Py_RETURN_TRUE; /* no allocation can start a collection now */
    }
#if PY_VERSION_HEX >= 0x030C0000 && PY_VERSION_HEX < 0x030D0000
    if (_Py_atomic_load_relaxed(&interp->ceval.gc_scheduled)) {
        Py_RETURN_FALSE;
    }
#endif
    /* A threshold too small for `needed`: room for half of it is the most there is. */
    if (needed > threshold / 2) {
        needed = threshold / 2;
    }
    if (gc->generations[0].count + needed < threshold) {
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyObject *
set_identifier_factory(PyObject *module, PyObject *factory)
{
    if (!PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError, "the identifier factory must be callable");
        return NULL;
    }
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use");
        return NULL;
    }
    busy = 1;
    table_clear();
    last_clear();
    Py_XSETREF(identifier_factory, Py_NewRef(factory));
    busy = 0;
    Py_RETURN_NONE;
}

static PyObject *
cache_info(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("{s:n,s:K,s:K}", "size", table_fill, "hits", hits, "misses", misses);
}

static PyObject *
clear_cache(PyObject *module, PyObject *unused)
{
    if (busy) {
        PyErr_SetString(PyExc_RuntimeError, "the reader is in use");
        return NULL;
    }
    busy = 1;
    table_clear();
    last_clear();
    hits = misses = 0;
    busy = 0;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"read_stacks", read_stacks, METH_VARARGS,
     "read_stacks(thread_ids, hint=0, limit=10000) -> (thread count, {thread id: identifiers})\n\n"
     "The stacks of the threads asked for that exist, as frame identifiers, the root\n"
     "first, at most limit frames each (the innermost); None if another read runs."},
    {"read_frame", read_frame, METH_VARARGS,
     "read_frame(frame, limit=10000) -> identifiers\n\n"
     "frame and its callers as frame identifiers, the root first; None if another read runs."},
    {"read_awaiting", read_awaiting, METH_VARARGS,
     "read_awaiting(coroutine, limit=50) -> identifiers\n\n"
     "A suspended coroutine and what it awaits, the coroutine first; None while it runs."},
    {"young_gc_room", young_gc_room, METH_O,
     "young_gc_room(needed) -> bool\n\n"
     "Whether this thread can make needed objects the collector tracks without\n"
     "starting a garbage collection."},
    {"set_identifier_factory", set_identifier_factory, METH_O,
     "set_identifier_factory(factory): factory(code, line) -> str makes identifiers."},
    {"cache_info", cache_info, METH_NOARGS, "cache_info() -> {size, hits, misses}"},
    {"clear_cache", clear_cache, METH_NOARGS, "Forget every identifier made."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    "_stackreader",
    "Other threads' stacks as frame identifiers, read without making frame objects.",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__stackreader(void)
{
    return PyModule_Create(&module_def);
}
