"""What Pillow says about a malformed image while decoding it: counted per image, at most one line logged.

Pillow reports the problems of a malformed file as warnings (``warnings.warn``) or log records, one per bad
tag or chunk: a TIFF listing 3000 bad tags would print 6000 lines on stderr for every image. While a thread
decodes an image (``decoder_messages``), the warnings and Pillow log records of that thread are captured and
counted instead, and afterwards at most one DEBUG line is logged for the image, on the caller's logger.
Other threads, and this thread outside a decode, see warnings and Pillow's records as usual.
"""
from __future__ import annotations

import logging
import threading
import warnings
from contextlib import contextmanager

from PIL import Image

from .errors import shorten
from .image_checks import describe


class _Captured(threading.local):
    active = False
    count = 0
    first = None
    pending = None


_captured = _Captured()


class _MessageWhileDecoding:
    """The message part of a ``warnings`` filter that applies only in a thread decoding an image here."""

    def match(self, text) -> bool:
        if _captured.active:
            _captured.pending = text
            return True
        return False


class _ModuleWhileDecoding:
    """The module part of that filter: counts the warning (its message was seen just before)."""

    def match(self, module) -> bool:
        if _captured.active:
            _captured.count += 1
            if _captured.first is None:
                _captured.first = str(_captured.pending)
            return True
        return False


class _RecordsWhileDecoding(logging.Filter):
    """On Pillow's loggers: a record made while this thread decodes an image is not logged (its DEBUG
    records name every tag); one of WARNING or above is counted like a warning."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not _captured.active:
            return True
        if record.levelno >= logging.WARNING:
            _captured.count += 1
            if _captured.first is None:
                _captured.first = record.getMessage()
        return False


# ("ignore", message, category, module, lineno) — Python's warnings machinery calls ``match`` on the
# message and module parts, so this filter is inert in every thread that is not decoding here.
_WARNINGS_FILTER = ("ignore", _MessageWhileDecoding(), Warning, _ModuleWhileDecoding(), 0)
_RECORDS_FILTER = _RecordsWhileDecoding()
_install_lock = threading.Lock()
_pil_loggers_seen = -1


def _install_filters() -> None:
    """Keep the warnings filter first (a ``catch_warnings`` elsewhere may have put its own before it or
    dropped it) and the records filter on every ``PIL`` logger (plugins are imported lazily)."""
    global _pil_loggers_seen
    Image.init()  # import every plugin now, so that their loggers exist
    filters = warnings.filters
    loggers = logging.Logger.manager.loggerDict
    if filters and filters[0] is _WARNINGS_FILTER and len(loggers) == _pil_loggers_seen:
        return
    with _install_lock:
        filters = warnings.filters
        if not filters or filters[0] is not _WARNINGS_FILTER:
            while _WARNINGS_FILTER in filters:
                filters.remove(_WARNINGS_FILTER)
            filters.insert(0, _WARNINGS_FILTER)
        if len(loggers) != _pil_loggers_seen:
            for name in list(loggers):
                if name == "PIL" or name.startswith("PIL."):
                    logger = logging.getLogger(name)
                    if _RECORDS_FILTER not in logger.filters:
                        logger.addFilter(_RECORDS_FILTER)
            _pil_loggers_seen = len(loggers)


@contextmanager
def decoder_messages(item, log: logging.Logger):
    """Capture the warnings and Pillow log records of this thread while it decodes ``item``; afterwards
    log one DEBUG line on ``log`` if there were any (never one per bad tag: a TIFF can carry thousands)."""
    if _captured.active:  # nested: the outer capture counts them
        yield
        return
    _install_filters()
    _captured.active, _captured.count, _captured.first, _captured.pending = True, 0, None, None
    try:
        yield
    finally:
        count, first = _captured.count, _captured.first
        _captured.active, _captured.count, _captured.first, _captured.pending = False, 0, None, None
        if count:
            log.debug("%s: the decoder reported %d problem%s, not logged one by one (first: %s)", describe(item),
                      count, "" if count == 1 else "s", shorten(first or "", 120))
