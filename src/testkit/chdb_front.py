"""ClickHouse engines for the tests: chDB (ClickHouse's own engine,
in-process: PyPI `chdb-core` 26.9, or `chdb` 3.0.1 for ClickHouse 24.8) behind
the subset of ClickHouse's HTTP interface the daemon uses. The daemon's SQL runs unchanged (with
`--one-session`, a read of the reader user's gets `SETTINGS readonly = 1`
appended, below).

- `POST /` with the query in the body (and/or `GET`/`POST` with `?query=`,
  which ClickHouse puts before the body); `?database=` selects the database;
  other URL parameters are settings, refused for a read-only user as
  ClickHouse refuses them.
- Credentials by `Authorization: Basic`, `X-ClickHouse-User`/`X-ClickHouse-Key`
  or `?user=`/`?password=`; `default` (no password) may write; the reader
  user may read only its own database, and is held to `readonly = 1`:
  - on chDB 4.x / chdb-core (many sessions in one process) it runs on a
    second session opened with `readonly=1`, so the engine itself refuses
    its writes and setting changes;
  - with `--one-session` (chdb before 4.x: one engine session per process,
    opening a second closes the first) every user shares the one read-write
    session, and the front holds the reader to `readonly = 1` itself: the
    engine's own parser (`formatQuerySingleLine`, at the session's
    `max_query_size`) must find exactly one statement; the front refuses a
    statement that is not a read (SELECT, WITH, SHOW, DESCRIBE, EXISTS,
    EXPLAIN), a SET, a SETTINGS clause and INTO OUTFILE with ClickHouse's
    own READONLY errors; a read then runs with `SETTINGS readonly = 1`
    appended, so the engine applies readonly to it (table functions refused,
    `getSetting('readonly')` is 1). See `readonly_refusal`.
- Errors as ClickHouse sends them: the engine's text plus the version, the
  HTTP status of ClickHouse's `exceptionCodeToHTTPStatus`, and the
  `X-ClickHouse-Exception-Code` header.
- `SIGSTOP` hangs it, `SIGKILL` kills it; restarted on the same `--data`
  directory, it has the same tables.

Usage: chdb_front.py --data DIR --port-file FILE --reader USER
--reader-password-sha256 HEX --reader-database DB [--one-session]. It binds a
free loopback port and writes it to FILE once it answers. It runs on chdb 3.x
(ClickHouse 24.8, with `--one-session`) and chdb-core 26.x.
"""

import argparse
import base64
import hashlib
import hmac
import os
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb

VERSION = chdb.engine_version

# ClickHouse's exceptionCodeToHTTPStatus (src/Server/HTTP/), by error name.
STATUS_BY_NAME = {
    "REQUIRED_PASSWORD": 401,
    **{n: 403 for n in ["UNKNOWN_USER", "WRONG_PASSWORD", "AUTHENTICATION_FAILED",
                        "SET_NON_GRANTED_ROLE", "ACCESS_DENIED"]},
    **{n: 400 for n in [
        "BAD_ARGUMENTS", "CANNOT_COMPILE_REGEXP", "CANNOT_PARSE_TEXT",
        "CANNOT_PARSE_ESCAPE_SEQUENCE", "CANNOT_PARSE_QUOTED_STRING", "CANNOT_PARSE_DATE",
        "CANNOT_PARSE_DATETIME", "CANNOT_PARSE_NUMBER", "CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING",
        "CANNOT_PARSE_IPV4", "CANNOT_PARSE_IPV6", "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
        "CANNOT_PARSE_UUID", "DUPLICATE_COLUMN", "ILLEGAL_COLUMN", "UNKNOWN_ELEMENT_IN_AST",
        "UNKNOWN_TYPE_OF_AST_NODE", "THERE_IS_NO_COLUMN", "TOO_DEEP_AST", "TOO_BIG_AST",
        "UNEXPECTED_AST_STRUCTURE", "SYNTAX_ERROR", "INCORRECT_DATA", "TYPE_MISMATCH",
        "VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE"]},
    **{n: 404 for n in [
        "UNKNOWN_TABLE", "UNKNOWN_FUNCTION", "UNKNOWN_IDENTIFIER", "UNKNOWN_TYPE",
        "UNKNOWN_STORAGE", "UNKNOWN_DATABASE", "UNKNOWN_SETTING", "UNKNOWN_DIRECTION_OF_SORTING",
        "UNKNOWN_AGGREGATE_FUNCTION", "UNKNOWN_FORMAT", "UNKNOWN_DATABASE_ENGINE",
        "UNKNOWN_TYPE_OF_QUERY", "UNKNOWN_ROLE"]},
    "QUERY_IS_TOO_LARGE": 413,
    "NOT_IMPLEMENTED": 501,
    "SOCKET_TIMEOUT": 503,
    "CANNOT_OPEN_FILE": 503,
    "HTTP_LENGTH_REQUIRED": 411,
    "TIMEOUT_EXCEEDED": 408,
    "CANNOT_SCHEDULE_TASK": 503,
    "UNSUPPORTED_MEDIA_TYPE": 415,
}

