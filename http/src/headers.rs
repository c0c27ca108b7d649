//! Header fields: the helpers every reader of a field value uses ([`trim`],
//! [`list_items`]), the request fields that matter only for files (seen as flags), and
//! the response header fields configured by the operator, checked once when the site
//! is built so that a request never pays for them: they are rendered into the
//! pre-rendered heads.

use crate::line::is_tchar;
use std::fmt;

/// Request headers that matter only for files: seen in the header loop as flags, read
/// again only when a file is asked for with one of them.
pub(crate) const HAS_RANGE: u8 = 1;
pub(crate) const HAS_IF_RANGE: u8 = 2;
pub(crate) const HAS_IF_NONE_MATCH: u8 = 4;
pub(crate) const HAS_IF_MODIFIED_SINCE: u8 = 8;

/// The field lines of a parsed head (between the request line and the blank line), every
/// one already checked: read again only for the few requests that need a field by name.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Fields<'h>(&'h [u8]);

impl<'h> Fields<'h> {
    pub(crate) fn new(lines: &'h [u8]) -> Self {
        Fields(lines)
    }

    /// The values of the fields named `lower` (lower case), in order, without the
    /// whitespace around them.
    pub(crate) fn values(self, lower: &'static str) -> impl Iterator<Item = &'h [u8]> {
        self.0.split(|&b| b == b'\n').filter_map(move |line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = memchr::memchr(b':', line)?;
            line[..colon].eq_ignore_ascii_case(lower.as_bytes()).then(|| trim(&line[colon + 1..]))
        })
    }
}

#[cfg(test)]
impl<'h> Fields<'h> {
    /// Every field as (name, value).
    pub(crate) fn all(self) -> impl Iterator<Item = (&'h [u8], &'h [u8])> {
        self.0.split(|&b| b == b'\n').filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = memchr::memchr(b':', line)?;
            Some((&line[..colon], trim(&line[colon + 1..])))
        })
    }
}

/// Non-empty, trimmed elements of a comma-separated field value.
pub(crate) fn list_items(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',').map(trim).filter(|s| !s.is_empty())
}

/// The value without the spaces and tabs around it (OWS).
pub(crate) fn trim(v: &[u8]) -> &[u8] {
    let start = v.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |i| i + 1);
    &v[start..end]
}

/// Why a configured response header was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderError {
    /// No `:` between name and value.
    NoColon,
    /// The name is empty or holds a character that is not a token character
    /// (RFC 9110 §5.1).
    BadName,
    /// The value holds CR, LF, NUL or another control character (RFC 9110 §5.5).
    BadValue,
    /// duet sets this field itself (framing, connection management, validators...).
    Managed {
        /// The field's name, as duet writes it.
        name: &'static str,
        /// Where the site chooses its value instead, when it can be chosen at all.
        instead: Option<SetInstead>,
    },
}

/// Where a site chooses the value of a field duet sets itself ([`HeaderError::Managed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetInstead {
    /// `Content-Type`: the content type given with each route or file.
    ContentType,
    /// `Content-Encoding`: a file's precompressed variants
    /// ([`SiteBuilder::file_with_variants`](crate::SiteBuilder::file_with_variants)).
    Variants,
}

impl fmt::Display for HeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeaderError::NoColon => write!(f, "expected 'Name: value'"),
            HeaderError::BadName => {
                write!(f, "the name must be a token (letters, digits and !#$%&'*+-.^_`|~)")
            }
            HeaderError::BadValue => write!(f, "the value may not contain CR, LF or other control characters"),
            HeaderError::Managed { name, instead: None } => write!(f, "duet sets {name} itself"),
            HeaderError::Managed { name, instead: Some(SetInstead::ContentType) } => {
                write!(f, "duet sets {name} itself (each route or file has its own content type)")
            }
            HeaderError::Managed { name, instead: Some(SetInstead::Variants) } => {
                write!(f, "duet sets {name} itself (from a file's precompressed variants)")
            }
        }
    }
}

impl std::error::Error for HeaderError {}

/// The fields duet writes itself, lower-case, with the name as duet writes it and
/// where a site chooses it instead. Another value would contradict the framing, the connection management or
/// the validators duet computes.
const MANAGED: &[(&str, &str, Option<SetInstead>)] = &[
    ("content-length", "Content-Length", None),
    ("transfer-encoding", "Transfer-Encoding", None),
    ("connection", "Connection", None),
    ("keep-alive", "Keep-Alive", None),
    ("proxy-connection", "Proxy-Connection", None),
    ("upgrade", "Upgrade", None),
    ("te", "TE", None),
    ("trailer", "Trailer", None),
    ("date", "Date", None),
    ("server", "Server", None),
    ("content-type", "Content-Type", Some(SetInstead::ContentType)),
    ("content-encoding", "Content-Encoding", Some(SetInstead::Variants)),
    ("content-range", "Content-Range", None),
    ("accept-ranges", "Accept-Ranges", None),
    ("etag", "ETag", None),
    ("last-modified", "Last-Modified", None),
    ("location", "Location", None),
    ("allow", "Allow", None),
];

/// Checks `line` (`Name: value`) and returns it as it will be sent: `Name: value`
/// with the whitespace around the value removed.
pub(crate) fn check_response_header(line: &str) -> Result<String, HeaderError> {
    let (name, value) = line.split_once(':').ok_or(HeaderError::NoColon)?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(HeaderError::BadName);
    }
    let value = value.trim_matches(|c| c == ' ' || c == '\t');
    // field-content: VCHAR, SP, HTAB and obs-text; never CR, LF, NUL or DEL.
    if value.bytes().any(|b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(HeaderError::BadValue);
    }
    if let Some(&(_, name, instead)) = MANAGED.iter().find(|(lower, _, _)| name.eq_ignore_ascii_case(lower)) {
        return Err(HeaderError::Managed { name, instead });
    }
    Ok(format!("{name}: {value}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_headers_are_normalised() {
        assert_eq!(check_response_header("Cache-Control: max-age=60").unwrap(), "Cache-Control: max-age=60");
        assert_eq!(check_response_header("X-A:\t v \t").unwrap(), "X-A: v");
        assert_eq!(check_response_header("X-Empty:").unwrap(), "X-Empty: ");
        assert_eq!(check_response_header("Access-Control-Allow-Origin: *").unwrap(), "Access-Control-Allow-Origin: *");
        assert_eq!(check_response_header("X-Utf8: café").unwrap(), "X-Utf8: café");
    }

    #[test]
    fn malformed_headers_are_refused() {
        assert_eq!(check_response_header("no colon"), Err(HeaderError::NoColon));
        for bad in [": v", "X A: v", "X(A): v", " X: v", "X : v", "Ä: v", "X\r\nY: v"] {
            assert_eq!(check_response_header(bad), Err(HeaderError::BadName), "{bad:?}");
        }
        for bad in ["X: a\r\nInjected: 1", "X: a\nb", "X: a\rb", "X: a\0", "X: \x7f", "X: \x1b[0m"] {
            assert_eq!(check_response_header(bad), Err(HeaderError::BadValue), "{bad:?}");
        }
    }

    #[test]
    fn managed_headers_are_refused_whatever_their_case() {
        for name in ["Content-Length", "transfer-encoding", "CONNECTION", "Date", "Server", "ETag", "Content-Type"] {
            let err = check_response_header(&format!("{name}: x")).unwrap_err();
            assert!(matches!(err, HeaderError::Managed { .. }), "{name}");
            assert!(err.to_string().contains("itself"), "{err}");
        }
    }
}
