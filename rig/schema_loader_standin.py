"""A stand-in for the ScalarDB Schema Loader image (the real one is Java), run by the rig's pod runner.

It behaves as the loader does as far as the plugin can see, its log and its
exit code:

    schema_loader_standin.py -c PROPERTIES -f SCHEMA_JSON [--coordinator] [-D]

- reads the properties file: `scalar.db.storage`, `scalar.db.contact_points`,
  `scalar.db.username` and `scalar.db.password` must all be there;
- validates the schema: each key `namespace.table`, each table with a
  non-empty `partition-key`, `columns` of ScalarDB types, an optional
  `clustering-key` (`col`, `col ASC` or `col DESC`) and `transaction`
  (boolean), every key column among the columns;
- "connects" to the database: the rig's VPC has one PostgreSQL database, at
  host `db` port 5432 (`jdbc:postgresql://db:5432/<database>`); any other
  host or port fails as a JDBC connection does, naming the host; a user or
  password other than the database's account (`.rig/database.json`, written
  by `rig up`) fails as PostgreSQL's password authentication does;
- then logs one line per namespace and table created (or deleted with -D),
  and the coordinator table with --coordinator, and exits 0.

Any problem is one ERROR line and exit 1. The password is never printed.
"""

import datetime
import json
import os
import re
import sys
from pathlib import Path

DATABASE = ("db", 5432)
# This rig's database account (the pod runner says which rig's; `.rig` by default).
ACCOUNT = Path(os.environ.get("RIG_DATABASE_ACCOUNT") or Path(__file__).resolve().parent.parent / ".rig" / "database.json")
TYPES = {"BOOLEAN", "INT", "BIGINT", "FLOAT", "DOUBLE", "TEXT", "BLOB", "DATE", "TIME", "TIMESTAMP",
         "TIMESTAMPTZ"}
TABLE_KEYS = {"partition-key", "clustering-key", "columns", "transaction", "secondary-index", "compaction-strategy",
              "network-strategy", "replication-factor", "ru"}
REQUIRED = ["scalar.db.storage", "scalar.db.contact_points", "scalar.db.username", "scalar.db.password"]


def line(level, where, message):
    t = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S,%f")[:-3]
    print(f"{t} [{level:<5} com.scalar.db.schemaloader.{where}] {message}", flush=True)


def fail(where, message):
    line("ERROR", where, message)
    sys.exit(1)


def parse_args(argv):
    args = {"coordinator": False, "delete": False}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("-c", "--config") and i + 1 < len(argv):
            args["config"], i = argv[i + 1], i + 2
        elif a in ("-f", "--schema-file") and i + 1 < len(argv):
            args["schema"], i = argv[i + 1], i + 2
        elif a == "--coordinator":
            args["coordinator"], i = True, i + 1
        elif a in ("-D", "--delete-all"):
            args["delete"], i = True, i + 1
        else:
            fail("SchemaLoader", f"Unknown option: '{a}'")
    for key, flag in (("config", "-c"), ("schema", "-f")):
        if key not in args:
            fail("SchemaLoader", f"Missing required option: '{flag}'")
    return args


def read_properties(path):
    props = {}
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        fail("SchemaLoader", f"Reading the properties file {path} failed: {e.strerror}")
    for raw in text.splitlines():
        raw = raw.strip()
        if not raw or raw[0] in "#!":
            continue
        m = re.match(r"([^=:\s]+)\s*[=:\s]\s*(.*)$", raw)
        key, value = (m.group(1), m.group(2)) if m else (raw, "")
        props[key] = value.strip()
    for key in REQUIRED:
        if not props.get(key):
            fail("SchemaLoader", f"The property {key} is missing in {path}")
    return props


