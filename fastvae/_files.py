"""fastvae's file I/O: atomic writes with the user's permissions, JSON in and out, and the removal of what an
interrupted write left behind.

Every file fastvae writes for a run (checkpoint, model folder, vocabulary,
reports) goes through :func:`atomic_write` (:func:`atomic_write_text` and
:func:`atomic_write_json` for text and JSON): the bytes go to a temporary file
``.tmp-<host>-<pid>-<random>-<name>`` next to the target, which is renamed
over the target once complete, so the target is always either the old or
the new file. A process killed mid-write (``kill -9``, a power cut) leaves
the temporary file; :func:`remove_stale_temps`, called by the next save or
load of that folder, removes the ones whose writer is gone. JSON files that
fastvae reads back (``config.json``, ``run.json``, ``tokenizer_config.json``)
go through :func:`read_json_object`, whose errors name the file.
"""

import hashlib
import json
import os
import re
import socket
import tempfile
import time

TEMP_PREFIX = ".tmp-"
# a temporary file that names no writer (written by fastvae 0.1.0) is stale once this old
LEGACY_STALE_SECONDS = 600.0
# a writer on another machine (a shared file system) cannot be asked whether it lives: wait this long
OTHER_HOST_STALE_SECONDS = 24 * 3600.0

_NEW = re.compile(r"\.tmp-([0-9a-f]{8})-(\d+)-[A-Za-z0-9_]+-(.+)\Z")
# fastvae 0.1.0's names: mkstemp's 8 random characters, then the target's name, or "-" and it, or ".json";
# and the fixed names of its vocabulary and metrics rewrites
_LEGACY = re.compile(r"\.tmp-[A-Za-z0-9_]{8}(.*)\Z")
_LEGACY_FIXED = ("vocab.json.tmp", "metrics.csv.tmp")


def _host_tag():
    return hashlib.sha1(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def current_umask():
    """The process's umask (read without changing it where /proc allows)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write(path, write, binary=True):
    """Write ``path`` through a temporary file in its folder, renamed over it when complete.

    ``write(f)`` writes the content to the open file object ``f`` (binary
    unless ``binary=False``: then text, UTF-8). The file gets the mode a
    plain ``open(path, "w")`` would give it (``0o666`` less the umask),
    not ``mkstemp``'s ``0o600``. Stale temporary files of earlier,
    interrupted writes of this folder are removed first. An exception at any
    point leaves ``path`` as it was and removes the temporary file. Returns
    ``path``.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    remove_stale_temps(directory)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{TEMP_PREFIX}{_host_tag()}-{os.getpid()}-",
                               suffix="-" + os.path.basename(path))
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8", "newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    return path


def atomic_write_text(path, text):
    """Write the string ``text`` to ``path`` (UTF-8) with :func:`atomic_write`; returns ``path``."""
    return atomic_write(path, lambda f: f.write(text), binary=False)


def atomic_write_json(path, obj, allow_nan=True):
    """Write ``obj`` to ``path`` as JSON (indent 2, sorted keys, a final newline) with :func:`atomic_write`.

    ``allow_nan=False``: a NaN or infinity in ``obj`` is a ValueError (JSON has no such numbers) and
    ``path`` stays as it was. Returns ``path``.
    """
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=allow_nan) + "\n")


def read_json_object(path):
    """The JSON object (a dict) in the file ``path``; a ValueError naming ``path`` when it is not one.

    The caller checks that the file exists (and says what is missing in its own words).
    """
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"{path} is corrupt: not a JSON file ({exc})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} is corrupt: it must hold a JSON object, not a {type(obj).__name__}")
    return obj


def check_regular_file(path, missing):
    """``path`` names a regular file: a FileNotFoundError saying ``missing`` when nothing is there, a ValueError
    naming ``path`` when something else (a folder) is."""
    if not os.path.exists(path):
        raise FileNotFoundError(missing)
    if not os.path.isfile(path):
        raise ValueError(f"{path} is not a regular file")


def _fsync_directory(directory):
    """Make the rename durable (best effort; not possible on every platform)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def _writer_gone(pid):
    if pid == os.getpid():
        return False  # this process's own write in progress (another thread)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OSError):
        return False  # alive, someone else's
    return False


def is_stale_temp(directory, name, now=None):
    """Whether ``directory/name`` is a temporary file of a write that can no longer finish."""
    path = os.path.join(directory, name)
    match = _NEW.match(name)
    try:
        age = (time.time() if now is None else now) - os.stat(path).st_mtime
    except OSError:
        return False
    if match is not None:
        host, pid = match.group(1), int(match.group(2))
        if host == _host_tag():
            return _writer_gone(pid)
        return age > OTHER_HOST_STALE_SECONDS
    return (_LEGACY.match(name) is not None or name in _LEGACY_FIXED) and age > LEGACY_STALE_SECONDS


def remove_stale_temps(directory):
    """Remove the temporary files that interrupted writes left in ``directory``; returns their names.

    Only ``.tmp-*`` regular files whose writer process is gone (or, for
    files that name none, such as fastvae 0.1.0's ``.tmp-*`` and
    ``vocab.json.tmp``, older than ten minutes) are removed; a folder that
    cannot be listed or a file that cannot be removed (a read-only folder)
    is left as it is.
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX) or n in _LEGACY_FIXED]
    except OSError:
        return []
    removed = []
    now = time.time()
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path) and not os.path.islink(path) and is_stale_temp(directory, name, now):
            try:
                os.remove(path)
            except OSError:
                continue
            removed.append(name)
    return removed
