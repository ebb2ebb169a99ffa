//! ScalarDB `database.properties` files (the guide's format): Java properties
//! parsed, then mapped onto the GraphQL chart's `scalarDbGraphQlConfiguration`
//! and the database Secret. Credentials are kept apart so they can only go
//! to the Secret.

use std::collections::BTreeMap;
use std::fmt;

/// The storages the GraphQL chart accepts.
pub const STORAGES: &[&str] = &["cassandra", "cosmos", "dynamo", "jdbc", "grpc"];

/// Java properties: `key=value`, `key: value` or `key value`; `#` and `!`
/// comments; a trailing backslash continues the line; `\t \n \r \f \uXXXX`
/// escapes. Returns the pairs with their line numbers.
pub fn parse(text: &str) -> Result<Vec<(String, String, usize)>, String> {
    let mut out = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, raw)) = lines.next() {
        let first = raw.trim_start();
        if first.is_empty() || first.starts_with('#') || first.starts_with('!') {
            continue;
        }
        let mut logical = String::new();
        let mut current = first.to_string();
        loop {
            let trailing = current.chars().rev().take_while(|c| *c == '\\').count();
            if trailing % 2 == 1 {
                current.pop();
                logical.push_str(&current);
                match lines.next() {
                    Some((_, next)) => current = next.trim_start().to_string(),
                    None => break,
                }
            } else {
                logical.push_str(&current);
                break;
            }
        }
        let (key, value) = split_pair(&logical);
        out.push((unescape(&key, index + 1)?, unescape(&value, index + 1)?, index + 1));
    }
    Ok(out)
}

fn split_pair(line: &str) -> (String, String) {
    let mut escaped = false;
    for (i, c) in line.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '=' | ':' | ' ' | '\t' => {
                let key = line[..i].to_string();
                let mut rest = line[i..].trim_start_matches([' ', '\t']);
                if c != '=' && c != ':' {
                    rest = rest.strip_prefix(['=', ':']).unwrap_or(rest);
                } else {
                    rest = &rest[1..];
                }
                return (key, rest.trim_start_matches([' ', '\t']).to_string());
            }
            _ => {}
        }
    }
    (line.to_string(), String::new())
}

fn unescape(s: &str, line: usize) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\u{c}'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                let code = u32::from_str_radix(&hex, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| format!("line {line}: bad \\u escape \\u{hex}"))?;
                out.push(code);
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    Ok(out)
}

/// What a database.properties says, split into chart configuration and credentials.
#[derive(Default, PartialEq)]
pub struct DatabaseProperties {
    pub contact_points: Option<String>,
    pub contact_port: Option<u16>,
    pub storage: Option<String>,
    pub transaction_manager: Option<String>,
    pub isolation_level: Option<String>,
    pub serializable_strategy: Option<String>,
    pub namespaces: Vec<String>,
    pub path: Option<String>,
    pub graphiql: Option<String>,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Every other key, for the loader; these are not mapped onto the chart.
    pub other: BTreeMap<String, String>,
}

impl fmt::Debug for DatabaseProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DatabaseProperties")
            .field("contact_points", &self.contact_points)
            .field("storage", &self.storage)
            .field("username", &self.username.as_ref().map(|_| "<redacted>"))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

impl DatabaseProperties {
    pub fn parse(text: &str) -> Result<DatabaseProperties, String> {
        let mut p = DatabaseProperties::default();
        for (key, value, line) in parse(text)? {
            let v = value.trim().to_string();
            match key.as_str() {
                "scalar.db.contact_points" => p.contact_points = Some(v),
                "scalar.db.contact_port" => {
                    p.contact_port =
                        Some(v.parse().map_err(|_| {
                            format!("line {line}: scalar.db.contact_port must be a port number, not {v:?}")
                        })?)
                }
                "scalar.db.storage" => {
                    if !STORAGES.contains(&v.as_str()) {
                        return Err(format!(
                            "line {line}: scalar.db.storage {v:?} is not one the chart accepts ({})",
                            STORAGES.join(", ")
                        ));
                    }
                    p.storage = Some(v)
                }
                "scalar.db.transaction_manager" => p.transaction_manager = Some(v),
                "scalar.db.consensus_commit.isolation_level" => p.isolation_level = Some(v),
                "scalar.db.consensus_commit.serializable_strategy" => p.serializable_strategy = Some(v),
                "scalar.db.graphql.namespaces" => {
                    p.namespaces = v.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
                }
                "scalar.db.graphql.path" => p.path = Some(v),
                "scalar.db.graphql.graphiql" => p.graphiql = Some(v),
                "scalar.db.username" => p.username = Some(value),
                "scalar.db.password" => p.password = Some(value),
                _ => {
                    p.other.insert(key, v);
                }
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = "scalar.db.contact_points=us-east-1\nscalar.db.username=AKIAEXAMPLE\nscalar.db.password=s3cr=t\nscalar.db.storage=dynamo\n";

    #[test]
    fn the_guides_dynamo_file_maps_onto_chart_and_secret() {
        let p = DatabaseProperties::parse(GUIDE).unwrap();
        assert_eq!(p.contact_points.as_deref(), Some("us-east-1"));
        assert_eq!(p.storage.as_deref(), Some("dynamo"));
        assert_eq!(p.username.as_deref(), Some("AKIAEXAMPLE"));
        assert_eq!(p.password.as_deref(), Some("s3cr=t"));
    }

    #[test]
    fn java_properties_syntax() {
        let pairs = parse("# c\n! c\na = 1\nb: two\nc three\nd=x\\\n   y\ne=\\u0041\\tB\n").unwrap();
        let kv: Vec<_> = pairs.iter().map(|(k, v, _)| (k.as_str(), v.as_str())).collect();
        assert_eq!(kv, [("a", "1"), ("b", "two"), ("c", "three"), ("d", "xy"), ("e", "A\tB")]);
    }

    #[test]
    fn an_unknown_storage_names_the_line_and_the_choices() {
        let e = DatabaseProperties::parse("x=1\nscalar.db.storage=mongo\n").unwrap_err();
        assert!(e.contains("line 2") && e.contains("mongo") && e.contains("dynamo"), "{e}");
    }

    #[test]
    fn namespaces_split_on_commas() {
        let p = DatabaseProperties::parse("scalar.db.graphql.namespaces=a, b,,c").unwrap();
        assert_eq!(p.namespaces, ["a", "b", "c"]);
    }

    #[test]
    fn debug_output_never_shows_credentials() {
        let p = DatabaseProperties::parse(GUIDE).unwrap();
        let text = format!("{p:?}");
        assert!(!text.contains("s3cr=t") && !text.contains("AKIAEXAMPLE"), "{text}");
    }
}
