//! How federated names look to clients, and the composite list cursor.
//!
//! - Tool and prompt names: `<target>_<name>` when prefixing (the separator is `_`;
//!   target names cannot contain it, so the first `_` splits unambiguously).
//! - Resource URIs: `agentmesh://<target>/<original URI, percent-encoded>` when
//!   prefixing (every byte but `A-Z a-z 0-9 - . _ ~` encoded), so the original comes back
//!   exactly. Templates keep their `{...}` expressions unencoded so clients can expand
//!   them.
//! - Cursor: `am1.` + base64url(JSON object target → that target's own `nextCursor`).
//!   Only targets with more to list appear; the next page asks only them.
//!
//! Pure functions only: no I/O, no config lookups beyond what callers pass in.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Separator between target name and tool/prompt name.
pub const SEPARATOR: char = '_';
/// Scheme of rewritten resource URIs.
pub const URI_SCHEME: &str = "agentmesh://";
const CURSOR_PREFIX: &str = "am1.";

/// Whether a target name is acceptable: 1-63 of `a-z`, `0-9`, `-` (so it is a valid,
/// already-lowercase URI host and never contains the separator).
pub fn valid_target_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `<target>_<name>`.
pub fn prefixed(target: &str, name: &str) -> String {
    // Not `format!`: a merged list prefixes every item, and `fmt` costs several times
    // the copy.
    let mut out = String::with_capacity(target.len() + SEPARATOR.len_utf8() + name.len());
    out.push_str(target);
    out.push(SEPARATOR);
    out.push_str(name);
    out
}

/// Splits a prefixed name into target and original name.
pub fn split_prefixed(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
        .filter(|(t, n)| !t.is_empty() && !n.is_empty())
}

fn encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// The client-facing URI of a target's resource.
pub fn rewrite_uri(target: &str, uri: &str) -> String {
    let mut out = format!("{URI_SCHEME}{target}/");
    encode_into(&mut out, uri);
    out
}

/// The client-facing URI template of a target's resource template: literal parts
/// encoded, `{...}` expressions kept.
pub fn rewrite_uri_template(target: &str, template: &str) -> String {
    let mut out = format!("{URI_SCHEME}{target}/");
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        encode_into(&mut out, &rest[..open]);
        out.push_str(&rest[open..=open + close]);
        rest = &rest[open + close + 1..];
    }
    encode_into(&mut out, rest);
    out
}

/// The target and original URI of a rewritten URI.
pub fn split_uri(uri: &str) -> Option<(&str, String)> {
    let rest = uri.strip_prefix(URI_SCHEME)?;
    let (target, encoded) = rest.split_once('/')?;
    Some((target, percent_decode(encoded)?))
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Where each target stands in a paged, merged list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// Targets with more to list, with their own cursors.
    pub targets: BTreeMap<String, String>,
}

impl Cursor {
    /// The client-facing cursor; `None` when no target has more.
    pub fn encode(&self) -> Option<String> {
        if self.targets.is_empty() {
            return None;
        }
        let json = serde_json::to_vec(&self.targets).unwrap_or_default();
        Some(format!("{CURSOR_PREFIX}{}", URL_SAFE_NO_PAD.encode(json)))
    }

    /// Reads a client-facing cursor.
    pub fn decode(s: &str) -> Option<Cursor> {
        let raw = URL_SAFE_NO_PAD
            .decode(s.strip_prefix(CURSOR_PREFIX)?)
            .ok()?;
        let targets: BTreeMap<String, String> = serde_json::from_slice(&raw).ok()?;
        (!targets.is_empty()).then_some(Cursor { targets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_names_split_at_the_first_separator() {
        assert_eq!(prefixed("docs", "search_all"), "docs_search_all");
        assert_eq!(
            split_prefixed("docs_search_all"),
            Some(("docs", "search_all"))
        );
        assert_eq!(split_prefixed("nosep"), None);
        assert_eq!(split_prefixed("_x"), None);
        assert!(valid_target_name("github-mcp2"));
        for bad in ["", "Docs", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!valid_target_name(bad), "{bad}");
        }
    }

    #[test]
    fn uris_round_trip_exactly() {
        for uri in [
            "file:///a/b c.txt",
            "docs://readme",
            "x://h/p?q=1&r=%41#f",
            "ünï://ç",
        ] {
            let out = rewrite_uri("docs", uri);
            assert!(out.starts_with("agentmesh://docs/"), "{out}");
            assert!(!out["agentmesh://".len()..].contains(':'), "{out}");
            assert_eq!(split_uri(&out), Some(("docs", uri.to_string())));
        }
        assert_eq!(split_uri("file:///x"), None);
        assert_eq!(split_uri("agentmesh://docs/%zz"), None);
    }

    #[test]
    fn templates_keep_their_expressions() {
        let t = rewrite_uri_template("docs", "notes://{topic}/page/{n}");
        assert_eq!(t, "agentmesh://docs/notes%3A%2F%2F{topic}%2Fpage%2F{n}");
        let expanded = t.replace("{topic}", "rust").replace("{n}", "2");
        assert_eq!(
            split_uri(&expanded),
            Some(("docs", "notes://rust/page/2".into()))
        );
    }

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let mut c = Cursor::default();
        assert_eq!(c.encode(), None);
        c.targets.insert("a".into(), "page-2".into());
        c.targets.insert("b".into(), "xyz".into());
        let s = c.encode().unwrap_or_default();
        assert!(s.starts_with("am1."));
        assert_eq!(Cursor::decode(&s), Some(c));
        for junk in ["", "am1.", "am1.!!", "other", "am1.e30"] {
            assert_eq!(Cursor::decode(junk), None, "{junk}");
        }
    }
}
