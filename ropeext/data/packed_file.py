"""What a packed Parquet file records about itself: the layout and window it was packed with.

``ropeext pack`` writes both into the file's schema metadata (keys ``ropeext.layout`` and
``ropeext.window``); the columns alone cannot tell ``full`` from ``anchor`` (the layouts differ in
the mask, not in the tokens), so training reads them back and refuses data packed for another
layout or window (``check_packed``). A file without them was written before they were recorded:
it is refused too, with the command that re-creates it, because nothing else can say which layout
it holds.
"""

from __future__ import annotations

from pathlib import Path

from ropeext.errors import RopeextError

LAYOUT_KEY = b"ropeext.layout"
WINDOW_KEY = b"ropeext.window"


def packed_metadata(layout: str, window: int) -> dict[bytes, bytes]:
    """The schema metadata ``ropeext pack`` writes beside the packed columns."""
    return {LAYOUT_KEY: str(layout).encode(), WINDOW_KEY: str(int(window)).encode()}


def read_packed_info(path: str | Path) -> dict | None:
    """``{"layout", "window"}`` recorded in a packed file, or None when it records neither."""
    # heavy: pyarrow loads only when parquet is read or written
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise RopeextError(f"packed data not found: {path}")
    try:
        meta = pq.read_schema(path).metadata or {}
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not usable Parquet
        raise RopeextError(f"{path}: not a readable Parquet file ({exc})") from None
    if LAYOUT_KEY not in meta or WINDOW_KEY not in meta:
        return None
    try:
        return {"layout": meta[LAYOUT_KEY].decode(), "window": int(meta[WINDOW_KEY])}
    except ValueError:
        raise RopeextError(f"{path}: the recorded window {meta[WINDOW_KEY]!r} is not an integer") from None


def check_packed(path: str | Path, *, layout: str, max_window: int | None = None, window_note: str = "") -> dict:
    """The recorded layout and window of ``path``; a RopeextError when either is missing, when the layout
    differs from the one the caller trains with, or when the windows are longer than ``max_window`` (the
    positions the model is trained for; ``window_note`` says where that number comes from). Shorter
    windows are allowed: a short run may train at a fraction of the target length."""
    info = read_packed_info(path)
    if info is None:
        raise RopeextError(
            f"{path}: packed data that does not record its layout and window (written before "
            f"ropeext recorded them); re-run the pack stage: `ropeext pack ... --layout {layout}` or "
            "`snakemake -R pack`"
        )
    if info["layout"] != layout:
        raise RopeextError(
            f"{path}: packed with layout {info['layout']}, but training was asked for layout "
            f"{layout}; pass --layout {info['layout']} or pack the data with --layout {layout}"
        )
    if max_window is not None and info["window"] > int(max_window):
        raise RopeextError(
            f"{path}: packed at window {info['window']}, longer than the {max_window} positions "
            "training is for" + (f" ({window_note})" if window_note else "")
        )
    return info