def read_schema(path):
    try:
        text = open(path, encoding="utf-8").read()
    except OSError as e:
        fail("SchemaLoader", f"Reading the schema file {path} failed: {e.strerror}")
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as e:
        fail("SchemaParser", f"Parsing the schema file failed: {e.msg} at line {e.lineno} column {e.colno}")
    if not isinstance(schema, dict) or not schema:
        fail("SchemaParser", "Parsing the schema file failed: the schema must be a non-empty JSON object")
    tables = []
    for full, table in schema.items():
        namespace, dot, name = full.partition(".")
        if not dot or not namespace or not name or "." in name:
            fail("SchemaParser", f"Parsing the schema file failed: the table name {full!r} must be "
                                 "in the format 'namespace.table'")
        if not isinstance(table, dict):
            fail("SchemaParser", f"Parsing the schema file failed: the definition of {full} must be a JSON object")
        unknown = sorted(set(table) - TABLE_KEYS)
        if unknown:
            fail("SchemaParser", f"Parsing the schema file failed: unknown key(s) {', '.join(unknown)} in {full}")
        columns = table.get("columns")
        if not isinstance(columns, dict) or not columns:
            fail("SchemaParser", f"Parsing the schema file failed: {full} must have columns")
        for col, kind in columns.items():
            if not isinstance(kind, str) or kind.upper() not in TYPES:
                fail("SchemaParser", f"Parsing the schema file failed: the data type {kind!r} of the column "
                                     f"{col} in {full} is not supported")
        pk = table.get("partition-key")
        if not isinstance(pk, list) or not pk or not all(isinstance(c, str) for c in pk):
            fail("SchemaParser", f"Parsing the schema file failed: {full} must have a partition-key")
        ck = table.get("clustering-key", [])
        if not isinstance(ck, list) or not all(isinstance(c, str) for c in ck):
            fail("SchemaParser", f"Parsing the schema file failed: the clustering-key of {full} must be a list")
        keys = list(pk)
        for c in ck:
            parts = c.split()
            if len(parts) not in (1, 2) or (len(parts) == 2 and parts[1].upper() not in ("ASC", "DESC")):
                fail("SchemaParser", f"Parsing the schema file failed: invalid clustering key {c!r} in {full}")
            keys.append(parts[0])
        for k in keys:
            if k not in columns:
                fail("SchemaParser", f"Parsing the schema file failed: the key column {k} of {full} "
                                     "is not among its columns")
        if "transaction" in table and not isinstance(table["transaction"], bool):
            fail("SchemaParser", f"Parsing the schema file failed: transaction of {full} must be true or false")
        tables.append((namespace, name))
    return tables


def connect(props):
    """The database the contact points name, or a failure as a JDBC driver reports it."""
    storage, points = props["scalar.db.storage"], props["scalar.db.contact_points"]
    if storage != "jdbc":
        host = points.split(",")[0].strip()
        fail("SchemaLoader", f"Connecting to the {storage} storage at {host} failed: {host} is not reachable "
                             "from the rig's VPC (it has one PostgreSQL database, db:5432)")
    m = re.match(r"^jdbc:(\w+)://([^/:?]+)(?::(\d+))?(/[^?]*)?", points)
    if not m:
        fail("SchemaLoader", f"Connecting to the database failed: No suitable driver found for {points}")
    driver, host, port = m.group(1), m.group(2), int(m.group(3) or 5432)
    if driver != "postgresql" or (host, port) != DATABASE:
        fail("SchemaLoader", f"Connecting to the database failed: org.postgresql.util.PSQLException: The "
                             f"connection attempt failed. (java.net.UnknownHostException: {host})"
             if host != DATABASE[0] else
             f"Connecting to the database failed: org.postgresql.util.PSQLException: Connection to {host}:{port} "
             "refused. Check that the hostname and port are correct and that the postmaster is accepting "
             "TCP/IP connections.")


def authenticate(props):
    """PostgreSQL's answer to the user and password the properties give."""
    account = json.loads(ACCOUNT.read_text())
    user = props["scalar.db.username"]
    if (user, props["scalar.db.password"]) != (account["user"], account["password"]):
        fail("SchemaLoader", "Connecting to the database failed: org.postgresql.util.PSQLException: FATAL: "
                             f'password authentication failed for user "{user}"')


def main():
    args = parse_args(sys.argv[1:])
    props = read_properties(args["config"])
    tables = read_schema(args["schema"])
    connect(props)
    authenticate(props)
    namespaces = sorted({ns for ns, _ in tables})
    if args["delete"]:
        for ns, name in tables:
            line("INFO", "SchemaOperator", f"Deleting the table {name} in the namespace {ns} succeeded.")
        for ns in namespaces:
            line("INFO", "SchemaOperator", f"Deleting the namespace {ns} succeeded.")
        if args["coordinator"]:
            line("INFO", "SchemaOperator", "Deleting the coordinator tables succeeded.")
    else:
        for ns in namespaces:
            line("INFO", "SchemaOperator", f"Creating the namespace {ns} succeeded.")
        for ns, name in tables:
            line("INFO", "SchemaOperator", f"Creating the table {name} in the namespace {ns} succeeded.")
        if args["coordinator"]:
            line("INFO", "SchemaOperator", "Creating the coordinator tables succeeded.")
    line("INFO", "SchemaLoader", "Schema Loader completed.")


if __name__ == "__main__":
    main()
