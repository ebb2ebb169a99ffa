//! ScalarDB schema files, checked before anything runs: JSON syntax, each
//! key `namespace.table`, a non-empty `partition-key`, every key column
//! declared in `columns`, column types the Schema Loader accepts, and
//! `transaction` a boolean. Every problem is reported with its JSON path and
//! line:column, not only the first.

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

use crate::error::{Error, Result};

/// Column types the ScalarDB Schema Loader accepts (case-insensitive).
pub const COLUMN_TYPES: &[&str] =
    &["BOOLEAN", "INT", "BIGINT", "FLOAT", "DOUBLE", "TEXT", "BLOB", "DATE", "TIME", "TIMESTAMP", "TIMESTAMPTZ"];

/// A JSON value with where it starts in the text.
#[derive(Debug, Clone)]
pub struct Spanned {
    pub line: usize,
    pub column: usize,
    pub value: Json,
}

#[derive(Debug, Clone)]
pub enum Json {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Spanned>),
    /// Keys keep their own positions.
    Object(Vec<(Spanned, Spanned)>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool => "a boolean",
            Json::Number => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// A position-keeping JSON reader, for text serde_json has already accepted.
struct Reader<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
    column: usize,
}

impl Reader<'_> {
    fn bump(&mut self) -> Option<char> {
        let c = self.chars.next()?;
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }
    fn skip_ws(&mut self) {
        while self.chars.peek().is_some_and(|c| c.is_whitespace()) {
            self.bump();
        }
    }
    fn value(&mut self) -> Option<Spanned> {
        self.skip_ws();
        let (line, column) = (self.line, self.column);
        let value = match *self.chars.peek()? {
            '{' => {
                self.bump();
                let mut members = vec![];
                loop {
                    self.skip_ws();
                    if self.chars.peek() == Some(&'}') {
                        self.bump();
                        break;
                    }
                    let key = self.value()?;
                    self.skip_ws();
                    self.bump(); // ':'
                    let v = self.value()?;
                    members.push((key, v));
                    self.skip_ws();
                    if self.bump()? == '}' {
                        break;
                    }
                }
                Json::Object(members)
            }
            '[' => {
                self.bump();
                let mut items = vec![];
                loop {
                    self.skip_ws();
                    if self.chars.peek() == Some(&']') {
                        self.bump();
                        break;
                    }
                    items.push(self.value()?);
                    self.skip_ws();
                    if self.bump()? == ']' {
                        break;
                    }
                }
                Json::Array(items)
            }
            '"' => {
                self.bump();
                let mut raw = String::from("\"");
                let mut escaped = false;
                loop {
                    let c = self.bump()?;
                    raw.push(c);
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                Json::String(serde_json::from_str(&raw).ok()?)
            }
            _ => {
                let mut word = String::new();
                while self.chars.peek().is_some_and(|c| !matches!(c, ',' | '}' | ']') && !c.is_whitespace()) {
                    word.push(self.bump()?);
                }
                match word.as_str() {
                    "null" => Json::Null,
                    "true" | "false" => Json::Bool,
                    _ => Json::Number,
                }
            }
        };
        Some(Spanned { line, column, value })
    }
}

/// One problem in a schema file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub fix: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} {}: {} (fix: {})", self.line, self.column, self.path, self.message, self.fix)
    }
}

/// A valid schema file.
#[derive(Debug, Clone)]
pub struct Schema {
    pub text: String,
    pub tables: Vec<String>,
}

impl Schema {
    /// The ScalarDB namespaces its tables live in.
    pub fn namespaces(&self) -> Vec<String> {
        let set: BTreeSet<_> =
            self.tables.iter().filter_map(|t| t.split_once('.').map(|(ns, _)| ns.to_string())).collect();
        set.into_iter().collect()
    }

    /// Reads and validates a schema file; every problem is in the error (exit 2).
    pub fn read(path: &Path) -> Result<Schema> {
        let text = crate::inputs::read_input("the schema file", path)?;
        Schema::parse(&text).map_err(|problems| {
            let lines: Vec<String> = problems.iter().map(|p| format!("{}:{p}", path.display())).collect();
            // One problem, one line; several are listed a line each under the count.
            match &lines[..] {
                [one] => Error::usage(format!("schema file {one}")).hint("fix it there; nothing was changed"),
                _ => Error::usage(format!(
                    "schema file {} has {} problems:\n  {}",
                    path.display(),
                    problems.len(),
                    lines.join("\n  ")
                ))
                .hint("fix each place named above; nothing was changed"),
            }
        })
    }

