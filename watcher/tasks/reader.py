"""Reading a tasks file in a child process (`python -m watcher.tasks.reader`), and the
daemon's side of the pipe.

Why a child process and not a thread: parsing 100,000 entries builds millions of short-lived
YAML nodes. In the daemon they would hold the GIL for seconds (the intake and the loops would
stall) and leave its heap fragmented long after (the freed node memory stays mapped between
the long-lived task records allocated meanwhile). The child parses on its own core and its
memory goes back to the system when it exits; the daemon receives compact batches of valid
registrations and registers them as they arrive. A hostile file (an alias bomb, anything that
exhausts memory or crashes the parser) can only take the child down: the import fails, is
logged, and the daemon goes on.

The protocol: the daemon writes one JSON header line, then the known fingerprints (16 bytes
each), then the file's bytes, and closes stdin. The child answers with frames (a 4-byte length,
then a `marshal`led tuple: the same interpreter on both sides, and several times faster to
decode than JSON, which matters on the daemon's loop): entries and problems in file order as it
reads, then "done"; or only "rejected" when the document does not parse (nothing may be
imported). A batch of entries travels as columns, one list per field, with each metadata as
the JSON text its validation wrote: the daemon decodes it into lists, not an object per entry,
and the store keeps that text as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import marshal
import sys
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from watcher.errors import ConfigError, ConfigProblem, WatcherError
from watcher.store.base import SpecColumns, endpoints_json
from watcher.tasks.document import (
    FINGERPRINT_BYTES,
    FileEntry,
    Invalid,
    Unchanged,
    open_tasks,
    read_entries,
)

BATCH = 1000  # entries per message: the daemon registers (and commits) this many at a time
# A message holds at most BATCH entries of at most ~4.5 KiB each (metadata is capped at 4 KiB);
# the done message holds 16 bytes per entry of the file.
_FRAME_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """What a read needs: the file's bytes and the parts of the config entries are checked
    against."""

    data: bytes
    source: str  # the path, for messages
    endpoint_names: Sequence[str]
    allowed_callback_hosts: Sequence[str]
    known: bytes = b""  # fingerprints of entries imported before, FINGERPRINT_BYTES each


@dataclass(frozen=True, slots=True)
class Entries:
    """Valid registrations in file order, as columns: the daemon registers them (and decodes
    them from a frame) without an object per entry."""

    specs: SpecColumns
    paths: Sequence[str]  # e.g. "tasks[3]"
    lines: Sequence[int | None]
    fingerprints: bytes  # FINGERPRINT_BYTES per entry, in order

    @classmethod
    def of(cls, entries: Sequence[FileEntry]) -> Entries:
        tasks = [e.task for e in entries]
        return cls(
            specs=SpecColumns(
                task_ids=[t.task_id for t in tasks],
                models=[t.model for t in tasks],
                endpoints=[endpoints_json(t.endpoints) for t in tasks],
                callback_urls=[t.callback_url for t in tasks],
                metadata=[t.metadata_json for t in tasks],
                deadlines_s=[t.deadline_s for t in tasks],
            ),
            paths=[e.path for e in entries],
            lines=[e.line for e in entries],
            fingerprints=b"".join(e.fingerprint for e in entries),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def fingerprint(self, i: int) -> bytes:
        return self.fingerprints[i * FINGERPRINT_BYTES : (i + 1) * FINGERPRINT_BYTES]


@dataclass(frozen=True, slots=True)
class Problems:
    problems: list[ConfigProblem]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The document does not parse, or is not `tasks: [...]`: nothing of it may be imported."""

    problems: list[ConfigProblem]


@dataclass(frozen=True, slots=True)
class Done:
    entries: int  # in the file
    unchanged: bytes  # fingerprints of the entries skipped as imported before


Message = Entries | Problems | Rejected | Done


class ReaderFailed(WatcherError):
    """The tasks file could not be read (the reader process failed)."""


class TasksReader(Protocol):
    """Reads a tasks file's bytes into messages, in file order."""

    def read(self, request: ReadRequest) -> AsyncGenerator[Message, None]: ...


# -- the child ---------------------------------------------------------------------------------
def read_messages(request: ReadRequest) -> Iterator[Message]:
    """The messages for one read (pure; the child runs this, tests may too)."""
    try:
        text = request.data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = request.data.count(b"\n", 0, exc.start) + 1
        yield Rejected([ConfigProblem("", line, "is not UTF-8 text")])
        return
    try:
        tasks = open_tasks(text, request.source)
    except ConfigError as exc:
        yield Rejected(list(exc.problems))
        return
    if tasks is None:
        yield Done(entries=0, unchanged=b"")
        return
    known = request.known
    fingerprints = {
        known[i : i + FINGERPRINT_BYTES] for i in range(0, len(known), FINGERPRINT_BYTES)
    }
    entries: list[FileEntry] = []
    unchanged = bytearray()
    count = 0
    for result in read_entries(
        tasks,
        text,
        endpoint_names=request.endpoint_names,
        allowed_callback_hosts=request.allowed_callback_hosts,
        known=fingerprints,
    ):
        count += 1
        if isinstance(result, FileEntry):
            entries.append(result)
            if len(entries) >= BATCH:
                yield Entries.of(entries)
                entries = []
        elif isinstance(result, Unchanged):
            unchanged += result.fingerprint
        elif isinstance(result, Invalid):
            if entries:  # keep file order, so problems and registrations interleave as listed
                yield Entries.of(entries)
                entries = []
            yield Problems(result.problems)
    if entries:
        yield Entries.of(entries)
    yield Done(entries=count, unchanged=bytes(unchanged))


