//! `Accept-Encoding` (RFC 9110 §12.5.3): which precompressed variant of a file a
//! client gets. Only read for files that have a variant.
//!
//! Strict about what counts, tolerant about what it skips: an element whose coding is
//! not one duet knows (a malformed one included) or whose `q` is not a valid qvalue is
//! ignored (as if not listed), and the rest of the field still counts. Parameters other
//! than `q` are ignored.

use crate::headers::trim;

/// The content codings duet serves precompressed variants in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coding {
    /// `br` (a `file.br` sibling).
    Br,
    /// `gzip` (a `file.gz` sibling).
    Gzip,
}

impl Coding {
    /// The coding's name in `Content-Encoding`.
    pub fn name(self) -> &'static str {
        match self {
            Coding::Br => "br",
            Coding::Gzip => "gzip",
        }
    }
}

/// What the client accepts: the weight (qvalue in thousandths, 0..=1000) of each
/// coding it lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct AcceptEncoding {
    br: Option<u16>,
    gzip: Option<u16>,
    identity: Option<u16>,
    any: Option<u16>,
}

/// The representation to send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Choice {
    Identity,
    Encoded(Coding),
    /// Nothing available is acceptable (identity refused too): 406.
    NotAcceptable,
}

impl AcceptEncoding {
    /// Adds the elements of one `Accept-Encoding` field line (several lines form one
    /// list). When a coding is listed twice, the first counts.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            let Some((coding, q)) = element_weight(element) else { continue };
            let slot = if coding.eq_ignore_ascii_case(b"br") {
                &mut self.br
            } else if coding.eq_ignore_ascii_case(b"gzip") || coding.eq_ignore_ascii_case(b"x-gzip") {
                // RFC 9110 §8.4.1.3: x-gzip is gzip.
                &mut self.gzip
            } else if coding.eq_ignore_ascii_case(b"identity") {
                &mut self.identity
            } else if coding == b"*" {
                &mut self.any
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(q);
            }
        }
    }

    /// The weight of `coding`: as listed, else as `*`, else not acceptable.
    fn weight(&self, coding: Coding) -> u16 {
        let listed = match coding {
            Coding::Br => self.br,
            Coding::Gzip => self.gzip,
        };
        listed.or(self.any).unwrap_or(0)
    }

    /// Chooses among identity and the variants `available` (in order of preference at
    /// equal weight). The highest weight wins; at equal weight a variant wins over
    /// identity (it is smaller). Identity is acceptable unless refused by
    /// `identity;q=0`, or by `*;q=0` without an `identity` element; when it is not
    /// listed it is only the fallback.
    pub(crate) fn choose(&self, available: &[Coding]) -> Choice {
        let best = available.iter().map(|&c| (c, self.weight(c))).filter(|&(_, q)| q > 0).fold(
            None,
            |best: Option<(Coding, u16)>, (c, q)| match best {
                Some((_, bq)) if bq >= q => best,
                _ => Some((c, q)),
            },
        );
        let identity_ok = match self.identity {
            Some(q) => q > 0,
            None => self.any != Some(0),
        };
        match (best, self.identity) {
            (Some((_, q)), Some(iq)) if iq > q => Choice::Identity,
            (Some((c, _)), _) => Choice::Encoded(c),
            (None, _) if identity_ok => Choice::Identity,
            (None, _) => Choice::NotAcceptable,
        }
    }
}