    pub fn parse(text: &str) -> std::result::Result<Schema, Vec<Problem>> {
        if let Err(e) = serde_json::from_str::<serde_json::Value>(text) {
            return Err(vec![Problem {
                path: "$".into(),
                line: e.line(),
                column: e.column(),
                message: format!("not valid JSON: {e}"),
                fix: "correct the JSON syntax at that position".into(),
            }]);
        }
        let root =
            Reader { chars: text.chars().peekable(), line: 1, column: 1 }.value().expect("serde_json accepted it");
        let mut problems = vec![];
        let mut tables = vec![];
        let problem = |problems: &mut Vec<Problem>, at: &Spanned, path: &str, message: String, fix: &str| {
            problems.push(Problem { path: path.into(), line: at.line, column: at.column, message, fix: fix.into() });
        };
        let Json::Object(members) = &root.value else {
            problem(
                &mut problems,
                &root,
                "$",
                format!("the schema is {}, not an object of tables", root.value.kind()),
                "write {\"namespace.table\": {...}, ...}",
            );
            return Err(problems);
        };
        for (key, table) in members {
            let Json::String(name) = &key.value else {
                continue;
            };
            let path = format!("$[{name:?}]");
            match name.split_once('.') {
                Some((ns, t)) if !ns.is_empty() && !t.is_empty() && !t.contains('.') => tables.push(name.clone()),
                _ => problem(
                    &mut problems,
                    key,
                    &path,
                    format!("table key {name:?} is not namespace.table"),
                    "name it namespace.table, e.g. \"sample.customers\"",
                ),
            }
            let Json::Object(fields) = &table.value else {
                problem(
                    &mut problems,
                    table,
                    &path,
                    format!("the table is {}, not an object", table.value.kind()),
                    "give partition-key, columns and the other settings as an object",
                );
                continue;
            };
            let field = |name: &str| {
                fields.iter().find(|(k, _)| matches!(&k.value, Json::String(s) if s == name)).map(|(_, v)| v)
            };
            let columns: Vec<(String, &Spanned)> = match field("columns") {
                None => {
                    problem(
                        &mut problems,
                        table,
                        &path,
                        "no \"columns\"".into(),
                        "declare every column with its type in \"columns\"",
                    );
                    vec![]
                }
                Some(Spanned { value: Json::Object(cols), .. }) => cols
                    .iter()
                    .filter_map(|(k, v)| match &k.value {
                        Json::String(s) => Some((s.clone(), v)),
                        _ => None,
                    })
                    .collect(),
                Some(other) => {
                    problem(
                        &mut problems,
                        other,
                        &format!("{path}.columns"),
                        format!("\"columns\" is {}, not an object", other.value.kind()),
                        "map each column name to its type",
                    );
                    vec![]
                }
            };
            for (col, ty) in &columns {
                let cpath = format!("{path}.columns[{col:?}]");
                match &ty.value {
                    Json::String(t) if COLUMN_TYPES.contains(&t.to_ascii_uppercase().as_str()) => {}
                    Json::String(t) => problem(
                        &mut problems,
                        ty,
                        &cpath,
                        format!("unknown column type {t:?}"),
                        &format!("use one of {}", COLUMN_TYPES.join(", ")),
                    ),
                    other => problem(
                        &mut problems,
                        ty,
                        &cpath,
                        format!("the type is {}, not a string", other.kind()),
                        &format!("use one of {}", COLUMN_TYPES.join(", ")),
                    ),
                }
            }
            let declared = |c: &str| columns.iter().any(|(n, _)| n == c);
            for (key_name, required) in [("partition-key", true), ("clustering-key", false), ("secondary-index", false)]
            {
                let kpath = format!("{path}[{key_name:?}]");
                match field(key_name) {
                    None if required => problem(
                        &mut problems,
                        table,
                        &path,
                        format!("no {key_name:?}"),
                        "list the partition key column(s), e.g. \"partition-key\": [\"id\"]",
                    ),
                    None => {}
                    Some(Spanned { value: Json::Array(items), line, column }) => {
                        if required && items.is_empty() {
                            problems.push(Problem {
                                path: kpath.clone(),
                                line: *line,
                                column: *column,
                                message: format!("{key_name:?} is empty"),
                                fix: "name at least one column".into(),
                            });
                        }
                        for item in items {
                            match &item.value {
                                Json::String(s) => {
                                    // Clustering keys may carry an order: "c1 ASC".
                                    let col = s.split_whitespace().next().unwrap_or_default();
                                    if !declared(col) {
                                        problem(
                                            &mut problems,
                                            item,
                                            &kpath,
                                            format!("key column {col:?} is not declared in \"columns\""),
                                            &format!("add {col:?} with its type to \"columns\""),
                                        );
                                    }
                                }
                                other => problem(
                                    &mut problems,
                                    item,
                                    &kpath,
                                    format!("a key column is {}, not a string", other.kind()),
                                    "name the column as a string",
                                ),
                            }
                        }
                    }
                    Some(other) => problem(
                        &mut problems,
                        other,
                        &kpath,
                        format!("{key_name:?} is {}, not an array", other.value.kind()),
                        "give a list of column names",
                    ),
                }
            }
            if let Some(t) = field("transaction")
                && !matches!(t.value, Json::Bool)
            {
                problem(
                    &mut problems,
                    t,
                    &format!("{path}.transaction"),
                    format!("\"transaction\" is {}, not a boolean", t.value.kind()),
                    "write true or false, without quotes",
                );
            }
        }
        if problems.is_empty() { Ok(Schema { text: text.to_string(), tables }) } else { Err(problems) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{
  "sample.customers": {
    "transaction": true,
    "partition-key": ["customer_id"],
    "clustering-key": ["name ASC"],
    "columns": {"customer_id": "INT", "name": "TEXT", "credit": "bigint"}
  },
  "other.t": {"partition-key": ["k"], "columns": {"k": "BLOB"}}
}"#;

    fn only(text: &str) -> Problem {
        let p = Schema::parse(text).unwrap_err();
        assert_eq!(p.len(), 1, "{p:?}");
        p[0].clone()
    }

    #[test]
    fn a_valid_schema_names_its_namespaces() {
        let s = Schema::parse(GOOD).unwrap();
        assert_eq!(s.namespaces(), ["other", "sample"]);
    }

    #[test]
    fn broken_json_names_line_and_column() {
        let p = only("{\n  \"a.b\": {\n    \"columns\": {,}\n  }\n}");
        assert_eq!((p.line, p.column), (3, 17));
        assert!(p.message.contains("not valid JSON") && p.fix.contains("syntax"), "{p}");
    }

    #[test]
    fn a_key_without_a_dot() {
        let p = only(r#"{"customers": {"partition-key": ["id"], "columns": {"id": "INT"}}}"#);
        assert_eq!(p.path, "$[\"customers\"]");
        assert_eq!((p.line, p.column), (1, 2));
        assert!(p.message.contains("namespace.table") && p.fix.contains("sample.customers"), "{p}");
    }

    #[test]
    fn an_empty_partition_key() {
        let p = only("{\"a.b\": {\n \"partition-key\": [],\n \"columns\": {\"id\": \"INT\"}}}");
        assert_eq!(p.path, "$[\"a.b\"][\"partition-key\"]");
        assert_eq!((p.line, p.column), (2, 19));
        assert!(p.message.contains("empty"), "{p}");
    }

    #[test]
    fn a_key_column_not_in_columns() {
        let p = only(r#"{"a.b": {"partition-key": ["id"], "clustering-key": ["ts DESC"], "columns": {"id": "INT"}}}"#);
        assert!(p.message.contains("\"ts\" is not declared"), "{p}");
        assert!(p.path.ends_with("[\"clustering-key\"]"), "{p}");
        assert!(p.fix.contains("add \"ts\""), "{p}");
    }

    #[test]
    fn an_unknown_type() {
        let p = only("{\"a.b\": {\"partition-key\": [\"id\"],\n  \"columns\": {\"id\": \"VARCHAR\"}}}");
        assert_eq!(p.path, "$[\"a.b\"].columns[\"id\"]");
        assert_eq!((p.line, p.column), (2, 21));
        assert!(p.message.contains("VARCHAR") && p.fix.contains("TEXT"), "{p}");
    }

    #[test]
    fn transaction_must_be_a_boolean() {
        let p = only(r#"{"a.b": {"transaction": "yes", "partition-key": ["id"], "columns": {"id": "INT"}}}"#);
        assert_eq!(p.path, "$[\"a.b\"].transaction");
        assert!(p.message.contains("a string, not a boolean") && p.fix.contains("without quotes"), "{p}");
    }

    #[test]
    fn every_problem_is_reported_not_only_the_first() {
        let p = Schema::parse(r#"{"x": {"partition-key": [], "columns": {"id": "NOPE"}}, "a.b": {"transaction": 1, "partition-key": ["id"], "columns": {"id": "INT"}}}"#).unwrap_err();
        assert_eq!(p.len(), 4, "{p:?}");
    }
}
