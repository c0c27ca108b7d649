//! The echo route (`duet serve --echo PATH`): the first responses built per request.
//!
//! A method with a body (POST, PUT, PATCH, DELETE) gets the body back as received
//! (after chunked decoding), with the request's Content-Type; GET and HEAD get the
//! request line and header fields as received, so a user sees what reached the server.
//! Bodies are bounded by `Limits::max_body` like any other, and the response is queued
//! like any other, so output backpressure bounds what one connection holds.

use crate::response::{Prerendered, NO_LINES};
use bytes::Bytes;

/// The type given to an echoed body whose request named none (or one that cannot be
/// repeated safely in a response head).
const DEFAULT_TYPE: &str = "application/octet-stream";

/// The answer to GET or HEAD: the request head as received, without its final blank
/// line.
pub(crate) fn head(head: &[u8]) -> Prerendered {
    let end = head.len() - if head.ends_with(b"\r\n\r\n") || head.ends_with(b"\n\r\n") { 2 } else { 1 };
    Prerendered::new(200, "text/plain", Bytes::copy_from_slice(&head[..end]), NO_LINES)
}

/// The Content-Type to answer an echoed body with: the request's, when it is visible
/// ASCII and spaces (anything else could not be repeated in a response head as is).
pub(crate) fn content_type(value: &[u8]) -> Box<str> {
    let printable = value.iter().all(|&b| b == b' ' || b == b'\t' || b.is_ascii_graphic());
    match std::str::from_utf8(value) {
        Ok(v) if printable && !v.is_empty() => v.into(),
        _ => DEFAULT_TYPE.into(),
    }
}

/// The answer to a request with a body: `200`, the body as received.
pub(crate) fn body(content_type: &str, body: Vec<u8>) -> Prerendered {
    Prerendered::new(200, content_type, Bytes::from(body), NO_LINES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_echo_drops_only_the_blank_line() {
        let r = head(b"GET /e HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\n\r\n");
        assert_eq!(r.body().len(), "GET /e HTTP/1.1\r\nHost: a\r\nCookie: x=1\r\n".len() as u64);
        let r = head(b"GET /e HTTP/1.1\nHost: a\n\n");
        assert_eq!(r.body().len(), "GET /e HTTP/1.1\nHost: a\n".len() as u64);
    }

    #[test]
    fn content_type_is_kept_when_safe() {
        assert_eq!(&*content_type(b"application/json; charset=utf-8"), "application/json; charset=utf-8");
        assert_eq!(&*content_type(b""), DEFAULT_TYPE);
        assert_eq!(&*content_type(b"text/\xff"), DEFAULT_TYPE);
        assert_eq!(&*content_type(b"text/a\x01"), DEFAULT_TYPE);
    }
}
