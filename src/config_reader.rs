//! A JSON reader that knows where it is: every value carries its path (`profiles[0].http_cookie.name`)
//! so each configuration error names the field and the rule, and every unknown field is reported.

use serde_json::{Map, Value};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub rule: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "configuration: {}", self.rule)
        } else {
            write!(f, "{}: {}", self.path, self.rule)
        }
    }
}

/// Collects every error found, so an operator sees all of them in one go.
#[derive(Default, Debug)]
pub struct Errors(pub Vec<ConfigError>);

impl Errors {
    pub fn add(&mut self, path: &str, rule: impl Into<String>) {
        self.0.push(ConfigError { path: path.to_string(), rule: rule.into() });
    }
}

/// A value at a path. JSON `null` is treated as absent everywhere.
pub struct Field<'a> {
    pub path: String,
    pub value: &'a Value,
}

/// `text` in double quotes, with quotes, backslashes and control characters escaped (for error
/// messages; cheaper in the module than `{:?}`, which brings Unicode tables along).
pub fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("boolean {b}"),
        // Integers as written; others without float formatting (not needed by any field).
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => format!("number {u}"),
            (None, Some(i)) => format!("number {i}"),
            _ => "a number that is not an integer".into(),
        },
        Value::String(s) if s.len() <= 64 => format!("string {}", quoted(s)),
        Value::String(_) => "a long string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

impl<'a> Field<'a> {
    fn wrong_type(&self, expected: &str, errors: &mut Errors) {
        errors.add(&self.path, format!("must be {expected}, got {}", describe(self.value)));
    }

    pub fn string(&self, errors: &mut Errors) -> Option<&'a str> {
        let found = self.value.as_str();
        if found.is_none() {
            self.wrong_type("a string", errors);
        }
        found
    }

    pub fn bool(&self, errors: &mut Errors) -> Option<bool> {
        let found = self.value.as_bool();
        if found.is_none() {
            self.wrong_type("true or false", errors);
        }
        found
    }

    /// A string that passes `valid`; otherwise the error states `rule` and what was given.
    pub fn string_where(&self, valid: impl Fn(&str) -> bool, rule: &str, errors: &mut Errors) -> Option<&'a str> {
        let found = self.string(errors)?;
        if valid(found) {
            return Some(found);
        }
        errors.add(&self.path, format!("{rule}, got {}", quoted(found)));
        None
    }

    /// An integer in `min..=max`; the error says the range and what was given.
    pub fn integer(&self, min: u64, max: u64, errors: &mut Errors) -> Option<u64> {
        match self.value.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                errors.add(&self.path, format!("must be an integer between {min} and {max}, got {}", describe(self.value)));
                None
            }
        }
    }

    /// One of a fixed set of strings.
    pub fn choice<T: Copy>(&self, options: &[(&str, T)], errors: &mut Errors) -> Option<T> {
        let found = self.value.as_str().and_then(|s| options.iter().find(|(name, _)| *name == s));
        if found.is_none() {
            let names: Vec<String> = options.iter().map(|(name, _)| quoted(name)).collect();
            errors.add(&self.path, format!("must be one of {}, got {}", names.join(", "), describe(self.value)));
        }
        found.map(|(_, value)| *value)
    }

    pub fn object(&self, errors: &mut Errors) -> Option<Object<'a>> {
        match self.value {
            Value::Object(map) => Some(Object { path: self.path.clone(), map, known: Vec::new() }),
            _ => {
                self.wrong_type("an object", errors);
                None
            }
        }
    }

    /// The elements of an array with their paths (`path[i]`).
    pub fn array(&self, errors: &mut Errors) -> Option<Vec<Field<'a>>> {
        match self.value {
            Value::Array(items) => Some(items.iter().enumerate().map(|(i, value)| Field { path: format!("{}[{i}]", self.path), value }).collect()),
            _ => {
                self.wrong_type("an array", errors);
                None
            }
        }
    }
}