/// `coding [ OWS ";" OWS "q=" qvalue ]`: the coding and its weight (1 by default);
/// `None` for an empty or malformed element.
fn element_weight(element: &[u8]) -> Option<(&[u8], u16)> {
    let mut parts = element.split(|&b| b == b';');
    // Only br, gzip, x-gzip, identity and * count: anything else, a malformed token
    // included, matches none of them and is skipped without being checked further.
    let coding = trim(parts.next()?);
    if coding.is_empty() {
        return None;
    }
    let mut q = 1000;
    for param in parts {
        let param = trim(param);
        if param.len() >= 2 && param[..2].eq_ignore_ascii_case(b"q=") {
            q = qvalue(&param[2..])?;
        }
    }
    Some((coding, q))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(v: &[u8]) -> Option<u16> {
    let (&first, rest) = v.split_first()?;
    let fraction = match rest {
        [] => &[][..],
        [b'.', digits @ ..] if digits.len() <= 3 => digits,
        _ => return None,
    };
    if !fraction.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let thousandths =
        fraction.iter().chain(std::iter::repeat(&b'0')).take(3).fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match first {
        b'0' => Some(thousandths),
        b'1' if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Coding::*;

    fn choose(fields: &[&str], available: &[Coding]) -> Choice {
        let mut ae = AcceptEncoding::default();
        for f in fields {
            ae.add(f.as_bytes());
        }
        ae.choose(available)
    }

    const BOTH: &[Coding] = &[Br, Gzip];

    #[test]
    fn qvalues_parse_strictly() {
        assert_eq!(qvalue(b"1"), Some(1000));
        assert_eq!(qvalue(b"1.000"), Some(1000));
        assert_eq!(qvalue(b"0"), Some(0));
        assert_eq!(qvalue(b"0."), Some(0));
        assert_eq!(qvalue(b"0.5"), Some(500));
        assert_eq!(qvalue(b"0.05"), Some(50));
        assert_eq!(qvalue(b"0.001"), Some(1));
        for bad in [&b""[..], b"1.5", b"1.001", b"2", b"0.0001", b".5", b"0,5", b"-0", b"0.5 ", b"q"] {
            assert_eq!(qvalue(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn br_is_preferred_over_gzip_at_equal_weight() {
        assert_eq!(choose(&["gzip, deflate, br"], BOTH), Choice::Encoded(Br));
        assert_eq!(choose(&["br, gzip"], BOTH), Choice::Encoded(Br));
        assert_eq!(choose(&["gzip;q=0.8, br;q=0.8"], BOTH), Choice::Encoded(Br));
        assert_eq!(choose(&["*"], BOTH), Choice::Encoded(Br));
    }

    #[test]
    fn higher_weight_wins() {
        assert_eq!(choose(&["gzip;q=1, br;q=0.5"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["gzip;q=0.5, identity"], BOTH), Choice::Identity);
        assert_eq!(choose(&["gzip;q=0.5, identity;q=0.5"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["br;q=0.1, *;q=0.9"], BOTH), Choice::Encoded(Gzip));
    }

    #[test]
    fn only_available_variants_are_chosen() {
        assert_eq!(choose(&["br"], &[Gzip]), Choice::Identity);
        assert_eq!(choose(&["gzip, br"], &[Gzip]), Choice::Encoded(Gzip));
        assert_eq!(choose(&["gzip"], &[]), Choice::Identity);
    }

    #[test]
    fn zero_weight_refuses() {
        assert_eq!(choose(&["br;q=0, gzip"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["gzip;q=0"], &[Gzip]), Choice::Identity);
        assert_eq!(choose(&["*;q=0, gzip"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["br;q=0.000, gzip;q=0"], BOTH), Choice::Identity);
        // The first element for a coding counts.
        assert_eq!(choose(&["gzip;q=0, gzip"], &[Gzip]), Choice::Identity);
    }

    #[test]
    fn identity_refusal_per_rfc_9110() {
        // Refused explicitly, or by *;q=0 without an identity element.
        assert_eq!(choose(&["identity;q=0"], &[]), Choice::NotAcceptable);
        assert_eq!(choose(&["identity;q=0"], BOTH), Choice::NotAcceptable);
        assert_eq!(choose(&["*;q=0"], BOTH), Choice::NotAcceptable);
        assert_eq!(choose(&["identity;q=0, gzip"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["*;q=0, identity"], BOTH), Choice::Identity);
        assert_eq!(choose(&["*;q=0, identity;q=0.1"], BOTH), Choice::Identity);
        // Not listed: acceptable, but only as the fallback.
        assert_eq!(choose(&["gzip;q=0.1"], BOTH), Choice::Encoded(Gzip));
    }

    #[test]
    fn empty_or_unknown_means_identity() {
        assert_eq!(choose(&[""], BOTH), Choice::Identity);
        assert_eq!(choose(&["deflate, zstd"], BOTH), Choice::Identity);
        assert_eq!(choose(&[" , ,"], BOTH), Choice::Identity);
    }

    #[test]
    fn tolerant_parsing() {
        // Case, whitespace, x-gzip, several field lines, other parameters.
        assert_eq!(choose(&["GZIP ; Q=0.5 , BR;q=0.4"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["x-gzip"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["gzip;q=0.5", "br;q=0.9"], BOTH), Choice::Encoded(Br));
        assert_eq!(choose(&["gzip;level=1;q=0.5"], &[Gzip]), Choice::Encoded(Gzip));
        assert_eq!(choose(&["\tgzip\t;\tq=1\t"], &[Gzip]), Choice::Encoded(Gzip));
        // A malformed element is skipped, the rest counts.
        assert_eq!(choose(&["br;q=2, gzip"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["br;q=, gzip;q=0.3"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["b r, gzip;q=0.3"], BOTH), Choice::Encoded(Gzip));
        assert_eq!(choose(&["\"br\""], BOTH), Choice::Identity);
        assert_eq!(choose(&["identity;q=x"], BOTH), Choice::Identity);
    }
}
