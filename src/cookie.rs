//! `Cookie` request headers (find and remove one cookie, leaving the others byte for byte) and
//! `Set-Cookie` response headers (build ours). Works on bytes: headers are not always UTF-8.

use crate::text::{push_decimal, push_two_digits};

/// Splits a Cookie header into its `name=value` pairs, OWS trimmed. Pairs without `=` are skipped.
fn pairs(header: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    header.split(|&b| b == b';').filter_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|&b| b == b'=')?;
        let (name, value) = pair.split_at(eq);
        Some((name.trim_ascii_end(), value.get(1..).unwrap_or_default().trim_ascii_start()))
    })
}

/// The values of every cookie called `name`, in header order (names are case-sensitive).
pub fn values<'a>(header: &'a [u8], name: &'a str) -> impl Iterator<Item = &'a [u8]> {
    pairs(header).filter(move |(n, _)| *n == name.as_bytes()).map(|(_, v)| v)
}

/// A cookie value without the double quotes RFC 6265 allows around it (`"abc"` -> `abc`).
pub fn unquoted(value: &[u8]) -> &[u8] {
    match value {
        [b'"', inner @ .., b'"'] => inner,
        _ => value,
    }
}

/// What to do with one cookie of the name being edited.
pub enum Edit {
    Keep,
    Remove,
    /// Replace the value (the name and the separators around it stay).
    Value(Vec<u8>),
}

/// Edits the cookies called `name` (given each value); None when nothing changed. The other cookies
/// and the separators between them are kept byte for byte; an empty result means "drop the header".
pub fn edit(header: &[u8], name: &str, mut edit: impl FnMut(&[u8]) -> Edit) -> Option<Vec<u8>> {
    let mut changed = false;
    let mut kept: Vec<std::borrow::Cow<[u8]>> = Vec::new();
    for segment in header.split(|&b| b == b';') {
        let trimmed = segment.trim_ascii_start();
        let value = trimmed.strip_prefix(name.as_bytes()).map(<[u8]>::trim_ascii_start).and_then(|rest| rest.strip_prefix(b"=")).map(|v| v.trim_ascii());
        match value.map(&mut edit) {
            None | Some(Edit::Keep) => kept.push(segment.into()),
            Some(Edit::Remove) => changed = true,
            Some(Edit::Value(new)) => {
                changed = true;
                let mut rebuilt = segment.get(..segment.len() - trimmed.len()).unwrap_or_default().to_vec();
                rebuilt.extend_from_slice(name.as_bytes());
                rebuilt.push(b'=');
                rebuilt.extend_from_slice(&new);
                kept.push(rebuilt.into());
            }
        }
    }
    if !changed {
        return None;
    }
    let mut out = kept.join(&b";"[..]);
    let leading = out.len() - out.trim_ascii_start().len();
    out.drain(..leading);
    if out.trim_ascii().is_empty() {
        out.clear();
    }
    Some(out)
}

/// The header without the cookies called `name`, or None when it has none.
pub fn without(header: &[u8], name: &str) -> Option<Vec<u8>> {
    edit(header, name, |_| Edit::Remove)
}

/// A `Set-Cookie` header split into its parts (bytes as received).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetCookie<'a> {
    pub name: &'a [u8],
    pub value: &'a [u8],
    /// Everything from the first `;` on (the attributes), possibly empty.
    pub attributes: &'a [u8],
}

impl SetCookie<'_> {
    /// Whether this header deletes the cookie (empty value, or `Max-Age` zero or negative).
    pub fn deletes(&self) -> bool {
        self.value.is_empty()
            || self.attributes.split(|&b| b == b';').any(|attribute| {
                let Some((key, seconds)) = attribute.trim_ascii().split_at_checked(8) else { return false };
                key.eq_ignore_ascii_case(b"max-age=") && std::str::from_utf8(seconds).ok().and_then(|v| v.trim().parse::<i64>().ok()).is_some_and(|v| v <= 0)
            })
    }
}

pub fn parse_set_cookie(header: &[u8]) -> Option<SetCookie<'_>> {
    let (pair, attributes) = match header.iter().position(|&b| b == b';') {
        Some(semicolon) => header.split_at(semicolon),
        None => (header, &[][..]),
    };
    let eq = pair.iter().position(|&b| b == b'=')?;
    let (name, value) = pair.split_at(eq);
    let name = name.trim_ascii();
    if name.is_empty() {
        return None;
    }
    Some(SetCookie { name, value: value.get(1..).unwrap_or_default().trim_ascii(), attributes })
}

