//! A value of a parsed document and where it is (file and path), so that every finding can say
//! where it was found without building paths by hand.

use super::{Document, Finding, Kind};
use serde_json::Value;

static NULL: Value = Value::Null;

#[derive(Clone)]
pub struct Node<'a> {
    pub file: &'a str,
    pub path: String,
    pub value: &'a Value,
}

impl<'a> Node<'a> {
    pub fn root(document: &'a Document) -> Node<'a> {
        Node { file: &document.file, path: String::new(), value: &document.value }
    }

    /// The field `key` (null when absent).
    pub fn get(&self, key: &str) -> Node<'a> {
        let path = if self.path.is_empty() { key.to_string() } else { format!("{}.{key}", self.path) };
        Node { file: self.file, path, value: self.value.get(key).unwrap_or(&NULL) }
    }

    /// The items of the list `key` (none when absent or not a list).
    pub fn items(&self, key: &str) -> Vec<Node<'a>> {
        let field = self.get(key);
        let items = field.value.as_array().map(|a| a.iter().collect::<Vec<_>>()).unwrap_or_default();
        items.into_iter().enumerate().map(|(i, value)| Node { file: self.file, path: format!("{}[{i}]", field.path), value }).collect()
    }

    /// The string field `key` ("" when absent or not a string).
    pub fn str(&self, key: &str) -> &'a str {
        self.value.get(key).and_then(Value::as_str).unwrap_or_default()
    }

    pub fn is_null(&self) -> bool {
        self.value.is_null()
    }

    /// The `@type` of this value (without the `type.googleapis.com/` prefix).
    pub fn type_of_self(&self) -> &'a str {
        let full = self.str("@type");
        full.rsplit('/').next().unwrap_or(full)
    }

    /// The `@type` of its `typed_config`.
    pub fn type_of(&self) -> &'a str {
        self.get("typed_config").type_of_self()
    }

    pub fn finding(&self, kind: Kind, detail: impl Into<String>) -> Finding {
        Finding::new(kind, self.file, &self.path, detail)
    }
}

/// Every document of Kubernetes kind `kind`, as a node.
pub fn of_kind<'a>(documents: &'a [Document], kind: &'a str) -> impl Iterator<Item = Node<'a>> {
    documents.iter().map(Node::root).filter(move |node| node.str("kind") == kind)
}
