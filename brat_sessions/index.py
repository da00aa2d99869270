"""The local index: a SQLite cache of the log's projection, keyed by the WAL head.

It lives in `<git common dir>/brat_sessions/index.sqlite`, never in the
working tree, and can be deleted at any time: it is rebuilt from the log. A
refresh replays only the commits the index has not seen (everything after the
head it reflects, or after the point where a sync rebuilt the log on another
head). All folds are idempotent, so replaying a commit twice changes nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from pathlib import Path

from .errors import BadInput, Conflict, CorruptCommit, EnvironmentProblem, NotFound
from .rules import ID_RULE, valid_id
from .sessions.model import Session
from .sessions.rows import (
    EXITED_COLUMNS,
    SESSION_COLUMNS,
    SESSIONS_WITH_TASKS,
    session_from_row,
)
from .sessions.rows import SCHEMA as SESSION_SCHEMA

TYPE_CHECKING = False  # (not typing's: the warm path never imports typing)
if TYPE_CHECKING:  # the folds (and pygit2) load only when there is something to replay
    from typing import Any

    from .issues.projection import Issue, IssueFold
    from .sessions.projection import BlockFold, BlockRecord
    from .storage.context import RepoContext
    from .storage.events import Event
    from .storage.wal import Wal, WalCommit

FORMAT_VERSION = 14
PAGE_SIZE = 16384  # fewer half-empty pages than SQLite's 4 KiB
BUSY_TIMEOUT_S = 120
FLUSH_EVERY = 5000  # commits whose blocks are collected in memory before they are written
SNAPSHOT_FLUSH_CHUNKS = 20  # snapshot chunks (1,000 events each) whose blocks are collected first


def _warn(message: str) -> None:
    from .render import safe

    print(f"brat: {safe(message)}", file=sys.stderr)


# what the machine, not the index, is at fault for (sqlite3 errors' sqlite_errorname):
# writing fails (a full disk is SQLITE_FULL, or SQLITE_IOERR_WRITE past a file size
# limit). A read that fails (SQLITE_IOERR_SHORT_READ: an index deleted without its -wal
# file) is damage: the index is rebuilt.
_MACHINE_ERRORS = (
    "SQLITE_FULL",
    "SQLITE_IOERR_WRITE",
    "SQLITE_IOERR_FSYNC",
    "SQLITE_IOERR_DIR_FSYNC",
    "SQLITE_IOERR_TRUNCATE",
    "SQLITE_IOERR_NOMEM",
    "SQLITE_IOERR_SHMSIZE",  # (each process's -shm file: 32 KiB to write)
    "SQLITE_IOERR_SHMOPEN",
    "SQLITE_IOERR_SHMMAP",
    "SQLITE_IOERR_SHMLOCK",
    "SQLITE_CANTOPEN",
    "SQLITE_READONLY",
    "SQLITE_PERM",
    "SQLITE_NOMEM",
)


_WARNED_IN_MEMORY = False  # (the warning of `Index._memory_copy`, once a process)


class IndexUnwritable(EnvironmentProblem):
    """The index file cannot be written here (a full disk, a read-only file system, no
    permission): the index then works from a copy in memory for this process."""


def _raise_unless_damage(path: Path, exc: sqlite3.DatabaseError) -> None:
    """Raise what is not damage to the index, so that it is never deleted for it: a lock
    held too long (another writer), a full disk, an I/O or permission error (exit 5), a
    connection used wrongly (from another thread, or closed: that error stands)."""
    if isinstance(exc, sqlite3.ProgrammingError):
        raise exc
    text = str(exc).lower()
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        raise EnvironmentProblem(
            f"index {path} stayed locked by another brat process for {BUSY_TIMEOUT_S} s; try again"
        ) from None
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(_MACHINE_ERRORS):
        raise IndexUnwritable(f"index {path} cannot be written: {exc}") from None


def peek_status(path: Path, session_id: str) -> tuple[str | None, str | None]:
    """(the session's status, the log head) as the index file at `path` holds them, read as
    it is: never refreshed, never written, never waiting for a writer (a heartbeat must
    not wait for another process's rebuild); (None, None) when it cannot be read so."""
    try:
        db = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=0.5)
    except (sqlite3.Error, ValueError):
        return None, None
    try:
        if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
            return None, None
        head = db.execute("SELECT value FROM meta WHERE key='head'").fetchone()
        row = db.execute("SELECT status FROM sessions WHERE session_id=?", (session_id,)).fetchone()
        return (row[0] if row else None), (head[0] if head else None)
    except sqlite3.Error:
        return None, None
    finally:
        db.close()


class _Progress:
    """`brat: reading the log: 12,000/159,900 commits` on stderr, only when it is a terminal
    and a build takes longer than a second (BRAT_PROGRESS_AFTER seconds); erased at the end."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.after = float(os.environ.get("BRAT_PROGRESS_AFTER") or 1.0)
        self.enabled = sys.stderr.isatty()
        self.last = 0.0
        self.shown = False

    def _say(self, text: str) -> None:
        sys.stderr.write(f"\rbrat: {text}\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def tick(self, done: int, total: Callable[[], int | None]) -> None:
        """`total` is asked only once progress is shown (counting may cost a git call)."""
        now = time.monotonic()
        if self.enabled and now - self.start >= self.after and now - self.last >= 0.2:
            self.last = now
            self._say(f"reading the log: {done:,}/{total() or 0:,} commits")

    def read_all(self, done: int) -> None:
        if self.shown:
            self._say(f"reading the log: {done:,}/{done:,} commits")

    def stage(self, what: str) -> None:
        if self.shown:
            self._say(f"{what}...")

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


LEFT_BEHIND = 10_000  # commits of a chain the log left whose corrupt_commit problems go
REBUILD_WITHIN = 1000  # commits below the head where a marked index looks for its own head


class Index:
    """Read access to issues and sessions, refreshed from the log on demand."""

    from_snapshot: str | None = None  # the snapshot the last cold build started from

    def __init__(self, ctx: RepoContext, wal: Wal | None = None, snapshots: bool = True) -> None:
        self.ctx = ctx
        if wal is None:
            from .storage.wal import Wal

            wal = Wal(ctx)
        self.wal = wal
        self.snapshots = snapshots  # a cold build may start from a grite snapshot
        self.path: Path = ctx.data_dir / "index.sqlite"
        self.in_memory = False  # a copy in memory: the file cannot be written here
        self._reported: set[str] = set()
        try:
            self.db = self._open()
        except IndexUnwritable as exc:
            self.db = self._memory_copy(exc.message)

    def _memory_copy(self, why: str, copy: bool = True) -> sqlite3.Connection:
        """The index as this process can read it, copied into memory (empty when even that
        fails: it is then built from the log), for an index file that cannot be written
        here; one warning. The log is what counts: the copy is brought to its head and
        thrown away at the end."""
        global _WARNED_IN_MEMORY
        if not _WARNED_IN_MEMORY:  # (once a process: the light path and the full one both look)
            _WARNED_IN_MEMORY = True
            _warn(f"{why}; working from a copy in memory for this command (slower; the log is not affected)")
        self.in_memory = True
        mem = sqlite3.connect(":memory:", isolation_level=None)
        # (immutable: no -shm file to make, for a read-only folder)
        for mode in ("ro", "ro&immutable=1") if copy else ():
            try:
                src = sqlite3.connect(f"{self.path.as_uri()}?mode={mode}", uri=True, timeout=BUSY_TIMEOUT_S)
                try:
                    if src.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION:
                        src.backup(mem)
                        break
                finally:
                    src.close()
            except sqlite3.Error:
                continue
        try:  # (a damaged file copies as it is: checked in memory, else built anew there)
            usable = (
                mem.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
                and mem.execute("PRAGMA quick_check(1)").fetchone()[0] == "ok"
            )
        except sqlite3.DatabaseError:
            usable = False
        return mem if usable else self._fresh_memory()

    def _fresh_memory(self) -> sqlite3.Connection:
        return self._create(sqlite3.connect(":memory:", isolation_level=None))

    # opening -----------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise IndexUnwritable(f"index {self.path} cannot be made: {exc.strerror}") from None
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        db.execute(f"PRAGMA page_size={PAGE_SIZE}")  # (a new file only: before WAL mode)
        # SQLite answers "locked" at once, without waiting, while another process closes
        # the index (its last connection checkpoints the WAL): wait as for any lock
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                    db.close()
                    raise
                time.sleep(0.02)
        db.execute("PRAGMA synchronous=NORMAL")
        return db

    def _open(self) -> sqlite3.Connection:
        try:
            db = self._connect()
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version == FORMAT_VERSION:
                return db
            tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if tables:
                _warn(f"index {self.path} is from another format ({version}); rebuilding it")
                db.close()
                self._remove()
                db = self._connect()
            return self._create(db)
        except sqlite3.DatabaseError as exc:
            _raise_unless_damage(self.path, exc)
            _warn(f"index {self.path} is damaged ({exc}); rebuilding it")
            self._remove()
            return self._new()

    def _new(self) -> sqlite3.Connection:
        """A new, empty index in place of a damaged one; exit 5 when not even that works."""
        try:
            return self._create(self._connect())
        except sqlite3.DatabaseError as exc:
            _raise_unless_damage(self.path, exc)
            raise EnvironmentProblem(f"index {self.path} cannot be made: {exc}") from None

    def _remove(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            try:
                os.unlink(str(self.path) + suffix)
            except FileNotFoundError:
                pass
            except OSError as exc:  # (a read-only folder: the command goes on in memory)
                raise IndexUnwritable(f"index {self.path} cannot be replaced: {exc.strerror}") from None

    def _create(self, db: sqlite3.Connection) -> sqlite3.Connection:
        db.execute("BEGIN IMMEDIATE")
        if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
            from .issues.projection import SCHEMA as ISSUE_SCHEMA

            schema = (
                "CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT);"
                + ISSUE_SCHEMA
                + SESSION_SCHEMA
            )
            for statement in schema.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={FORMAT_VERSION}")
        db.execute("COMMIT")
        return db

    def close(self) -> None:
        self.db.close()

    # refreshing --------------------------------------------------------
    def indexed_head(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key='head'").fetchone()
        return row[0] if row and isinstance(row[0], str) else None  # (else: replayed whole)

    def refresh(self, head: str | None = None) -> Index:
        """Bring the index to `head` (default: the current WAL head). An index file that
        cannot be written here (a full disk, a read-only file system) is replaced by a copy
        in memory for this process, so that a command still answers, and one that has
        written to the log still finishes (its commit is there whatever the index says)."""
        for attempt in range(3):
            try:
                return self._refresh_naming(head)
            except IndexUnwritable as exc:
                if self.in_memory or attempt == 2:
                    raise
                self.db.close()
                self.db = self._memory_copy(exc.message)
            except sqlite3.DatabaseError as exc:  # (damage: the rest was raised as named)
                if attempt == 2 or (attempt and not self.in_memory):  # (no loop of rebuilds)
                    raise EnvironmentProblem(f"index {self.path} cannot be rebuilt: {exc}") from None
                self.db.close()
                if self.in_memory:  # (a copy read while it changed: built anew, in memory)
                    self.db = self._fresh_memory()
                    continue
                _warn(f"index {self.path} is damaged ({exc}); rebuilding it")
                try:
                    self._remove()
                    self.db = self._new()
                except IndexUnwritable as unwritable:  # (damaged, and cannot be replaced here)
                    self.db = self._memory_copy(unwritable.message, copy=False)
        return self  # (not reached)

    def _refresh_naming(self, head: str | None) -> Index:
        """`_refresh`, with what is not damage raised as what it is (`_raise_unless_damage`)."""
        try:
            return self._refresh(head)
        except sqlite3.DatabaseError as exc:
            _raise_unless_damage(self.path, exc)
            raise

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction, taken at once (BEGIN IMMEDIATE): committed at the end,
        rolled back on any error (unless SQLite already did, as on a full disk)."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.db.execute("COMMIT")
        except BaseException:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # (the error that brought us here is the one to report)
            raise

    def _refresh(self, head: str | None) -> Index:
        target = head if head is not None else self.wal.head()
        if self.indexed_head() == target and not self._gap_filled():
            return self  # (a log marked for a rebuild has moved: never at the indexed head)
        with self._writing():
            if head is None:  # as of now: a sync may have moved the log while we waited
                target = self.wal.head()
            elif self._stale(target):
                return self  # (the caller's compare-and-swap against it fails, and retries)
            left = self._left_behind(target)  # (None: the log was set back, or deleted)
            if left is None or self._rebuild_due(target):
                for table in ("meta", "issues", "members", "blocks", "sessions", "problems"):
                    self.db.execute(f"DELETE FROM {table}")
            elif left:  # commits of another chain: their corruption is no longer the log's
                self.db.executemany(
                    "DELETE FROM problems WHERE kind='corrupt_commit' AND commit_id=?", [(c,) for c in left]
                )
            current = self.indexed_head()
            if self._gap_filled():
                current = None  # the missing history arrived: replay all (idempotent)
            if current != target:
                self._replay(current, target)
        return self

    def recheck_corrupt(self) -> None:
        """Read again the commits skipped as corrupt (doctor): one readable now (a damaged
        or missing object repaired or fetched since) is folded, in any order, like all."""
        from .sessions import projection as session_proj

        skipped = self.db.execute("SELECT problem_id, commit_id FROM problems WHERE kind='corrupt_commit'")
        readable = []
        for problem_id, commit in skipped.fetchall():
            try:
                readable.append((problem_id, self.wal.read_commit(commit)))
            except (CorruptCommit, TypeError):
                continue  # still so
        head = self.indexed_head()
        readable = [(p, c) for p, c in readable if head is not None and self._on_log(head, c.oid)]
        if not readable:
            return
        from .issues.projection import IssueFold

        with self._writing():
            issues, blocks = IssueFold(self.db), session_proj.BlockFold(self.db)
            for problem_id, commit in readable:
                self._fold_commit(issues, blocks, commit, session_proj.prepare_commit(commit))
                self.db.execute("DELETE FROM problems WHERE problem_id=?", (problem_id,))
            issues.flush()
            blocks.finish()

    def _on_log(self, target: str, commit: str) -> bool:
        """Whether `commit` is in the history of the log at `target` (True when that cannot
        be told: a damaged history keeps what it reported)."""
        import pygit2

        try:
            return commit == target or bool(self.ctx.repo.descendant_of(target, commit))
        except (KeyError, ValueError, pygit2.GitError):
            return True

    def _left_behind(self, target: str | None) -> list[str] | None:
        """The commits of the indexed head's chain that the log at `target` left behind
        (those after where the chains meet: a sync re-appended them, or the log moved to
        another chain), at most LEFT_BEHIND of them; [] when it only moved on. None when the
        log was set back (to an older commit of its chain, or deleted) or the indexed head
        is gone: the index may hold events of commits the log no longer has, and is built
        anew (with its head gone, all is replayed anyway)."""
        current = self.indexed_head()
        if current is None or current == target:
            return []
        if target is None or self._since(current) is None:
            return None
        base = self.wal.chain_base(current, target)
        if base == target:
            return None
        left = []
        for oid in islice(self.wal.first_parents(current), LEFT_BEHIND):
            if oid == base:
                break
            left.append(oid)
        return left

    def mark_for_rebuild(self, marks: int = 1) -> None:
        """A sync is about to move the log to a chain that leaves out events of commits this
        index folded: once the log no longer holds the indexed head, the next refresh
        builds the index anew. Kept in the index itself (a count of the syncs that marked
        it), so that a process killed after moving the log, or another sync of this clone,
        still leaves it marked; a sync that then did not move the log takes its mark back
        (`marks=-1`)."""
        self.db.execute(
            "INSERT INTO meta VALUES('rebuild', max(0, ?)) ON CONFLICT(key) "
            "DO UPDATE SET value = max(0, CAST(value AS INTEGER) + ?)",
            (marks, marks),
        )

    def _rebuild_due(self, target: str | None) -> bool:
        """Marked, and the log at `target` has left the indexed head behind (not among
        the REBUILD_WITHIN newest commits of its chain: gone, or too far to look)."""
        row = self.db.execute("SELECT value FROM meta WHERE key='rebuild'").fetchone()
        if row is None or str(row[0]) in ("0", ""):
            return False
        current = self.indexed_head()
        if target is None or current is None:
            return current is not None
        return not self._holds(target, current)

    def _holds(self, target: str, commit: str) -> bool:
        """Whether `commit` is among the REBUILD_WITHIN newest of the chain at `target`."""
        return self.wal.on_chain(target, commit, REBUILD_WITHIN)

    def _stale(self, target: str | None) -> bool:
        """A head a caller read before the log moved on, to a chain that no longer holds it
        and that this index already folded: folding it would add events the log dropped."""
        current = self.indexed_head()
        if target is None or current is None or self._holds(target, current):
            return False
        return self.wal.head() != target

    def _since(self, current: str | None) -> str | None:
        if current is None:
            return None
        import pygit2

        try:
            self.ctx.repo[current]
            return current  # replay what came after it (or after where the chains meet)
        except (KeyError, ValueError, pygit2.GitError):
            return None  # gone (gc after a sync) or damaged: replay all, idempotently

    def _replay(self, current: str | None, target: str | None) -> None:
        from .issues import projection as issue_proj
        from .sessions import projection as session_proj

        db = self.db
        db.execute("PRAGMA cache_size=-16384")  # 16 MiB while folding
        if target is None:
            db.execute("DELETE FROM meta WHERE key='head'")
            return
        issues = issue_proj.IssueFold(db)
        blocks = session_proj.BlockFold(db)
        pending = 0
        since = self._since(current)
        start = self._from_snapshot(target, issues, blocks) if since is None and self.snapshots else None
        after = start or since
        replay = self.wal.replay_prepared(session_proj.prepare_commit, target, after)
        progress = _Progress()
        done = 0
        for done, (item, parsed) in enumerate(replay, 1):
            progress.tick(done, lambda: self.wal.total_commits(target, after))
            if isinstance(item, CorruptCommit):
                session_proj.add_problem(
                    db, f"commit:{item.commit}", "corrupt_commit", item.message, commit_id=item.commit
                )
                continue
            self._fold_commit(issues, blocks, item, parsed)
            pending += 1
            if pending >= FLUSH_EVERY:  # (issues stay in memory: they are written once, at the end)
                blocks.flush()
                pending = 0
        progress.read_all(done)
        progress.stage("folding sessions")
        issues.flush()
        blocks.finish()
        progress.done()
        db.execute("INSERT OR REPLACE INTO meta VALUES('head', ?)", (target,))
        # a walk to the root knows the gap anew; a snapshot holds the log below its wal_head
        if start is not None or self.wal.reached_root:
            db.execute("DELETE FROM meta WHERE key IN ('incomplete', 'gap_below')")
            if start is None and self.wal.root_gap:
                oldest = self.wal.oldest
                db.executemany(
                    "INSERT INTO meta VALUES(?, ?)",
                    [("incomplete", self.wal.root_gap), ("gap_below", oldest)],
                )

    def _from_snapshot(self, target: str, issues: IssueFold, blocks: BlockFold) -> str | None:
        """Fold the newest usable grite snapshot of the log at `target`; its wal_head, or None.

        Chunks are folded as they are read, inside a savepoint: a snapshot found bad on
        the way is undone, reported (`bad_snapshot`) and skipped, never trusted; with
        none, the whole log is replayed."""
        from .sessions.projection import add_problem, comment_rows
        from .storage.events import COMMENT_ADDED
        from .storage.snapshot import SnapshotError, snapshot_candidates, stream_snapshot

        problems: list[tuple[str, str]] = []
        found = None
        for candidate in snapshot_candidates(self.wal, target):
            if isinstance(candidate, tuple):
                problems.append(candidate)
                continue
            where = f"snapshot {candidate.ref}"
            self.db.execute("SAVEPOINT snapshot")
            try:
                for n, events in enumerate(stream_snapshot(self.wal, candidate), 1):
                    for ev in events:
                        if self._apply_event(issues, ev, None, where) and ev.kind == COMMENT_ADDED:
                            blocks.add(comment_rows(ev, None, where))
                    if n % SNAPSHOT_FLUSH_CHUNKS == 0:
                        blocks.flush()
            except SnapshotError as exc:
                self.db.execute("ROLLBACK TO snapshot")
                self.db.execute("RELEASE snapshot")
                issues.reset()
                blocks.reset()
                problems.append((candidate.ref, exc.reason))
                continue
            self.db.execute("RELEASE snapshot")
            found = candidate
            break
        self.db.execute("DELETE FROM problems WHERE kind='bad_snapshot'")
        for ref, reason in problems:
            add_problem(self.db, f"snapshot:{ref}", "bad_snapshot", f"snapshot {ref} skipped: {reason}")
        if found is None:
            return None
        from .storage.snapshot import SNAPSHOT_PREFIX, checked_snapshots

        checked_snapshots(self.ctx.data_dir).add(found.ref[len(SNAPSHOT_PREFIX) :], found.commit_oid or "")
        self.from_snapshot = found.ref
        return found.wal_head

    @property
    def incomplete(self) -> str | None:
        """Why the log here is not whole (shallow or partial clone), or None."""
        row = self.db.execute("SELECT value FROM meta WHERE key='incomplete'").fetchone()
        return row[0] if row else None

    def _gap_filled(self) -> bool:
        """True when the log was incomplete and its missing history is now here."""
        row = self.db.execute("SELECT value FROM meta WHERE key='gap_below'").fetchone()
        if row is None:
            return False
        try:
            self.wal.commit_ids(row[0])
        except (EnvironmentProblem, KeyError, ValueError):  # still damaged, or gone
            return False
        return self.wal.root_gap is None

    def _fold_commit(
        self, issues: IssueFold, blocks: BlockFold, commit: WalCommit, parsed: dict[bytes, Any]
    ) -> None:
        """Fold a commit's events: each into its issue, and a comment's blocks (`parsed`,
        from `prepare_commit`: keyed by the comments' event ids) unless its event is bad."""
        for ev in commit.events:
            if self._apply_event(issues, ev, commit.oid) and ev.event_id in parsed:
                blocks.add(parsed[ev.event_id])

    def _apply_event(
        self, issues: IssueFold, ev: Event, commit_id: str | None, origin: str | None = None
    ) -> bool:
        """Fold one event into its issue; False (and a reported problem) for a bad payload.
        `origin` says where the event was read when not from a commit (a snapshot)."""
        try:
            issues.apply(ev)
            return True
        except (TypeError, ValueError, IndexError) as exc:
            from .sessions.projection import add_problem

            add_problem(
                self.db,
                f"event:{ev.event_id.hex()}",
                "bad_event",
                f"event {ev.event_id.hex()} ({origin or f'commit {commit_id}'}) has a bad payload: {exc}",
                commit_id=commit_id,
                event_id=ev.event_id.hex(),
            )
            return False

    # problems ----------------------------------------------------------
    def problems(self) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT problem_id, kind, commit_id, event_id, session_id, message "
            "FROM problems ORDER BY kind, problem_id"
        ).fetchall()
        found = [dict(zip(("id", "kind", "commit_id", "event_id", "session_id", "message"), r)) for r in rows]
        holders: dict[str, list[str]] = {}
        for task_id, issue_id in self.db.execute(
            "SELECT task_id, issue_id FROM issues WHERE task_id IN (SELECT task_id FROM issues WHERE "
            "task_id IS NOT NULL AND created=1 GROUP BY task_id HAVING count(*) > 1) AND created=1 "
            "ORDER BY task_id, issue_id"
        ):
            holders.setdefault(task_id, []).append(issue_id)
        for task_id, ids in holders.items():
            message = f"task id {task_id} names more than one grite issue: {', '.join(ids)}"
            found.append(_problem(f"duplicate_task_id:{task_id}", "duplicate_task_id", message))
        for (iid,) in self.db.execute("SELECT issue_id FROM issues WHERE created=0 ORDER BY issue_id"):
            message = f"events for issue {iid}, whose IssueCreated is missing"
            found.append(_problem(f"orphan:{iid}", "orphan_events", message))
        return found

    def report_corrupt_commits(self) -> None:
        """Name each corrupt WAL commit, and an incomplete log, on stderr (once per process)."""
        gap = self.incomplete
        if gap and "incomplete" not in self._reported:
            self._reported.add("incomplete")
            _warn(f"warning: {gap}")
        for pid, message in self.db.execute(
            "SELECT problem_id, message FROM problems WHERE kind='corrupt_commit'"
        ):
            if pid not in self._reported:
                self._reported.add(pid)
                _warn(f"{message}; skipped")

    # issues ------------------------------------------------------------
    def issue(self, issue_id: str) -> Issue | None:
        from .issues.projection import load_issue

        return load_issue(self.db, issue_id)

    def find_task(self, ref: str) -> Issue:
        """A task issue by task id (`t-...`) or grite issue id (32 hex)."""
        ref = ref.strip()
        rows = self.db.execute(
            "SELECT issue_id FROM issues WHERE task_id=? AND created=1 ORDER BY issue_id LIMIT 11", (ref,)
        ).fetchall()
        if len(rows) > 1:  # anyone can label an issue with a task id, and pick its time too
            raise Conflict(
                f"task id {ref} names {len(rows)} grite issues ({', '.join(r[0][:12] for r in rows)}); "
                "give the grite issue id of the one meant (`brat sessions doctor` lists them)"
            )
        iid = rows[0][0] if rows else ref.lower()
        issue = self.issue(iid)
        if issue is None or not issue.created:
            raise NotFound(f"no task {ref}")
        return issue

    @contextmanager
    def reading(self) -> Iterator[None]:
        """One read transaction: what is read inside comes from one state of the index,
        whatever other processes write meanwhile."""
        self.db.execute("BEGIN")
        try:
            yield
        finally:
            self.db.execute("COMMIT")

    def unreadable(self, issue_id: str | None = None) -> list[dict[str, Any]]:
        """Sessions named only by blocks that cannot be read (bare rows: id, task, reason)."""
        sql = (
            "SELECT p.session_id, p.issue_id, i.task_id, p.message FROM problems p "
            "LEFT JOIN issues i ON i.issue_id = p.issue_id WHERE p.kind = 'malformed_block' "
            "AND p.session_id IS NOT NULL AND p.session_id NOT IN (SELECT session_id FROM sessions)"
        )
        args: list[str] = []
        if issue_id is not None:
            sql += " AND p.issue_id = ?"
            args.append(issue_id)
        rows: dict[str, dict[str, Any]] = {}
        for sid, iid, task, message in self.db.execute(sql + " ORDER BY p.problem_id", args):
            rows.setdefault(
                sid,
                {
                    "session_id": sid,
                    "task_id": task,
                    "grite_issue_id": iid,
                    "status": "unreadable",
                    "reason": message.split("): ", 1)[-1],
                },
            )
        return list(rows.values())

    def resolve_task(self, ref: str) -> Issue:
        """A task by id, or by a unique prefix of a task id or a grite issue id, like git.

        BadInput (exit 2) lists the candidates of an ambiguous prefix; NotFound (exit 3)
        suggests the nearest ids."""
        ref = ref.strip()
        try:
            return self.find_task(ref)
        except NotFound:
            pass
        if not valid_id(ref):
            raise NotFound(f"no task {ref[:80]!r}") from None
        rows = self.db.execute(
            "SELECT issue_id, task_id FROM issues WHERE created=1 AND task_id IS NOT NULL AND "
            "(task_id GLOB ? OR issue_id GLOB ?) LIMIT 11",
            (ref + "*", ref.lower() + "*"),
        ).fetchall()
        if len(rows) == 1:
            return self.find_task(rows[0][0])
        if rows:
            raise BadInput(_ambiguous("task", ref, [t for _, t in rows]))
        known = [t for (t,) in self.db.execute("SELECT task_id FROM issues WHERE task_id IS NOT NULL")]
        raise NotFound(_unknown("task", ref, known))

    def resolve_session(self, ref: str) -> str:
        """A session id from a full id, a unique prefix of one, or a unique prefix of its
        hex suffix (`0c26` for `s-20261124-0c26`); errors as in `resolve_task`."""
        ref = ref.strip()
        if not valid_id(ref):
            raise BadInput(f"not a valid session id: {ref[:80]!r} ({ID_RULE})")
        if self.db.execute("SELECT 1 FROM sessions WHERE session_id=?", (ref,)).fetchone():
            return ref
        bare = [b["session_id"] for b in self.unreadable()]
        if ref in bare:
            return ref
        prefixed = self.db.execute(
            "SELECT session_id FROM sessions WHERE session_id GLOB ? ORDER BY session_id LIMIT 11",
            (ref + "*",),
        ).fetchall()
        # a prefix of the part after the last `-` (`0c26` of `s-20261124-0c26`), not of the date
        suffixed = self.db.execute(
            "SELECT session_id FROM sessions WHERE session_id GLOB ? LIMIT 5000", ("*-" + ref + "*",)
        ).fetchall()
        rows = sorted(
            {sid for (sid,) in prefixed}
            | {sid for (sid,) in suffixed if sid.rsplit("-", 1)[-1].startswith(ref)}
        )
        rows += [sid for sid in bare if sid.startswith(ref) or sid.rsplit("-", 1)[-1].startswith(ref)]
        if len(rows) == 1:
            return str(rows[0])
        if rows:
            raise BadInput(_ambiguous("session", ref, rows))
        known = [sid for (sid,) in self.db.execute("SELECT session_id FROM sessions")]
        raise NotFound(_unknown("session", ref, known))

    def task_issues(self) -> Iterator[Issue]:
        for (iid,) in self.db.execute(
            "SELECT issue_id FROM issues WHERE task_id IS NOT NULL "
            "AND created=1 ORDER BY created_ts, issue_id"
        ).fetchall():
            issue = self.issue(iid)
            if issue is not None and "type:task" in issue.labels:
                yield issue

    def task_id_exists(self, task_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM issues WHERE task_id=?", (task_id,)).fetchone() is not None

    # sessions ----------------------------------------------------------
    def session_id_exists(self, session_id: str) -> bool:
        return (
            self.db.execute("SELECT 1 FROM blocks WHERE session_id=? LIMIT 1", (session_id,)).fetchone()
            is not None
        )

    def sessions(self, include_exited: bool = False, issue_id: str | None = None) -> list[Session]:
        sql = f"SELECT {SESSION_COLUMNS} FROM {SESSIONS_WITH_TASKS}"
        where, args = [], []
        if not include_exited:  # (the condition of the sessions_live index)
            where.append("s.status != 'exit'")
        if issue_id is not None:
            where.append("s.issue_id = ?")
            args.append(issue_id)
        if where:
            sql += " WHERE " + " AND ".join(where)
        rows = self.db.execute(sql, args).fetchall()
        found = [session_from_row(*row) for row in rows]
        found.sort(key=lambda s: (s.started_ts, s.session_id))
        return found

    def exited_rows(
        self, now: int, skew_ms: int, issue_id: str | None = None
    ) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
        """Exited sessions for `rows.exited_texts`, and the task id of each issue that has
        one: a row of stored text (EXITED_COLUMNS) for each, or (started_ts, session_id,
        text) made through Python for a session with a time later than now + skew
        (`settle` judges its times)."""
        limit = now + skew_ms
        args: dict[str, object] = {"limit": limit, "issue": issue_id}
        only = " AND s.issue_id = :issue" if issue_id is not None else ""
        rows: list[tuple[Any, ...]] = self.db.execute(
            f"SELECT {EXITED_COLUMNS} FROM sessions s WHERE s.status = 'exit' AND s.started_ts <= :limit "
            f"AND (s.top_beat IS NULL OR s.top_beat <= :limit){only}",
            args,
        ).fetchall()
        odd = self.db.execute(
            f"SELECT {SESSION_COLUMNS} FROM {SESSIONS_WITH_TASKS} WHERE s.status = 'exit' "
            f"AND (s.started_ts > :limit OR s.top_beat > :limit){only}",
            args,
        )
        for row in odd:
            session = session_from_row(*row).settle(now, skew_ms)
            rows.append((session.started_ts, session.session_id, json.dumps(session.to_json(now))))
        tasks = dict(self.db.execute("SELECT issue_id, task_id FROM issues WHERE task_id IS NOT NULL"))
        return rows, tasks

    def sessions_in_tree(self, session_id: str) -> list[Session]:
        """The session and every session below it (by parent links; cycles are cut)."""
        rows = self.db.execute(
            f"SELECT {SESSION_COLUMNS} FROM {SESSIONS_WITH_TASKS} "
            "WHERE s.session_id = ? OR json_extract(s.ext, '$.root_session_id') IN "
            "(?, (SELECT json_extract(ext, '$.root_session_id') FROM sessions WHERE session_id = ?))",
            (session_id, session_id, session_id),
        ).fetchall()
        found = {s.session_id: s for s in (session_from_row(*row) for row in rows)}
        tree, frontier = {session_id}, [session_id]
        while frontier:
            parent = frontier.pop()
            for s in found.values():
                if s.parent_session_id == parent and s.session_id not in tree:
                    tree.add(s.session_id)
                    frontier.append(s.session_id)
        return [found[sid] for sid in tree if sid in found]

    def newest_sessions(self) -> dict[str, tuple[str, str | None, int | None, str, str]]:
        """For each issue, its newest session: (status, exit_reason, exit_code, session_type,
        session_id). (SQLite takes the bare columns from the row of the MAX.)"""
        rows = self.db.execute(
            "SELECT issue_id, status, json_extract(body, '$.exit_reason'), "
            "json_extract(body, '$.exit_code'), json_extract(body, '$.session_type'), session_id, "
            "MAX(started_ts) FROM sessions GROUP BY issue_id"
        )
        return {r[0]: (r[1], r[2], r[3], r[4], r[5]) for r in rows}

    def newest_session_start(self, issue_id: str, exclude: str | None = None) -> int | None:
        row = self.db.execute(
            "SELECT MAX(started_ts) FROM sessions WHERE issue_id=? AND session_id != ?",
            (issue_id, exclude or ""),
        ).fetchone()
        return row[0] if row else None

    def session(self, session_id: str) -> Session:
        row = self.db.execute(
            f"SELECT {SESSION_COLUMNS} FROM {SESSIONS_WITH_TASKS} WHERE s.session_id=?",
            (session_id,),
        ).fetchone()
        if row is None:
            raise NotFound(f"no session {session_id}")
        return session_from_row(*row)

    def history(self, session_id: str) -> list[BlockRecord]:
        from .sessions.projection import load_blocks

        return load_blocks(self.db, session_id)


def open_index(ctx: RepoContext, refresh: bool = True) -> Index:
    index = Index(ctx)
    if refresh:
        index.refresh()
        index.report_corrupt_commits()
    return index


__all__ = ["Index", "open_index"]


def _ambiguous(what: str, ref: str, candidates: list[str]) -> str:
    shown = ", ".join(candidates[:10]) + (", ..." if len(candidates) > 10 else "")
    return f"{what} {ref!r} is ambiguous: {shown}"


def _problem(problem_id: str, kind: str, message: str) -> dict[str, Any]:
    """A problem found in the index itself, not in one commit, event or session."""
    return {
        "id": problem_id,
        "kind": kind,
        "commit_id": None,
        "event_id": None,
        "session_id": None,
        "message": message,
    }


def _unknown(what: str, ref: str, known: list[str]) -> str:
    import difflib

    near = difflib.get_close_matches(ref, known, n=3, cutoff=0.6)
    if not near and "-" not in ref:  # a hex part alone (`45f9`): compare it with theirs
        by_part: dict[str, list[str]] = {}
        for full in known:
            by_part.setdefault(full.rsplit("-", 1)[-1], []).append(full)
        parts = difflib.get_close_matches(ref, list(by_part), n=3, cutoff=0.6)
        near = [full for part in parts for full in by_part[part]][:3]
    return f"no {what} {ref}" + (f"; did you mean {', '.join(near)}?" if near else "")
