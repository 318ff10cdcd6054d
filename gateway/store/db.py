"""Engine set-up and the few SQL helpers both backends need."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import operator
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, TypeVarTuple, cast, overload

import orjson
import sqlalchemy
from sqlalchemy import ColumnElement, and_, event, tuple_
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, CursorResult, Dialect, Engine
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.selectable import TypedReturnsRows
from sqlalchemy.util.typing import TupleAny

READ_ONLY = "consent_gateway_read_only"
BUSY_TIMEOUT_MS = 30_000  # how long an SQLite writer waits for another process's write lock
T = TypeVar("T")
Ts = TypeVarTuple("Ts")


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


JSON_CODEC = {"json_serializer": _dumps, "json_deserializer": orjson.loads}
"""orjson for every JSON column: the drift view decodes several per subject."""


@dataclass(frozen=True)
class Pool:
    """Connections one process keeps (``size``) and opens beyond them under load (``overflow``),
    and how long a caller waits for one. On PostgreSQL, every process's size + overflow must fit
    in the server's ``max_connections`` with room for everyone else."""

    size: int = 5
    overflow: int = 10
    timeout_s: float = 30.0


WRITER_CACHE = "cache_size=-65536"
"""64 MB of pages for the writer (SQLite's default is 2 MB): a group inserts rows keyed by random ids
into several indexes, and once those outgrow the cache every insert reads pages back from the OS."""

ERASING = "secure_delete=ON"
"""What an UPDATE or DELETE frees is zeroed, not left readable in the file (erasure)."""


def create_engine(url: str, pool: Pool | None = None) -> AsyncEngine:
    """An engine; SQLite gets WAL, a busy timeout and BEGIN IMMEDIATE so writers queue, not fail.
    A caller waits at most ``pool.timeout_s`` for a pooled connection (then: the store is busy)."""
    pool = pool or Pool()
    if not url.startswith("sqlite"):
        sizes = {"pool_size": pool.size, "max_overflow": pool.overflow, "pool_timeout": pool.timeout_s}
        return create_async_engine(url, pool_pre_ping=True, **sizes, **JSON_CODEC)
    options: dict[str, Any] = {"connect_args": {"timeout": 30}, "pool_timeout": pool.timeout_s, **JSON_CODEC}
    return SQLiteEngine(_configured(create_async_engine(url, **options).sync_engine))


def _configured(engine: Engine, *more: str) -> Engine:
    """SQLite connections with WAL, a busy timeout, and BEGIN IMMEDIATE (DEFERRED for the reader);
    ``more``: pragmas of this engine's own."""

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let the "begin" hook below issue BEGIN
        cursor = dbapi_connection.cursor()
        # secure_delete: what an UPDATE or DELETE frees is zeroed, not left readable in the file (erasure)
        pragmas = (
            "journal_mode=WAL",
            f"busy_timeout={BUSY_TIMEOUT_MS}",
            "foreign_keys=ON",
            "synchronous=NORMAL",
            "secure_delete=ON",
            *more,
        )
        for pragma in pragmas:
            cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Connection) -> None:
        deferred = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if deferred else "BEGIN IMMEDIATE")

    return engine


class Executor(Protocol):
    """What a transaction's statements run on: an ``AsyncConnection``, or :class:`Inline`."""

    @property
    def dialect(self) -> Dialect: ...

    @overload
    async def execute(self, statement: TypedReturnsRows[*Ts], parameters: Any = None) -> CursorResult[*Ts]: ...

    @overload
    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[*TupleAny]: ...