def encode(message: Message) -> bytes:
    """One message as a frame: its length (4 bytes, big-endian), then its body."""
    body: tuple[Any, ...]
    if isinstance(message, Entries):
        body = (
            "entries",
            *(list(column) for column in _columns(message.specs)),
            list(message.paths),
            list(message.lines),
            message.fingerprints,
        )
    elif isinstance(message, Problems):
        body = ("problems", [(p.path, p.line, p.message) for p in message.problems])
    elif isinstance(message, Rejected):
        body = ("rejected", [(p.path, p.line, p.message) for p in message.problems])
    else:
        body = ("done", message.entries, message.unchanged)
    data = marshal.dumps(body)
    return len(data).to_bytes(4, "big") + data


def decode(data: bytes) -> Message:
    """The message of one frame's body (ValueError when it is none)."""
    try:
        # Safe here: the frames are our own child's marshal.dumps of plain validated values; the
        # file's text never reaches marshal's format.
        body = marshal.loads(data)  # noqa: S302
        kind = body[0]
        if kind == "entries":
            return _entries(body)
        if kind == "problems":
            return Problems([ConfigProblem(*row) for row in body[1]])
        if kind == "rejected":
            return Rejected([ConfigProblem(*row) for row in body[1]])
        if kind == "done":
            return Done(entries=int(body[1]), unchanged=bytes(body[2]))
    except (EOFError, TypeError, IndexError, KeyError, ValueError) as exc:
        raise ValueError("not a reader message") from exc
    raise ValueError("not a reader message")


def _columns(specs: SpecColumns) -> tuple[Sequence[Any], ...]:
    return (
        specs.task_ids,
        specs.models,
        specs.endpoints,
        specs.callback_urls,
        specs.metadata,
        specs.deadlines_s,
    )


def _entries(body: tuple[Any, ...]) -> Entries:
    _, ids, models, endpoints, callback_urls, metadata, deadlines_s, paths, lines, prints = body
    columns = (ids, models, endpoints, callback_urls, metadata, deadlines_s, paths, lines)
    n = len(ids)
    if any(not isinstance(c, list) or len(c) != n for c in columns) or not (
        isinstance(prints, bytes) and len(prints) == n * FINGERPRINT_BYTES
    ):
        raise ValueError("not a reader message")
    specs = SpecColumns(ids, models, endpoints, callback_urls, metadata, deadlines_s)
    return Entries(specs=specs, paths=paths, lines=lines, fingerprints=prints)


def child_main(stdin: BinaryIO, stdout: BinaryIO) -> int:
    """The child: read a request from stdin, write the messages to stdout."""
    # Nothing here outlives the process and the nodes hold no cycles: collecting them as they
    # pile up would only cost time (a third of the parse, measured).
    gc.disable()
    header = json.loads(stdin.readline())
    known = stdin.read(header["known_bytes"])
    data = stdin.read(header["data_bytes"])
    request = ReadRequest(
        data=data,
        source=header["source"],
        endpoint_names=header["endpoint_names"],
        allowed_callback_hosts=header["allowed_callback_hosts"],
        known=known,
    )
    for message in read_messages(request):
        stdout.write(encode(message))
        stdout.flush()
    return 0


# -- the daemon's side ---------------------------------------------------------------------------
class ChildProcessReader:
    """Reads in a child process running this module with the daemon's own interpreter."""

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = list(command or [sys.executable, "-m", "watcher.tasks.reader"])

    async def read(self, request: ReadRequest) -> AsyncGenerator[Message, None]:
        try:
            proc = await asyncio.create_subprocess_exec(
                *self._command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as exc:
            raise ReaderFailed(f"cannot start the tasks file reader: {exc}") from exc
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        errors = asyncio.ensure_future(proc.stderr.read())
        try:
            header = {
                "source": request.source,
                "endpoint_names": list(request.endpoint_names),
                "allowed_callback_hosts": list(request.allowed_callback_hosts),
                "known_bytes": len(request.known),
                "data_bytes": len(request.data),
            }
            try:
                proc.stdin.write(json.dumps(header).encode() + b"\n")
                proc.stdin.write(request.known)
                proc.stdin.write(request.data)
                await proc.stdin.drain()
                proc.stdin.close()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the child died early; its exit status says why, below
            finished = False
            while not finished:
                try:
                    size = int.from_bytes(await proc.stdout.readexactly(4), "big")
                    if size > _FRAME_LIMIT:
                        raise ReaderFailed("the tasks file reader answered garbage")
                    message = decode(await proc.stdout.readexactly(size))
                except asyncio.IncompleteReadError:
                    break  # the child ended early: its exit status says why, below
                except ValueError as exc:
                    raise ReaderFailed("the tasks file reader answered garbage") from exc
                finished = isinstance(message, Done | Rejected)
                yield message
            code = await proc.wait()
            if not finished or code != 0:
                detail = _last_line(await errors) or f"exit status {code}"
                raise ReaderFailed(f"the tasks file reader failed: {detail}")
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            errors.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await errors


class InlineReader:
    """Reads in this process, on the event loop: for tests with small files."""

    async def read(self, request: ReadRequest) -> AsyncGenerator[Message, None]:
        for message in read_messages(request):
            yield message


def _last_line(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:300] if lines else ""


if __name__ == "__main__":
    raise SystemExit(child_main(sys.stdin.buffer, sys.stdout.buffer))