/// A JSON object being read field by field; `finish` reports the fields nobody asked for.
pub struct Object<'a> {
    path: String,
    map: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Object<'a> {
    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn child_path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// The field `key` (None when absent or null); the key becomes known either way.
    pub fn field(&mut self, key: &'static str) -> Option<Field<'a>> {
        self.known.push(key);
        let value = self.map.get(key).filter(|v| !v.is_null())?;
        Some(Field { path: self.child_path(key), value })
    }

    /// The field `key`, which must be present: `rule` says what it is for.
    pub fn required(&mut self, key: &'static str, rule: &str, errors: &mut Errors) -> Option<Field<'a>> {
        let field = self.field(key);
        if field.is_none() {
            errors.add(&self.child_path(key), rule);
        }
        field
    }

    /// True when `key` is present with the value `null` (for fields where null means "turn off").
    pub fn is_null(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(Value::is_null)
    }

    /// Every key and value, for maps keyed by user data (such as `routes`).
    pub fn entries(&self) -> impl Iterator<Item = (&'a String, &'a Value)> {
        self.map.iter()
    }

    /// Reports unknown fields, naming the known ones; `explain` may give a better message for a key.
    pub fn finish(self, errors: &mut Errors, explain: impl Fn(&str) -> Option<String>) {
        for key in self.map.keys() {
            if self.known.contains(&key.as_str()) {
                continue;
            }
            let rule = explain(key).unwrap_or_else(|| {
                // Alphabetical, without a sort (whose code would cost more module size than this).
                let mut known: Vec<&str> = Vec::with_capacity(self.known.len());
                for field in &self.known {
                    if let Err(at) = known.binary_search(field) {
                        known.insert(at, field);
                    }
                }
                format!("unknown field (known fields here: {})", known.join(", "))
            });
            errors.add(&self.child_path(key), rule);
        }
    }
}

/// For the profiles' unit tests: runs a section parser on `value` at `path`; the parsed settings,
/// or every error as the operator would read it.
#[cfg(test)]
pub fn parse_section<T>(path: &str, value: &Value, parse: impl FnOnce(Option<Field>, &mut Errors) -> Option<T>) -> Result<T, Vec<String>> {
    let mut errors = Errors::default();
    match parse(Some(Field { path: path.into(), value }), &mut errors) {
        Some(settings) if errors.0.is_empty() => Ok(settings),
        _ => Err(errors.0.iter().map(ToString::to_string).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reports_paths_rules_and_unknown_fields() {
        let value = json!({"a": 5, "b": "x", "c": null, "typo": 1});
        let mut errors = Errors::default();
        let mut object = Field { path: "p[0]".into(), value: &value }.object(&mut errors).unwrap();
        assert_eq!(object.field("a").and_then(|f| f.integer(10, 720, &mut errors)), None);
        assert_eq!(object.field("b").and_then(|f| f.bool(&mut errors)), None);
        assert!(object.field("c").is_none());
        object.finish(&mut errors, |_| None);
        let shown: Vec<String> = errors.0.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "p[0].a: must be an integer between 10 and 720, got number 5",
                "p[0].b: must be true or false, got string \"x\"",
                "p[0].typo: unknown field (known fields here: a, b, c)",
            ]
        );
    }

    #[test]
    fn quotes_and_describes_without_debug_formatting() {
        assert_eq!(quoted("a\"b\\c\n"), r#""a\"b\\c\u{a}""#);
        assert_eq!(describe(&serde_json::json!(-3)), "number -3");
        assert_eq!(describe(&serde_json::json!(1.5)), "a number that is not an integer");
    }

    #[test]
    fn choices_list_the_options() {
        let value = json!("sometimes");
        let mut errors = Errors::default();
        let found = Field { path: "x".into(), value: &value }.choice(&[("immediate", 1), ("never", 2)], &mut errors);
        assert_eq!(found, None);
        assert_eq!(errors.0[0].to_string(), "x: must be one of \"immediate\", \"never\", got string \"sometimes\"");
    }
}