# Settings ClickHouse's HTTP handler takes from the URL that are not settings.
NOT_SETTINGS = {"query", "database", "user", "password", "default_format", "query_id",
                "session_id", "session_timeout", "session_check", "compress",
                "decompress", "quota_key", "stacktrace"}


class ChError(Exception):
    def __init__(self, code, name, message):
        super().__init__(message)
        self.code = code
        self.name = name


def error_text(code, name, message):
    return f"Code: {code}. DB::Exception: {message}. ({name}) (version {VERSION} (official build))\n"


class Engine:
    def __init__(self, data, reader, reader_sha, reader_db, one_session):
        self.lock = threading.Lock()
        self.admin = chdb.connect(data)
        self.one_session = one_session
        # The reader's statement, read back by the engine's parser (a file,
        # not a literal: the parse then has the statement's own size limit).
        self.statement_file = os.path.join(os.path.dirname(os.path.abspath(data)),
                                           "reader-statement.sql")
        self.reader = self.admin if one_session else chdb.connect(f"{data}?readonly=1")
        self.reader_user = reader
        self.reader_sha = reader_sha
        self.reader_db = reader_db
        names = self.admin.query(
            "SELECT arrayStringConcat(arrayMap(x -> concat(toString(x), '=', errorCodeToName(x)), "
            "range(0, 2000)), ';')", "TabSeparated").bytes().decode().strip()
        self.codes = {}
        for pair in names.split(";"):
            code, _, name = pair.partition("=")
            if name:
                self.codes[name] = int(code)

    def fail(self, name, message):
        raise ChError(self.codes.get(name, 1001), name, message)

    def connection(self, user, password):
        if user == "default" and password == "":
            return self.admin, None
        digest = hashlib.sha256(password.encode()).hexdigest()
        if user == self.reader_user and hmac.compare_digest(digest, self.reader_sha):
            return self.reader, self.reader_db
        self.fail("AUTHENTICATION_FAILED",
                  f"{user}: Authentication failed: password is incorrect, or there is no user "
                  f"with such name")

    def run(self, user, password, database, settings, sql):
        conn, only_db = self.connection(user, password)
        if only_db is not None:
            if settings:
                self.fail("READONLY",
                          f"Cannot modify '{next(iter(settings))}' setting in readonly mode")
            if database not in ("", only_db):
                self.fail("ACCESS_DENIED",
                          f"{user}: Not enough privileges. To execute this query, it's necessary "
                          f"to have the grant SHOW DATABASES ON {database}.*")
        with self.lock:
            try:
                conn.query(f"USE {quote_ident(database or 'default')}", "TabSeparated")
                if only_db is not None and self.one_session:
                    sql = self.as_reader(user, sql)
                # Only `default` has settings here. On its own session they
                # stay set; on the shared one they go back to their defaults
                # afterwards, so that the reader never runs with them.
                try:
                    for k, v in settings.items():
                        conn.query(f"SET {quote_ident(k)} = {quote_str(v)}", "TabSeparated")
                    return conn.query(sql, "TabSeparated").bytes()
                finally:
                    if self.one_session:
                        for k in settings:
                            conn.query(f"SET {quote_ident(k)} = DEFAULT", "TabSeparated")
            except ChError:
                raise
            except Exception as e:  # chdb raises its engine's exception text
                raise from_engine(str(e), self.codes)

    def rows(self, sql):
        out = self.admin.query(sql + " FORMAT TabSeparatedRaw", "TabSeparated").bytes().decode()
        return [line.split("\t") for line in out.splitlines()]

    def as_reader(self, user, sql):
        """On the shared session: the reader's `sql` as it may run under
        `readonly = 1`, or a READONLY error as ClickHouse gives it."""
        with open(self.statement_file, "w", encoding="utf-8") as f:
            f.write(sql)
        try:
            [[canonical]] = self.rows(
                f"SELECT formatQuerySingleLine(raw_blob) "
                f"FROM file({quote_str(self.statement_file)}, 'RawBLOB')")
        except Exception as e:
            # The parse's own error, without the front's query around it.
            err = from_engine(str(e), self.codes)
            message = str(err).split(": while executing 'FUNCTION formatQuerySingleLine")[0]
            raise ChError(err.code, err.name, message.rstrip().rstrip("."))
        refusal = readonly_refusal(canonical)
        if refusal == "write":
            self.fail("READONLY", f"{user}: Cannot execute query in readonly mode")
        if refusal is not None:
            self.fail("READONLY", f"Cannot modify '{refusal}' setting in readonly mode")
        # One read statement: trailing `;` and blanks go, so that the clause
        # is the statement's own.
        return sql.rstrip().rstrip(";").rstrip() + "\nSETTINGS readonly = 1"


# What `readonly = 1` lets a user run, by the first keyword of the engine's
# canonical text of the statement.
READ_KINDS = {"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN"}


