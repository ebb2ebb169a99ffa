//! What is a credential, and how it is shown hidden: the one rule for plans,
//! messages, the install record and every line printed (docs/how-it-works.md,
//! "What is redacted", says it for users).

use serde_json::Value;

/// A proxy URL as it may be shown: without the `user:password@` it may carry.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").map_or(("", url), |(s, r)| (s, r));
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if scheme.is_empty() { format!("{host}{path}") } else { format!("{scheme}://{host}{path}") }
}

/// A text with the credentials it carries masked, to be shown or recorded: the
/// `user:password@` of every URL in it (`https://***@host/…`) and the value of
/// every `password=` parameter of a connection string (`jdbc:…?password=***`).
pub fn masked(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut changed = false;
    while let Some(i) = rest.find("://") {
        let (before, after) = rest.split_at(i + 3);
        out.push_str(before);
        let end = after.find(|c: char| c == '/' || c == '?' || c == '#' || c.is_whitespace()).unwrap_or(after.len());
        match after[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&after[at..end]);
                changed = true;
            }
            None => out.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    let lower = out.to_ascii_lowercase();
    let mut masked = String::with_capacity(out.len());
    let mut last = 0;
    for (i, _) in lower.match_indices("password=") {
        let start = i + "password=".len();
        if start < last {
            continue;
        }
        let end = out[start..].find(['&', ';', ' ', ',', '\n']).map_or(out.len(), |e| start + e);
        masked.push_str(&out[last..start]);
        masked.push_str("***");
        last = end;
        changed = true;
    }
    masked.push_str(&out[last..]);
    if changed { masked.into() } else { text.into() }
}

/// The words of a key or a variable's name: `DB_PASSWORD` → db, password; `apiKey` → api, key.
fn words(name: &str) -> Vec<String> {
    let mut words: Vec<String> = vec![];
    let mut word = String::new();
    let mut prev_lower = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() || (c.is_ascii_uppercase() && prev_lower) {
            words.extend((!word.is_empty()).then(|| std::mem::take(&mut word)));
        }
        if c.is_ascii_alphanumeric() {
            word.push(c.to_ascii_lowercase());
        }
        prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
    }
    words.extend((!word.is_empty()).then_some(word));
    words
}

/// Words that, last in a name, make it a credential's: `password`, `dbPass`, `PWD`, `token`,
/// `license`, `apikey`…
const CREDENTIAL_WORDS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "pass",
    "pwd",
    "secret",
    "token",
    "credential",
    "credentials",
    "apikey",
    "license",
    "licensekey",
    "privatekey",
    "secretkey",
    "accesskey",
];
/// A `key` is a credential after one of these words: `apiKey`, `ACCESS_KEY`, `private-key`, `licenseKey`.
const KEY_KINDS: &[&str] =
    &["api", "access", "secret", "private", "license", "encryption", "signing", "auth", "master", "client", "tls"];
/// After these words, a credential's word names something else: `existingSecret` (a Secret's name).
const REFERENCE_WORDS: &[&str] = &["existing", "keep", "use", "create"];

/// Whether a key (or an `env` entry's name) names a credential. Its last word
/// says so (`password`, `DB_PASS`, `sessionToken`, `license`), or it names a
/// key of a kind that is one (`apiKey`, `ACCESS_KEY_ID`, `private-key`) —
/// unless it only refers to one: `existingSecret` (a Secret's name),
/// `secretName`, `keepTLSSecret` (a switch), `topologyKey` (a label key).
pub fn names_secret(name: &str) -> bool {
    let w = words(name);
    let Some(last) = w.last() else { return false };
    let before = |i: usize| (i > 0).then(|| w[i - 1].as_str());
    let singular = last.strip_suffix('s').unwrap_or(last);
    if CREDENTIAL_WORDS.contains(&last.as_str()) || CREDENTIAL_WORDS.contains(&singular) {
        return !before(w.len() - 1).is_some_and(|b| REFERENCE_WORDS.contains(&b));
    }
    w.iter().enumerate().any(|(i, word)| word == "key" && before(i).is_some_and(|b| KEY_KINDS.contains(&b)))
}

