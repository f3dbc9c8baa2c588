"""From stack samples to a pyinstrument session: every use of pyinstrument's internals.

The rest of the package uses pyinstrument only through this module and through
its public API (``Profiler``, ``Session.root_frame()``, ``HTMLRenderer``).
``check_compatible()`` is run at set-up and by the test suite against every
supported pyinstrument version, and fails loudly when one of the assumptions
below stops holding.

Assumptions:

* a frame identifier is ``"function\\x00file\\x00first_line"``, optionally
  followed by ``"\\x01c<class>"`` and ``"\\x01l<line>"`` attributes;
* ``Session.from_json`` accepts a ``start_call_stack`` beginning with
  ``DUMMY_ROOT_FRAME_IDENTIFIER``, and a dict with ``frame_records`` as a list of
  ``(stack, seconds)`` pairs, the stack root first;
* ``Session.root_frame()`` then returns a tree of frames with ``function``,
  ``file_path``, ``line_no``, ``children``, ``time``, ``total_self_time``
  and ``is_synthetic``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Sequence
from importlib.metadata import version as distribution_version
from types import CodeType, FrameType

from pyinstrument.frame import DUMMY_ROOT_FRAME_IDENTIFIER
from pyinstrument.frame_info import frame_info_get_identifier
from pyinstrument.session import Session

from ._threads import frames_of

_SEP = "\x00"
_ATTR = "\x01"

#: Identifiers by the id of their code object (with the code object, so the id cannot
#: be reused while it is a key): building them is most of the cost of a sample, and
#: hashing a code object hashes its constants and bytecode on every look-up.
_identifier_cache: dict[int, tuple[CodeType, str]] = {}
_IDENTIFIER_CACHE_MAX = 20_000


def _code_identifier(code: CodeType) -> str:
    cached = _identifier_cache.get(id(code))
    if cached is not None and cached[0] is code:
        return cached[1]
    qualname = getattr(code, "co_qualname", code.co_name)
    ident = f"{code.co_name}{_SEP}{code.co_filename}{_SEP}{code.co_firstlineno}"
    owner, _, _ = qualname.rpartition(".")
    if owner and not owner.endswith("<locals>"):
        ident += f"{_ATTR}c{owner.rpartition('.')[2]}"
    if len(_identifier_cache) >= _IDENTIFIER_CACHE_MAX:
        _identifier_cache.clear()
    _identifier_cache[id(code)] = (code, ident)
    return ident


def line_identifier(code: CodeType, line: int) -> str:
    """The pyinstrument frame info of ``code`` running ``line``: the one definition.

    The compiled stack reader calls it for each (code, line) it has not seen.
    """
    return f"{_code_identifier(code)}{_ATTR}l{line or 0}"


def stack_of(frames: Sequence[FrameType]) -> tuple[str, ...]:
    """The stack of ``frames`` (innermost first) as pyinstrument frame infos, the root first.

    Only ``f_code`` and ``f_lineno`` are read: they stay valid after a frame returns.
    """
    infos = [line_identifier(frame.f_code, frame.f_lineno or 0) for frame in frames]
    infos.reverse()
    return tuple(infos)


def from_code(stack: tuple[str, ...], code: CodeType) -> tuple[str, ...]:
    """``stack`` from the innermost frame of ``code`` on: a watched function's callers left out.

    The whole stack when ``code`` is not in it.
    """
    prefix = f"{_code_identifier(code)}{_ATTR}l"
    for i in range(len(stack) - 1, -1, -1):
        if stack[i].startswith(prefix):
            return stack[i:]
    return stack


def synthetic_identifier(label: str) -> str:
    """A frame info for a labelled, made-up frame (e.g. samples merged on overflow)."""
    return f"{label}{_SEP}<flask-perfalert>{_SEP}0"


def session_from_samples(
    samples: Iterable[tuple[Sequence[str], float]],
    *,
    start_time: float,
    duration: float,
    interval: float,
    sample_count: int,
    description: str,
    cpu_time: float = 0.0,
) -> Session:
    """Make a pyinstrument session from ``(stack, seconds)`` samples."""
    records: list[tuple[list[str], float]] = [(list(stack), seconds) for stack, seconds in samples]
    # pyinstrument trims the "stem" of the tree down to the frame where profiling
    # started; for samples that is the deepest frame all of them share.
    common: list[str] = list(records[0][0]) if records else []
    for stack, _ in records[1:]:
        n = 0
        for a, b in zip(common, stack, strict=False):
            if a != b:
                break
            n += 1
        del common[n:]
    start_stack = [DUMMY_ROOT_FRAME_IDENTIFIER] + [frame_info_get_identifier(i) for i in common]
    session: Session = Session.from_json(
        {
            "frame_records": records,
            "start_time": start_time,
            "duration": duration,
            "min_interval": interval,
            "max_interval": interval,
            "sample_count": sample_count,
            "start_call_stack": start_stack,
            "target_description": description,
            "cpu_time": cpu_time,
            "sys_path": sys.path,
            "sys_prefixes": Session.current_sys_prefixes(),
        }
    )
    return session


def combine(first: Session, second: Session) -> Session:
    return Session.combine(first, second)


#: Why this pyinstrument cannot be used for reports, or None; set by ``check_compatible``.
incompatible: str | None = None


def check_compatible() -> None:
    """Raise RuntimeError if this pyinstrument breaks one of the assumptions above.

    The reason is also kept in ``incompatible``: alerts then go out without a
    call tree, saying why, instead of failing on every slow request.
    """
    global incompatible
    try:
        _check()
    except Exception as exc:
        incompatible = f"pyinstrument {_version()} is not supported ({type(exc).__name__}: {exc})"
        raise RuntimeError(incompatible) from exc
    incompatible = None


def _check() -> None:

    def probe() -> tuple[str, ...]:
        return stack_of(frames_of(sys._getframe()))

    stack = probe()
    session = session_from_samples(
        [(stack, 0.01), (stack, 0.02)],
        start_time=time.time(),
        duration=0.03,
        interval=0.01,
        sample_count=2,
        description="compatibility check",
    )
    names = []
    root = frame = session.root_frame()
    while frame is not None:
        names.append(frame.function)
        children = [child for child in frame.children if not child.is_synthetic]
        frame = children[0] if children else None
    if root is None or names[-1] != "probe" or root.time <= 0:
        raise RuntimeError(f"pyinstrument {_version()}: unexpected call tree {names!r}")


def _version() -> str:
    return distribution_version("pyinstrument")