def readonly_refusal(canonical):
    """Why `readonly = 1` refuses the statement whose canonical text
    (`formatQuerySingleLine`: one statement, no comments, keywords in
    capitals) this is: "write", the name of a setting it changes, or None."""
    words = tokens(canonical)
    kind = next((w for w in words if w not in ("(", None)), "")
    if kind == "SET":
        return words[1] if len(words) > 1 and words[1] else "?"
    if kind not in READ_KINDS:
        return "write"
    for i, w in enumerate(words):
        # A SETTINGS clause: `SETTINGS name = value`.
        if w == "SETTINGS" and i + 2 < len(words) and words[i + 1] and words[i + 2] == "=":
            return words[i + 1]
        # INTO OUTFILE writes a file (chDB is its own client).
        if w == "INTO" and i + 1 < len(words) and words[i + 1] == "OUTFILE":
            return "write"
    return None


def tokens(text):
    """Words and punctuation outside quotes; a quoted string or identifier is None."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c in "'`\"":
            j = i + 1
            while j < n and text[j] != c:
                j += 2 if text[j] == "\\" else 1
            out.append(None)
            i = j + 1
        elif c.isalnum() or c == "_":
            j = i
            while j < n and (text[j].isalnum() or text[j] == "_"):
                j += 1
            out.append(text[i:j])
            i = j
        elif c.isspace():
            i += 1
        else:
            out.append(c)
            i += 1
    return out


def from_engine(text, codes):
    # "Code: 62. DB::Exception: <message>. (NAME)" -> its parts; chDB may wrap
    # the text once more in the same form.
    code, name, message = 1001, "STD_EXCEPTION", text
    if text.startswith("Code: "):
        head, _, rest = text.partition(". DB::Exception: ")
        try:
            code = int(head[len("Code: "):])
        except ValueError:
            pass
        message = rest or text
        while message.startswith("Code: ") and ". DB::Exception: " in message:
            message = message.partition(". DB::Exception: ")[2]
        message = message.rstrip()
        if message.endswith(")") and " (" in message:
            body, _, tail = message.rpartition(" (")
            name = tail[:-1]
            message = body
        # drop the inner "(version …)" chDB may leave
        if " (version " in message:
            message = message.split(" (version ")[0]
        message = message.rstrip(".")
    name = next((n for n, c in codes.items() if c == code), name)
    return ChError(code, name, message)


def quote_ident(s):
    return "`" + s.replace("\\", "\\\\").replace("`", "\\`") + "`"


def quote_str(s):
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse-chDB-front"

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.handle_query(b"")

    def do_POST(self):
        length = self.headers.get("Content-Length")
        if length is None:
            self.answer_error(ChError(381, "HTTP_LENGTH_REQUIRED",
                                      "The Transfer-Encoding is not chunked and there is no "
                                      "Content-Length header for POST request"))
            return
        self.handle_query(self.rfile.read(int(length)))

    def handle_query(self, body):
        url = urllib.parse.urlsplit(self.path)
        if url.path in ("/ping",):
            self.answer(200, b"Ok.\n")
            return
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        user = params.get("user") or self.headers.get("X-ClickHouse-User") or ""
        password = params.get("password") or self.headers.get("X-ClickHouse-Key") or ""
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                self.answer_error(ChError(516, "AUTHENTICATION_FAILED", "bad Basic credentials"))
                return
        user = user or "default"
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or ""
        settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS}
        # The daemon writes every byte that is not plain ASCII as an escape.
        sql = "\n".join(p for p in [params.get("query", ""), body.decode("utf-8", "replace")] if p)
        if not sql.strip():
            self.answer_error(ChError(62, "SYNTAX_ERROR", "Empty query"))
            return
        try:
            out = ENGINE.run(user, password, database, settings, sql)
        except ChError as e:
            self.answer_error(e)
            return
        self.answer(200, out, {"X-ClickHouse-Format": "TabSeparated"})

    def answer_error(self, e):
        status = STATUS_BY_NAME.get(e.name, 500)
        self.answer(status, error_text(e.code, e.name, str(e)).encode(),
                    {"X-ClickHouse-Exception-Code": str(e.code)})

    def answer(self, status, body, headers=None):
        self.send_response(status)
        self.send_header("Content-Type", "text/tab-separated-values; charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-ClickHouse-Server-Display-Name", "chdb-front")
        self.send_header("Keep-Alive", "timeout=10")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--reader", required=True)
    p.add_argument("--reader-password-sha256", required=True)
    p.add_argument("--reader-database", required=True)
    p.add_argument("--one-session", action="store_true",
                   help="chdb before 4.x: serve every user from one engine session")
    a = p.parse_args()
    global ENGINE
    ENGINE = Engine(a.data, a.reader, a.reader_password_sha256, a.reader_database,
                    a.one_session)
    server = ThreadingHTTPServer(("127.0.0.1", a.port), Handler)
    server.daemon_threads = True
    tmp = a.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(f"{server.server_address[1]}\n")
    os.rename(tmp, a.port_file)
    server.serve_forever()


if __name__ == "__main__":
    main()