const REDACTED: &str = "<redacted>";

/// A properties text (`scalar.db.password=…` lines, as ScalarDB Cluster's node
/// properties are given in one value) with the value of every credential's line hidden.
fn redacted_properties(text: &str) -> Option<String> {
    let mut changed = false;
    let lines: Vec<String> = text
        .split('\n')
        .map(|line| {
            let Some((key, _)) = line.split_once(['=', ':']) else { return line.to_string() };
            let k = key.trim();
            let looks_like_key = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            if looks_like_key && names_secret(k.rsplit('.').next().unwrap_or(k)) {
                changed = true;
                format!("{}{REDACTED}", &line[..=key.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    changed.then(|| lines.join("\n"))
}

/// A copy for display (plans, `--dry-run`, the confirmation prompt). Hidden:
/// the value of a key that names a credential (the whole of it when it is a
/// map or a list), of an `env` entry (`{name, value}`) whose name does, and
/// of every credential's line inside a properties text. Shown: what only
/// mentions a credential (see `names_secret`), and a credential key's
/// `true`/`false` or null (a switch, not a secret).
pub fn redacted(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let env_entry = m.get("name").and_then(Value::as_str).is_some_and(names_secret);
            Value::Object(
                m.iter()
                    .map(|(k, v)| {
                        let secret = names_secret(k) || (env_entry && k == "value");
                        let shown =
                            if secret && !v.is_null() && !v.is_boolean() { Value::from(REDACTED) } else { redacted(v) };
                        (k.clone(), shown)
                    })
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(redacted).collect()),
        Value::String(text) => {
            let text = masked(text);
            Value::from(redacted_properties(&text).unwrap_or_else(|| text.into_owned()))
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn credentials_in_urls_and_connection_strings_are_masked() {
        assert_eq!(masked("https://user:pw@charts.example.com/stable"), "https://***@charts.example.com/stable");
        assert_eq!(
            masked("jdbc:postgresql://db:5432/scalardb?user=scalar&password=hunter2&ssl=true"),
            "jdbc:postgresql://db:5432/scalardb?user=scalar&password=***&ssl=true"
        );
        assert_eq!(masked("Server=db;Password=hunter2;Database=x"), "Server=db;Password=***;Database=x");
        assert_eq!(masked("https://charts.example.com/a@b"), "https://charts.example.com/a@b");
        assert!(matches!(masked("plain"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn a_proxy_url_is_shown_without_its_credentials() {
        assert_eq!(without_credentials("http://user:p%40ss@proxy.corp:3128/x"), "http://proxy.corp:3128/x");
        assert_eq!(without_credentials("user:pw@proxy.corp:3128"), "proxy.corp:3128");
        assert_eq!(without_credentials("http://proxy.corp"), "http://proxy.corp");
    }

    #[test]
    fn names_say_credential_only_when_they_name_one() {
        for yes in [
            "password",
            "dbPassword",
            "DB_PASS",
            "pwd",
            "sessionToken",
            "apiKey",
            "ACCESS_KEY_ID",
            "private-key",
            "licenseKey",
            "license",
            "APIKEY",
            "secret",
        ] {
            assert!(names_secret(yes), "{yes}");
        }
        for no in [
            "existingSecret",
            "secretName",
            "keepTLSSecret",
            "topologyKey",
            "key",
            "passwordPolicy",
            "tokenTTL",
            "username",
            "certificate",
        ] {
            assert!(!names_secret(no), "{no}");
        }
    }

    #[test]
    fn display_redacts_credentials() {
        let r = redacted(&json!({"scalarDbGraphQlConfiguration": {"password": "p", "username": "u"}, "token": "t"}));
        assert_eq!(r["scalarDbGraphQlConfiguration"]["password"], "<redacted>");
        assert_eq!(r["scalarDbGraphQlConfiguration"]["username"], "u");
        assert_eq!(r["token"], "<redacted>");
    }
}