class Inline:
    """A synchronous connection behind the ``await conn.execute(...)`` the store is written with:
    each statement runs at once, on the calling thread (the SQLite writer's)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.dialect = conn.dialect

    async def execute(self, statement: Any, parameters: Any = None) -> Any:
        if isinstance(parameters, list) and parameters:  # rows, even one: a group of one is common
            bound = _by_position(statement, self.dialect, tuple(parameters[0]))
            if bound is not None:
                return self.conn.exec_driver_sql(bound.sql, bound.rows(parameters))
        return self.conn.execute(statement, parameters)


@dataclass(frozen=True)
class ByPosition:
    """A statement run with rows (one or many) whose every value comes from them, bound by position in one pass.

    SQLAlchemy first builds, for each row, a dict of every parameter and then a tuple of their
    processed values; a group writes thousands of rows, and that was a fifth of its time."""

    sql: str
    values: Callable[[Mapping[str, Any]], tuple[Any, ...]]  # a row's values in the statement's order
    processed: tuple[tuple[int, Callable[[Any], Any]], ...]  # (position, processor) of the typed ones

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
        """Each row's values, processed where their type says so (timestamps as SQLite's text, JSON as
        text), taken out of the row in C (``itemgetter``)."""
        if not self.processed:
            return [self.values(row) for row in rows]
        bound = []
        for row in rows:
            row_values = list(self.values(row))
            for index, bind in self.processed:
                row_values[index] = bind(row_values[index])
            bound.append(tuple(row_values))
        return bound


_BY_POSITION: dict[tuple[Any, ...], ByPosition | None] = {}


def _by_position(statement: Any, dialect: Dialect, keys: tuple[str, ...]) -> ByPosition | None:
    """``statement`` bound by position when the rows give every value it takes; None when anything
    else would (a Python-side default, a value written into the statement, RETURNING)."""
    if not isinstance(statement, UpdateBase):
        return None
    cache_key = statement._generate_cache_key()
    if cache_key is None:
        return None
    key = (dialect.name, dialect.paramstyle, cache_key.key, keys)
    if key not in _BY_POSITION:
        _BY_POSITION[key] = _compiled_by_position(statement, dialect, keys)
    return _BY_POSITION[key]


def _compiled_by_position(statement: UpdateBase, dialect: Dialect, keys: tuple[str, ...]) -> ByPosition | None:
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    names = tuple(compiled.positiontup or ())
    # a value the rows do not give (a Python-side default, one written into the statement) is SQLAlchemy's
    if compiled.effective_returning or not names or not set(names) <= set(keys):
        return None
    processors = [compiled._bind_processors.get(name) for name in names]
    if not all(bind is None or callable(bind) for bind in processors):  # a tuple's processors
        return None
    first = names[0]
    values = operator.itemgetter(*names) if len(names) > 1 else lambda row: (row[first],)
    processed = tuple((index, cast(Callable[[Any], Any], bind)) for index, bind in enumerate(processors) if bind)
    return ByPosition(compiled.string, values, processed)


class SQLiteEngine(AsyncEngine):
    """SQLite has one writer at a time. This process's writers queue on an asyncio lock rather
    than on SQLite's busy handler, which polls with growing sleeps (up to 100 ms each): a worker
    with a dozen deliveries in flight spent most of its time there. Other processes on the same
    file still wait through ``busy_timeout``.

    :meth:`transaction` runs a transaction's statements on the event loop's thread with a
    connection of its own: aiosqlite hands every cursor, statement, fetch and close to its thread
    and back (four hand-overs a statement, each waiting for the GIL), and a group commit spent
    more time in those than in SQLite. Only COMMIT (which writes the log), and BEGIN when it must
    wait for another process's write lock, go to a thread, so the loop never waits on them."""

    def __init__(self, sync_engine: Engine) -> None:
        super().__init__(sync_engine)
        self._writer = asyncio.Lock()
        self._direct: Engine | None = None
        self._reading: Engine | None = None

    @contextlib.asynccontextmanager
    async def begin(self) -> AsyncIterator[AsyncConnection]:
        async with self._writer, super().begin() as conn:
            yield conn

    async def transaction(self, body: Callable[[Executor], Awaitable[T]]) -> T:
        """``body`` in one write transaction, its statements run as they come, without a hand-over."""
        async with self._writer:
            with self._direct_engine().connect() as conn:
                if not _begun_at_once(conn):  # another process writes: wait for it on a thread
                    await _to_thread_to_the_end(conn.begin)
                result = _run_inline(conn, body)
                await _to_thread_to_the_end(conn.commit)  # writing the log: the loop serves requests meanwhile
                return result

    async def read(self, body: Callable[[Executor], Awaitable[T]]) -> T:
        """``body``'s statements in one read transaction, run at once on the loop's thread: a reader
        never waits for a writer (WAL), so only the reads themselves hold the loop. For small reads (a
        claimed group's rows), not for walking a table."""
        if self._reading is None:
            self._reading = self._sync_engine()
        with self._reading.connect().execution_options(**{READ_ONLY: True}) as conn, conn.begin():
            return _run_inline(conn, body)

    def _direct_engine(self) -> Engine:
        if self._direct is None:
            self._direct = self._sync_engine(WRITER_CACHE)
        return self._direct

    def _sync_engine(self, *pragmas: str) -> Engine:
        """A connection of its own on the same file, without aiosqlite (its own pool: the writer's
        connection is busy on a thread while it commits, and a read must not wait for it)."""
        url = self.sync_engine.url.set(drivername="sqlite+pysqlite")
        connect_args = {"timeout": 30, "check_same_thread": False}  # BEGIN waits on a thread, the rest here
        engine = sqlalchemy.create_engine(url, pool_size=1, max_overflow=0, connect_args=connect_args, **JSON_CODEC)
        return _configured(engine, *pragmas)

    async def dispose(self, close: bool = True) -> None:
        await super().dispose(close)
        for engine in (self._direct, self._reading):
            if engine is not None:
                engine.dispose(close)
        self._direct = self._reading = None


def _begun_at_once(conn: Connection) -> bool:
    """BEGIN IMMEDIATE here and now, or False when another process holds the write lock: a hand-over to
    a thread costs more than the whole of a small transaction, and in one process the lock is free
    (this process's writers queue on the asyncio lock)."""
    raw = conn.connection.driver_connection
    assert raw is not None, "an open connection has its driver's"
    raw.execute("PRAGMA busy_timeout=0")
    try:
        conn.begin()
    except sa_exc.OperationalError as error:
        if getattr(error.orig, "sqlite_errorcode", None) != sqlite3.SQLITE_BUSY:  # "database is locked"
            raise
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    return True


