"""The durable record of `sld serve`: every prompt from the moment it is queued, its result, and the
files it wrote, in one SQLite database in the output folder.

A prompt row goes queued → running → done; only done rows are history (ComfyUI's `/history` shows a
prompt once it has finished). Each change is one committed transaction (WAL journal, synchronous=FULL),
so a server killed at any moment leaves a consistent database. At start-up, rows still queued or running
belong to a server that died: they become done with an error saying so, and are not re-run (re-running
could repeat whatever killed the server, and the client that queued them is gone; it can re-queue).
"""
import json
import sqlite3
import threading
import time

DB_NAME = ".sld-serve-history.sqlite3"  # hidden: /view never serves hidden or non-image files
MAX_HISTORY = 10000  # ComfyUI's MAXIMUM_HISTORY_SIZE: the oldest finished prompts are dropped past it

SCHEMA = """
CREATE TABLE IF NOT EXISTS prompts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    prompt_id TEXT UNIQUE NOT NULL,
    state TEXT NOT NULL,          -- queued | running | done
    item TEXT NOT NULL,           -- JSON [number, prompt_id, prompt, extra_data, outputs_to_execute]
    result TEXT,                  -- JSON {"outputs", "status", "meta"} once done
    created REAL NOT NULL,
    finished REAL
);
CREATE TABLE IF NOT EXISTS files (
    type TEXT NOT NULL, subfolder TEXT NOT NULL, filename TEXT NOT NULL,
    prompt_id TEXT NOT NULL,
    checked INTEGER NOT NULL,     -- 1: written by a prompt that ran under --require-checker
    PRIMARY KEY (type, subfolder, filename)
);
"""


class History:
    """Prompts and files of one output folder. Thread-safe (one connection behind a lock)."""

    def __init__(self, path):
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self):
        with self._lock:
            self._db.close()

    def _write(self, sql, args=()):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                cursor = self._db.execute(sql, args)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            return cursor.rowcount

    def _read(self, sql, args=()):
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def recover(self):
        """Close the rows a dead server left queued or running as failed; returns [(prompt_id, state)]."""
        lost = self._read("SELECT prompt_id, state, item FROM prompts WHERE state != 'done' ORDER BY seq")
        for prompt_id, state, item in lost:
            reason = ("the server stopped while this prompt was running (killed or crashed); it was not re-run"
                      if state == "running" else "the server stopped before this prompt ran; it was not re-run")
            message = {"prompt_id": prompt_id, "node_id": None, "node_type": None, "executed": [],
                       "exception_message": reason, "exception_type": "ServerStopped", "traceback": [],
                       "current_inputs": {}, "current_outputs": [], "timestamp": int(time.time() * 1000)}
            result = {"outputs": {}, "meta": {},
                      "status": {"status_str": "error", "completed": False, "messages": [["execution_error", message]]}}
            self._write("UPDATE prompts SET state='done', result=?, finished=? WHERE prompt_id=?",
                        (json.dumps(result), time.time(), prompt_id))
        return [(prompt_id, state) for prompt_id, state, _ in lost]

    def next_number(self):
        """ComfyUI numbers prompts 0, 1, 2, ...; a restarted server continues after the last one."""
        row = self._read("SELECT MAX(seq) FROM prompts")[0][0]
        return 0 if row is None else int(row)

    def known(self, prompt_id):
        return bool(self._read("SELECT 1 FROM prompts WHERE prompt_id=?", (prompt_id,)))

    def queued(self, item):
        self._write("INSERT INTO prompts (prompt_id, state, item, created) VALUES (?, 'queued', ?, ?)",
                    (item[1], json.dumps(item), time.time()))

    def started(self, prompt_id):
        self._write("UPDATE prompts SET state='running' WHERE prompt_id=?", (prompt_id,))

    def dropped(self, prompt_ids):
        """Prompts taken off the queue before they ran (POST /queue clear or delete): no history."""
        for prompt_id in prompt_ids:
            self._write("DELETE FROM prompts WHERE prompt_id=? AND state='queued'", (prompt_id,))

    def finished(self, prompt_id, result, files, checked):
        """Record a prompt's result and the files it wrote, in one transaction."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute("UPDATE prompts SET state='done', result=?, finished=? WHERE prompt_id=?",
                                 (json.dumps(result), time.time(), prompt_id))
                self._db.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?)",
                                     [(f["type"], f["subfolder"], f["filename"], prompt_id, int(checked)) for f in files])
                self._db.execute("DELETE FROM prompts WHERE state='done' AND seq NOT IN (SELECT seq FROM prompts "
                                 "WHERE state='done' ORDER BY seq DESC LIMIT ?)", (MAX_HISTORY,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def entries(self, prompt_id=None, max_items=None, offset=-1):
        """ComfyUI's /history document: {prompt_id: {"prompt", "outputs", "status", "meta"}}, oldest first;
        `offset` < 0 with `max_items` means the last `max_items`, as ComfyUI's get_history."""
        if prompt_id is not None:
            rows = self._read("SELECT prompt_id, item, result FROM prompts WHERE state='done' AND prompt_id=?",
                              (prompt_id,))
        else:
            count = self._read("SELECT COUNT(*) FROM prompts WHERE state='done'")[0][0]
            if offset < 0:
                offset = count - max_items if max_items is not None else 0
            limit = -1 if max_items is None else max_items
            rows = self._read("SELECT prompt_id, item, result FROM prompts WHERE state='done' ORDER BY seq "
                              "LIMIT ? OFFSET ?", (limit, max(offset, 0)))
        return {pid: {"prompt": json.loads(item), **json.loads(result)} for pid, item, result in rows}

    def delete(self, prompt_ids=None):
        """POST /history: forget finished prompts (all when `prompt_ids` is None); their files stay."""
        if prompt_ids is None:
            self._write("DELETE FROM prompts WHERE state='done'")
        for prompt_id in prompt_ids or ():
            self._write("DELETE FROM prompts WHERE state='done' AND prompt_id=?", (prompt_id,))

    def file_checked(self, type_, subfolder, filename):
        """True/False: the file was written by a prompt with/without the checker policy; None: unknown."""
        rows = self._read("SELECT checked FROM files WHERE type=? AND subfolder=? AND filename=?",
                          (type_, subfolder, filename))
        return bool(rows[0][0]) if rows else None
