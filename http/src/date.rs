//! The `Date` header value, rendered at most once per second.

use std::time::{SystemTime, UNIX_EPOCH};

/// Caches the IMF-fixdate for the current second (`Sun, 06 Nov 1994 08:49:37 GMT`).
#[derive(Clone, Debug)]
pub struct DateCache {
    second: u64,
    value: [u8; 29],
    /// `Date: VALUE` CRLF CRLF: the end of most response heads, copied in one piece.
    line: [u8; 39],
}

impl DateCache {
    /// A cache holding the date of `now`.
    pub fn new(now: SystemTime) -> Self {
        let mut line = [b' '; 39];
        line[..6].copy_from_slice(b"Date: ");
        line[35..].copy_from_slice(b"\r\n\r\n");
        let mut cache = DateCache { second: u64::MAX, value: [b' '; 29], line };
        cache.update(now);
        cache
    }

    /// Re-renders only when the second has changed.
    pub fn update(&mut self, now: SystemTime) {
        let second = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        if second == self.second {
            return;
        }
        self.second = second;
        let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(second));
        // IMF-fixdate is always 29 bytes for years 1000..=9999.
        if text.len() == self.value.len() {
            self.value.copy_from_slice(text.as_bytes());
            self.line[6..35].copy_from_slice(text.as_bytes());
        }
    }

    /// The second the date is of (seconds since the Unix epoch).
    pub(crate) fn second(&self) -> u64 {
        self.second
    }

    /// The 29 bytes of the current date.
    pub fn value(&self) -> &[u8; 29] {
        &self.value
    }

    /// `Date: VALUE\r\n\r\n`; without its last two bytes, the Date field line alone.
    pub(crate) fn line(&self) -> &[u8; 39] {
        &self.line
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn renders_imf_fixdate_and_changes_only_per_second() {
        let t = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let mut d = DateCache::new(t);
        assert_eq!(d.value(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.update(t + Duration::from_millis(900));
        assert_eq!(d.value(), b"Sun, 06 Nov 1994 08:49:37 GMT");
        d.update(t + Duration::from_secs(1));
        assert_eq!(d.value(), b"Sun, 06 Nov 1994 08:49:38 GMT");
        assert_eq!(d.line(), b"Date: Sun, 06 Nov 1994 08:49:38 GMT\r\n\r\n");
    }
}