/// An HTTP token (RFC 9110): what cookie names (RFC 6265) and header names are made of.
pub fn is_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

pub const NAME_RULE: &str = "must be a cookie name (letters, digits and !#$%&'*+-.^_`|~)";

/// Characters allowed in a Path or Domain attribute value: visible ASCII except `;` and `,`.
pub fn is_valid_attribute_value(value: &str) -> bool {
    value.bytes().all(|b| (0x21..0x7f).contains(&b) && b != b';' && b != b',')
}

pub fn is_valid_path(path: &str) -> bool {
    path.starts_with('/') && is_valid_attribute_value(path)
}

pub const PATH_RULE: &str = "must start with / and hold no spaces, ';' or ','";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

/// Everything about our Set-Cookie that is fixed by configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    pub path: String,
    pub domain: Option<String>,
    pub http_only: bool,
    pub same_site: Option<SameSite>,
    /// CHIPS: the cookie is kept per top-level site (needs Secure).
    pub partitioned: bool,
}

/// `name=value; Path=..; [Domain=..;] [Max-Age=..; Expires=..;] [Secure;] [HttpOnly;] [SameSite=..]`
/// `lifetime`: seconds from `now` until the browser should drop the cookie; None for a session cookie.
pub fn set_cookie(name: &str, value: &str, attributes: &Attributes, secure: bool, lifetime: Option<u64>, now: u64) -> String {
    let mut out = String::with_capacity(name.len() + value.len() + 96);
    for part in [name, "=", value, "; Path=", &attributes.path] {
        out.push_str(part);
    }
    if let Some(domain) = &attributes.domain {
        out.push_str("; Domain=");
        out.push_str(domain);
    }
    if let Some(lifetime) = lifetime {
        out.push_str("; Max-Age=");
        push_decimal(&mut out, lifetime);
        out.push_str("; Expires=");
        out.push_str(&http_date(now.saturating_add(lifetime)));
    }
    if secure {
        out.push_str("; Secure");
    }
    if attributes.http_only {
        out.push_str("; HttpOnly");
    }
    match attributes.same_site {
        Some(SameSite::Lax) => out.push_str("; SameSite=Lax"),
        Some(SameSite::Strict) => out.push_str("; SameSite=Strict"),
        Some(SameSite::None) => out.push_str("; SameSite=None"),
        None => {}
    }
    if attributes.partitioned {
        out.push_str("; Partitioned");
    }
    out
}

/// IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(unix_seconds: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = unix_seconds / 86_400;
    let secs = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let weekday = DAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month = MONTHS.get(month as usize - 1).copied().unwrap_or("Jan");
    let mut out = String::with_capacity(29);
    out.push_str(weekday);
    out.push_str(", ");
    push_two_digits(&mut out, day);
    out.push(' ');
    out.push_str(month);
    out.push(' ');
    push_decimal(&mut out, year);
    for (separator, value) in [(" ", secs / 3600), (":", secs % 3600 / 60), (":", secs % 60)] {
        out.push_str(separator);
        push_two_digits(&mut out, value);
    }
    out.push_str(" GMT");
    out
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31); Howard Hinnant's algorithm.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(header: &str, name: &'static str) -> Vec<String> {
        values(header.as_bytes(), name).map(|v| String::from_utf8(v.to_vec()).unwrap()).collect()
    }

    fn removed(header: &str, name: &str) -> Option<String> {
        without(header.as_bytes(), name).map(|v| String::from_utf8(v).unwrap())
    }

    #[test]
    fn finds_values_by_exact_name() {
        assert_eq!(found("a=1; AVI_COOKIE=tok; b=2", "AVI_COOKIE"), ["tok"]);
        assert_eq!(found("AVI_COOKIE=x;AVI_COOKIE=y", "AVI_COOKIE"), ["x", "y"]);
        assert_eq!(found("avi_cookie=x; XAVI_COOKIE=y; AVI_COOKIEX=z", "AVI_COOKIE"), Vec::<String>::new());
        assert_eq!(found(" AVI_COOKIE = v ;", "AVI_COOKIE"), ["v"]);
        assert_eq!(found("AVI_COOKIE=", "AVI_COOKIE"), [""]);
        assert_eq!(found("AVI_COOKIE; ;;=x", "AVI_COOKIE"), Vec::<String>::new());
        assert_eq!(found("k=a=b", "k"), ["a=b"]);
    }

    #[test]
    fn removes_ours_and_keeps_everything_else_byte_for_byte() {
        assert_eq!(removed("a=1; AVI_COOKIE=tok; b=2", "AVI_COOKIE").unwrap(), "a=1; b=2");
        assert_eq!(removed("AVI_COOKIE=tok; a=\"q;\"", "AVI_COOKIE").unwrap(), "a=\"q;\"");
        assert_eq!(removed("a=1;AVI_COOKIE=t;b=2;AVI_COOKIE=u", "AVI_COOKIE").unwrap(), "a=1;b=2");
        assert_eq!(removed("x=%E2%9C%93;  y=a b ; AVI_COOKIE=t", "AVI_COOKIE").unwrap(), "x=%E2%9C%93;  y=a b ");
        assert_eq!(removed("AVI_COOKIE=t", "AVI_COOKIE").unwrap(), "");
        assert_eq!(removed("AVI_COOKIE=t; ", "AVI_COOKIE").unwrap(), "");
        assert_eq!(removed("a=1; b=2", "AVI_COOKIE"), None);
        assert_eq!(removed("AVI_COOKIEX=1", "AVI_COOKIE"), None);
    }

    #[test]
    fn edits_values_of_one_name_only() {
        let edited = edit(b"a=1; S=tok.v; b=2;S=x", "S", |v| match v.strip_prefix(b"tok.") {
            Some(rest) => Edit::Value(rest.to_vec()),
            None => Edit::Keep,
        });
        assert_eq!(edited.unwrap(), b"a=1; S=v; b=2;S=x");
        assert_eq!(edit(b"a=1; S=x", "S", |_| Edit::Keep), None);
    }

    #[test]
    fn parses_set_cookie_and_recognises_deletion() {
        let parsed = parse_set_cookie(b"JSESSIONID=AB12.node1; Path=/app; HttpOnly").unwrap();
        assert_eq!((parsed.name, parsed.value, parsed.attributes), (&b"JSESSIONID"[..], &b"AB12.node1"[..], &b"; Path=/app; HttpOnly"[..]));
        assert!(!parsed.deletes());
        assert_eq!(parse_set_cookie(b" k = v ").unwrap().value, b"v");
        assert!(parse_set_cookie(b"k=").unwrap().deletes());
        assert!(parse_set_cookie(b"k=v; Max-Age=0; Path=/").unwrap().deletes());
        assert!(parse_set_cookie(b"k=v; max-age=-1").unwrap().deletes());
        assert!(!parse_set_cookie(b"k=v; Max-Age=60").unwrap().deletes());
        assert_eq!(parse_set_cookie(b"novalue"), None);
        assert_eq!(parse_set_cookie(b"=v"), None);
        assert_eq!(parse_set_cookie(b"k=a=b").unwrap().value, b"a=b");
    }

    #[test]
    fn keeps_non_utf8_bytes_of_other_cookies() {
        let header = b"a=\xff\xfe; AVI_COOKIE=t; b=\x80";
        assert_eq!(without(header, "AVI_COOKIE").unwrap(), b"a=\xff\xfe; b=\x80");
    }

    #[test]
    fn validates_names_and_attribute_values() {
        assert!(is_token("AVI_COOKIE") && is_token("JSESSIONID") && is_token("__Host-x"));
        assert!(!is_token("") && !is_token("a b") && !is_token("a=b") && !is_token("a;b"));
        assert!(is_valid_attribute_value("/app") && is_valid_attribute_value(".example.com"));
        assert!(!is_valid_attribute_value("/a;b") && !is_valid_attribute_value("/a b") && !is_valid_attribute_value("/\n"));
    }

    #[test]
    fn builds_set_cookie() {
        let attributes = Attributes { path: "/".into(), domain: None, http_only: true, same_site: Some(SameSite::Lax), partitioned: false };
        assert_eq!(set_cookie("AVI_COOKIE", "tok", &attributes, false, None, 0), "AVI_COOKIE=tok; Path=/; HttpOnly; SameSite=Lax");
        let attributes = Attributes { path: "/app".into(), domain: Some("example.com".into()), http_only: false, same_site: None, partitioned: false };
        assert_eq!(
            set_cookie("c", "v", &attributes, true, Some(600), 784_111_177),
            "c=v; Path=/app; Domain=example.com; Max-Age=600; Expires=Sun, 06 Nov 1994 08:49:37 GMT; Secure"
        );
    }

    #[test]
    fn formats_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_795_132_800), "Fri, 20 Nov 2026 00:00:00 GMT");
    }
}
