"""Which definition an online store's values of a view were written under.

Every writer (materialization, pushes) first *claims* the view for the definition it
writes (its `values_fingerprint`): the store records it beside the watermark, and a view
whose recorded definition differs is cleared before anything is written. So a store
never holds values of two definitions of a view, even when the change was applied while
another online store was configured (apply clears only the store it can reach). A
process remembers what it has claimed, so a steady stream of pushes pays one round trip
per view and definition, not one per push.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Mapping

from almanac.ports.online import OnlineStore

_claimed: weakref.WeakKeyDictionary[OnlineStore, set[tuple[str, str, str]]] = (
    weakref.WeakKeyDictionary()
)
_lock = threading.Lock()


def claim(online: OnlineStore, project: str, layouts: Mapping[str, str]) -> None:
    """Make `online` hold, for each view of `layouts`, values of that layout only: a view
    recorded under another layout is cleared (data and watermark), then the layout is
    recorded. Idempotent; cheap once a process has claimed a (view, layout)."""
    with _lock:
        done = _claimed.setdefault(online, set())
        todo = {v: layout for v, layout in layouts.items() if (project, v, layout) not in done}
    if not todo:
        return
    marks = online.watermarks(project)
    for view, layout in todo.items():
        mark = marks.get(view)
        if mark is not None and mark.layout != layout:
            online.delete_view(project, view)
            mark = None
        if mark is None:
            online.set_watermark(project, view, None, layout)
    with _lock:
        done.update((project, v, layout) for v, layout in todo.items())


def forget(online: OnlineStore, project: str, view: str) -> None:
    """A view was cleared in this process (apply): claim it again before the next write."""
    with _lock:
        done = _claimed.get(online)
        if done:
            done.difference_update({item for item in done if item[:2] == (project, view)})