async def _to_thread_to_the_end(call: Callable[[], object]) -> None:
    """``call`` on a worker thread; a caller cancelled meanwhile still waits for it to end, since
    the connection it uses is not free until then."""
    running = asyncio.ensure_future(asyncio.to_thread(call))
    try:
        await asyncio.shield(running)
    except asyncio.CancelledError:
        await running
        raise


def _run_inline(conn: Connection, body: Callable[[Executor], Awaitable[T]]) -> T:
    """Drive ``body`` to its end at once: it awaits nothing but :class:`Inline`'s statements, which
    never suspend. Anything else it awaits is a bug, refused (and its transaction rolled back)."""
    step = body(Inline(conn)).__await__()
    try:
        next(step)
    except StopIteration as done:
        return cast(T, done.value)
    step.close()
    raise RuntimeError("a SQLite transaction awaited something other than its statements")


async def transaction(engine: AsyncEngine, body: Callable[[Executor], Awaitable[T]]) -> T:
    """``body`` in one write transaction (on SQLite without aiosqlite's hand-overs: see :class:`SQLiteEngine`)."""
    if isinstance(engine, SQLiteEngine):
        return await engine.transaction(body)
    async with engine.begin() as conn:
        return await body(conn)


async def read(engine: AsyncEngine, body: Callable[[Executor], Awaitable[T]]) -> T:
    """``body`` in one read transaction (on SQLite on the loop's thread, without aiosqlite's hand-overs:
    :meth:`SQLiteEngine.read`); small reads only."""
    if isinstance(engine, SQLiteEngine):
        return await engine.read(body)
    async with reader(engine).connect() as conn:
        return await body(conn)


async def flush_to_disk(engine: AsyncEngine) -> bool:
    """SQLite: copy the write-ahead log into the database file and truncate it, so what a
    transaction overwrote is nowhere on disk (the log keeps old and new page images until then).
    False while a reader holds the log open: try again later. PostgreSQL: nothing to do here."""
    if engine.dialect.name != "sqlite":
        return True
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None, "an open connection has its driver's"
        cursor = await driver.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        busy, _log, _done = await cursor.fetchone()
        return not busy


def reader(engine: AsyncEngine) -> AsyncEngine:
    """The same engine for read-only work: on SQLite its transactions don't take the write
    lock, so reads run beside a writer (WAL)."""
    return engine.execution_options(**{READ_ONLY: True})


def insert(conn: Executor, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT on both backends."""
    return _insert(conn.dialect.name, table)


def _insert(dialect: str, table: Table) -> Any:
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def insert_new(conn: Executor, table: Table, keys: Sequence[str]) -> Any:
    """An INSERT that leaves a row whose ``keys`` exist as it is, built once per shape: a statement made
    afresh costs more to build and to look up in the compiled cache than a small group costs to write."""
    return _insert_new(conn.dialect.name, table, tuple(keys))


@functools.cache
def _insert_new(dialect: str, table: Table, keys: tuple[str, ...]) -> Any:
    return _insert(dialect, table).on_conflict_do_nothing(index_elements=list(keys))


async def upsert(conn: Executor, table: Table, rows: Sequence[dict[str, Any]], keys: list[str]) -> None:
    """Insert ``rows`` (all with the same columns), or update the ones whose ``keys`` exist."""
    if rows:
        await conn.execute(_upsert(conn.dialect.name, table, tuple(rows[0]), tuple(keys)), list(rows))


@functools.cache
def _upsert(dialect: str, table: Table, columns: tuple[str, ...], keys: tuple[str, ...]) -> Any:
    """Built once per shape: ``excluded`` makes a copy of every column of the table each time."""
    statement = _insert(dialect, table)
    changes = {name: statement.excluded[name] for name in columns if name not in keys}
    return statement.on_conflict_do_update(index_elements=list(keys), set_=changes)


RETRYABLE_STATES = ("08", "40001", "40P01", "53", "57P03")  # connection lost, conflict, out of resources, starting


def rows_in(columns: Sequence[ColumnElement[Any]], rows: Sequence[tuple[Any, ...]]) -> ColumnElement[bool]:
    """``(columns) IN rows``, with the first column's own ``IN`` beside it: SQLite answers a row value
    ``IN`` a list by scanning the whole table, and searches the first column's index for this."""
    return and_(columns[0].in_(sorted({row[0] for row in rows})), tuple_(*columns).in_(rows))


def store_busy(exc: BaseException) -> bool:
    """The store could not take the request now: no pooled connection came free in time, the
    server refused a connection (too many clients, starting up, gone), a conflict it asks to
    retry, or SQLite's lock wait ran out. Its transaction rolled back: retrying is safe."""
    if isinstance(exc, sa_exc.TimeoutError | sa_exc.OperationalError | sa_exc.InterfaceError | OSError):
        return True
    state = str(getattr(getattr(exc, "orig", None), "sqlstate", None) or "")
    return isinstance(exc, sa_exc.DBAPIError) and state.startswith(RETRYABLE_STATES)
