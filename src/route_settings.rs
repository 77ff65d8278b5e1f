//! Per-route settings of the native build (`DynamicModuleFilterPerRoute`'s `filter_config`):
//! `{"strict": true}` makes a pinned request whose host Envoy cannot use get a 503 instead of
//! another host, what a `StatefulSessionPerRoute` with `strict: true` does for the Wasm build.

use crate::config_reader::{ConfigError, Errors, Field};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteSettings {
    /// Envoy answers 503 rather than load balancing a pinned request whose host it cannot use.
    pub strict: bool,
}

impl RouteSettings {
    /// Every error at once, each with its field path, like the plugin configuration's.
    pub fn parse(text: &[u8]) -> Result<RouteSettings, Vec<ConfigError>> {
        let mut errors = Errors::default();
        let value = match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(value) => value,
            Err(error) => {
                errors.add("route", format!("is not valid JSON: {error} (expected {{\"strict\": true}})"));
                return Err(errors.0);
            }
        };
        let field = Field { path: "route".into(), value: &value };
        let mut settings = RouteSettings::default();
        if let Some(mut object) = field.object(&mut errors) {
            if let Some(strict) = object.field("strict").and_then(|f| f.bool(&mut errors)) {
                settings.strict = strict;
            }
            object.finish(&mut errors, |_| None);
        }
        if errors.0.is_empty() {
            Ok(settings)
        } else {
            Err(errors.0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> Vec<String> {
        RouteSettings::parse(text.as_bytes()).unwrap_err().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn strict_or_not() {
        assert_eq!(RouteSettings::parse(br#"{"strict": true}"#), Ok(RouteSettings { strict: true }));
        assert_eq!(RouteSettings::parse(br#"{"strict": false}"#), Ok(RouteSettings { strict: false }));
        assert_eq!(RouteSettings::parse(b"{}"), Ok(RouteSettings { strict: false }));
    }

    #[test]
    fn bad_settings_name_the_field() {
        assert_eq!(errors(r#"{"strict": "yes"}"#), ["route.strict: must be true or false, got string \"yes\""]);
        assert_eq!(errors(r#"{"strictt": true}"#), ["route.strictt: unknown field (known fields here: strict)"]);
        assert!(errors("").first().unwrap().starts_with("route: is not valid JSON"));
        assert!(errors("[1]").first().unwrap().starts_with("route: must be"), "{:?}", errors("[1]"));
    }
}
