//! Why a request is refused, and the one place that says which status answers it.
//!
//! A rejection ends the connection: the request cannot be answered normally and, for
//! most kinds, the rest of the input cannot be framed. The parser, the chunked decoder
//! and the deadlines produce a [`Reject`]; only [`Reject::status`] turns it into a
//! number (as hyper's `role.rs` does for its parse errors).

/// What was wrong with a request that is answered 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// The request line or a header line is not valid syntax: a method byte outside
    /// `tchar`, a malformed version, a field line that is not `name ":" value` with a
    /// token name and no control byte in its value.
    Syntax,
    /// Host missing on HTTP/1.1, repeated, or holding bytes a host cannot hold.
    Host,
    /// Content-Length that is not one plain decimal number.
    ContentLength,
    /// Transfer-Encoding that cannot frame the body (chunked not last, repeated, with
    /// parameters, with Content-Length, on HTTP/1.0, or empty).
    TransferEncoding,
    /// A request target with a byte RFC 3986 does not allow (a space, `#`, a control or
    /// non-ASCII byte, ...), or one that routes nowhere: not origin- or absolute-form
    /// (or `*` outside OPTIONS), a bad percent-escape, or an encoded NUL.
    Target,
    /// A chunked body that breaks RFC 9112 §7.1.
    ChunkedBody,
}

/// Why a request is refused with an error status and a close.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reject {
    /// 400: the request is malformed, or its framing is in doubt.
    BadRequest(Malformed),
    /// 408: a started request did not arrive within its deadline.
    Timeout,
    /// 413: the body is larger than `Limits::max_body`.
    ContentTooLarge,
    /// 414: the request line alone does not fit in `Limits::max_head`.
    UriTooLong,
    /// 417: an `Expect` other than `100-continue`.
    ExpectationFailed,
    /// 431: the head does not fit in `Limits::max_head`, or has too many fields.
    HeaderFieldsTooLarge,
    /// 501: a transfer coding duet does not decode, a method longer than any duet
    /// implements (RFC 9112 §3), or CONNECT (duet is no proxy).
    NotImplemented,
    /// 505: a well-formed HTTP version other than 1.0 and 1.1.
    VersionNotSupported,
}

impl Reject {
    /// The status code that answers this rejection (RFC 9110 §15, RFC 6585 for 431).
    #[must_use]
    pub(crate) const fn status(self) -> u16 {
        match self {
            Reject::BadRequest(_) => 400,
            Reject::Timeout => 408,
            Reject::ContentTooLarge => 413,
            Reject::UriTooLong => 414,
            Reject::ExpectationFailed => 417,
            Reject::HeaderFieldsTooLarge => 431,
            Reject::NotImplemented => 501,
            Reject::VersionNotSupported => 505,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::response::ERROR_STATUSES;

    #[test]
    fn every_rejection_has_a_prerendered_error_response() {
        let all = [
            Reject::BadRequest(Malformed::Syntax),
            Reject::Timeout,
            Reject::ContentTooLarge,
            Reject::UriTooLong,
            Reject::ExpectationFailed,
            Reject::HeaderFieldsTooLarge,
            Reject::NotImplemented,
            Reject::VersionNotSupported,
        ];
        for reject in all {
            assert!(ERROR_STATUSES.contains(&reject.status()), "{reject:?} has no error response");
        }
    }
}
