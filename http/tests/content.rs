//! What `duet serve` adds to a site for the users of nginx, caddy and
//! static-web-server: configured response headers on every response, precompressed
//! variants chosen by Accept-Encoding, and 403 on a directory without index. Inputs go
//! through `check_with` (whole, split at every byte, byte by byte, partial sends).

use bytes::Bytes;
use duet_http::testing::*;
use duet_http::{Coding, FileMeta, HeaderError, Limits, Site, Variant};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

const PLAIN: &[u8] = b"hello hello hello hello";
const GZ: &[u8] = b"\x1f\x8bGZIP-BYTES";
const BR: &[u8] = b"BROTLI-BYTES";

fn meta(etag: &str, secs: u64) -> FileMeta {
    FileMeta { etag: etag.to_string(), modified: UNIX_EPOCH + Duration::from_secs(secs) }
}

fn variant(coding: Coding, body: &'static [u8], etag: &str) -> Variant {
    Variant { coding, body: Bytes::from_static(body).into(), meta: meta(etag, WALL_SECS - 50) }
}

/// `/both.txt` has br and gzip variants, `/gz.txt` only gzip, `/plain.txt` none.
fn site() -> Arc<Site> {
    let b = Site::builder().header("Cache-Control: max-age=60").unwrap().header("X-Frame-Options: DENY").unwrap();
    Arc::new(
        b.file_with_variants(
            "/both.txt",
            "text/plain; charset=utf-8",
            Bytes::from_static(PLAIN),
            &meta("id", WALL_SECS - 100),
            vec![variant(Coding::Gzip, GZ, "gz"), variant(Coding::Br, BR, "br")],
        )
        .file_with_variants(
            "/gz.txt",
            "text/plain; charset=utf-8",
            Bytes::from_static(PLAIN),
            &meta("id2", WALL_SECS - 100),
            vec![variant(Coding::Gzip, GZ, "gz2")],
        )
        .file("/plain.txt", "text/plain; charset=utf-8", Bytes::from_static(PLAIN), &meta("p", WALL_SECS - 100))
        .route("/r", "text/plain", Bytes::from_static(b"route"))
        .directory("/d")
        .forbidden("/d/")
        .build(),
    )
}

fn one_of(site: &Arc<Site>, input: &[u8], head_only: bool) -> Response {
    let o = check_with(site, &Limits::default(), input);
    let mut rs = parse_responses(&o.out, if head_only { &[0] } else { &[] });
    assert_eq!(rs.len(), 1, "{}", o.text());
    rs.remove(0)
}

fn one(input: &[u8]) -> Response {
    one_of(&site(), input, false)
}

fn head(r: &Response) -> String {
    String::from_utf8_lossy(&r.head).into_owned()
}

/// Asserts the configured headers are there, once each.
fn assert_configured(r: &Response) {
    assert_eq!(r.header("cache-control"), Some("max-age=60"), "{}", head(r));
    assert_eq!(r.header("x-frame-options"), Some("DENY"), "{}", head(r));
}

#[test]
fn configured_headers_are_on_every_kind_of_response() {
    let s = site();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (req("GET", "/r", &[]), 200),
        (req("GET", "/plain.txt", &[]), 200),
        (req("GET", "/plain.txt", &["If-None-Match: \"p\""]), 304),
        (req("GET", "/plain.txt", &["Range: bytes=0-1"]), 206),
        (req("GET", "/plain.txt", &["Range: bytes=99-"]), 416),
        (req("GET", "/both.txt", &["Accept-Encoding: br"]), 200),
        (req("GET", "/both.txt", &["Accept-Encoding: identity;q=0, *;q=0"]), 406),
        (req("GET", "/d", &[]), 301),
        (req("GET", "/d/", &[]), 403),
        (req("GET", "/missing", &[]), 404),
        (req("POST", "/r", &["Content-Length: 0"]), 405),
        (req("OPTIONS", "/r", &[]), 204),
        (req("BREW", "/r", &[]), 501),
    ];
    for (input, status) in cases {
        let r = one_of(&s, &input, false);
        assert_eq!(r.status, status, "{}", head(&r));
        assert_configured(&r);
    }
    // A rejected request's error response too.
    let o = check_with(&s, &Limits::default(), b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
    let r = &o.responses()[0];
    assert_eq!(r.status, 400);
    assert_configured(r);
}

#[test]
fn file_headers_are_on_every_response_about_a_file_and_only_there() {
    let s = Arc::new(
        Site::builder()
            .file_header("Cache-Control: no-cache")
            .unwrap()
            .header("X-Frame-Options: DENY")
            .unwrap()
            .file_with_variants(
                "/both.txt",
                "text/plain; charset=utf-8",
                Bytes::from_static(PLAIN),
                &meta("id", WALL_SECS - 100),
                vec![variant(Coding::Gzip, GZ, "gz")],
            )
            .route("/r", "text/plain", Bytes::from_static(b"route"))
            .directory("/d")
            .forbidden("/d/")
            .build(),
    );
    for (input, status) in [
        (req("GET", "/both.txt", &[]), 200),
        (req("GET", "/both.txt", &["Accept-Encoding: gzip"]), 200),
        (req("GET", "/both.txt", &["If-None-Match: \"id\""]), 304),
        (req("GET", "/both.txt", &["Range: bytes=0-1"]), 206),
        (req("GET", "/both.txt", &["Range: bytes=99-"]), 416),
        (req("GET", "/both.txt", &["Accept-Encoding: identity;q=0, *;q=0"]), 406),
    ] {
        let r = one_of(&s, &input, false);
        assert_eq!(r.status, status, "{}", head(&r));
        assert_eq!(r.header("cache-control"), Some("no-cache"), "{}", head(&r));
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{}", head(&r));
    }
    for (input, status) in [(req("GET", "/r", &[]), 200), (req("GET", "/d", &[]), 301), (req("GET", "/d/", &[]), 403)] {
        let r = one_of(&s, &input, false);
        assert_eq!(r.status, status, "{}", head(&r));
        assert_eq!(r.header("cache-control"), None, "not a file: {}", head(&r));
        assert_eq!(r.header("x-frame-options"), Some("DENY"), "{}", head(&r));
    }
    assert!(matches!(Site::builder().file_header("Content-Length: 1"), Err(HeaderError::Managed { .. })));
}

#[test]
fn configured_header_lines_are_checked() {
    assert!(matches!(Site::builder().header("X-A b: c"), Err(HeaderError::BadName)));
    assert!(matches!(Site::builder().header("X-A: b\r\nX-Injected: 1"), Err(HeaderError::BadValue)));
    assert!(matches!(Site::builder().header("Content-Length: 1"), Err(HeaderError::Managed { .. })));
    assert!(matches!(Site::builder().header("missing colon"), Err(HeaderError::NoColon)));
}

#[test]
fn variant_chosen_by_accept_encoding_with_its_own_validators() {
    for (ae, body, coding, etag) in [
        ("gzip, deflate, br", BR, Some("br"), "\"br\""),
        ("gzip", GZ, Some("gzip"), "\"gz\""),
        ("br;q=0.5, gzip", GZ, Some("gzip"), "\"gz\""),
        ("br;q=0, gzip;q=0", PLAIN, None, "\"id\""),
        ("deflate", PLAIN, None, "\"id\""),
        ("", PLAIN, None, "\"id\""),
    ] {
        let r = one(&req("GET", "/both.txt", &[&format!("Accept-Encoding: {ae}")]));
        assert_eq!(r.status, 200, "{ae}: {}", head(&r));
        assert_eq!(r.body, body, "{ae}");
        assert_eq!(r.header("content-encoding"), coding, "{ae}: {}", head(&r));
        assert_eq!(r.header("etag"), Some(etag), "{ae}");
        assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"), "{ae}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{ae}");
        assert_eq!(r.header("content-length"), Some(body.len().to_string().as_str()), "{ae}");
    }
    let gz = one(&req("GET", "/both.txt", &["Accept-Encoding: gzip"]));
    let id = one(&req("GET", "/both.txt", &[]));
    assert_ne!(gz.header("last-modified"), id.header("last-modified"), "the variant has its own Last-Modified");
    assert_eq!(id.body, PLAIN, "no Accept-Encoding: identity");
    assert_eq!(id.header("content-encoding"), None);
    // HEAD: the variant's head, no body.
    let r = one_of(&site(), &req("HEAD", "/both.txt", &["Accept-Encoding: br"]), true);
    assert_eq!(r.header("content-encoding"), Some("br"));
    assert_eq!(r.header("content-length"), Some(BR.len().to_string().as_str()));
}

#[test]
fn only_existing_variants_are_served() {
    let r = one(&req("GET", "/gz.txt", &["Accept-Encoding: br"]));
    assert_eq!((r.body.as_slice(), r.header("content-encoding")), (PLAIN, None));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"), "a file with a variant always varies");
    let r = one(&req("GET", "/gz.txt", &["Accept-Encoding: br, gzip"]));
    assert_eq!((r.body.as_slice(), r.header("content-encoding")), (GZ, Some("gzip")));
    // A file without variants ignores Accept-Encoding and does not vary.
    let r = one(&req("GET", "/plain.txt", &["Accept-Encoding: gzip, br"]));
    assert_eq!((r.body.as_slice(), r.header("content-encoding"), r.header("vary")), (PLAIN, None, None));
    let r = one(&req("GET", "/plain.txt", &["Accept-Encoding: identity;q=0"]));
    assert_eq!(r.status, 200, "no negotiation without variants");
}

#[test]
fn conditional_requests_use_the_chosen_variants_etag() {
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: gzip", "If-None-Match: \"gz\""]));
    assert_eq!(r.status, 304, "{}", head(&r));
    assert_eq!(r.header("etag"), Some("\"gz\""));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    // The identity's ETag does not validate the gzip variant, and the reverse.
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: gzip", "If-None-Match: \"id\""]));
    assert_eq!((r.status, r.body.as_slice()), (200, GZ));
    let r = one(&req("GET", "/both.txt", &["If-None-Match: \"gz\""]));
    assert_eq!((r.status, r.body.as_slice()), (200, PLAIN));
    let r = one(&req("GET", "/both.txt", &["If-None-Match: \"id\""]));
    assert_eq!(r.status, 304);
}

#[test]
fn ranges_apply_to_the_chosen_variant() {
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: gzip", "Range: bytes=0-3"]));
    assert_eq!(r.status, 206, "{}", head(&r));
    assert_eq!(r.body, &GZ[..4]);
    assert_eq!(r.header("content-range"), Some(format!("bytes 0-3/{}", GZ.len()).as_str()));
    assert_eq!(r.header("content-encoding"), Some("gzip"));
    assert_eq!(r.header("etag"), Some("\"gz\""));
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: br", "Range: bytes=0-1", "If-Range: \"br\""]));
    assert_eq!((r.status, r.body.as_slice()), (206, &BR[..2]));
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: br", "Range: bytes=0-1", "If-Range: \"id\""]));
    assert_eq!((r.status, r.body.as_slice()), (200, BR));
    // 416's body is text, not the variant's coding.
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: br", "Range: bytes=999-"]));
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some(format!("bytes */{}", BR.len()).as_str()));
    assert_eq!(r.header("content-encoding"), None);
    assert_eq!(r.header("vary"), Some("Accept-Encoding"));
}

#[test]
fn refusing_identity_and_every_variant_is_406() {
    for ae in ["identity;q=0", "*;q=0", "identity;q=0, br;q=0, gzip;q=0"] {
        let r = one(&req("GET", "/both.txt", &[&format!("Accept-Encoding: {ae}")]));
        assert_eq!(r.status, 406, "{ae}: {}", head(&r));
        assert_eq!(r.header("vary"), Some("Accept-Encoding"));
        assert_eq!(r.header("content-encoding"), None);
    }
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: identity;q=0, gzip"]));
    assert_eq!((r.status, r.body.as_slice()), (200, GZ));
    let r = one(&req("GET", "/both.txt", &["Accept-Encoding: *;q=0, identity"]));
    assert_eq!((r.status, r.body.as_slice()), (200, PLAIN));
}

#[test]
fn directory_without_index_is_forbidden() {
    let r = one(&req("GET", "/d/", &[]));
    assert_eq!(r.status, 403);
    assert_eq!(r.body, b"403 Forbidden\n");
    let o = check_with(&site(), &Limits::default(), &cat(&[&req("GET", "/d/", &[]), &req("GET", "/r", &[])]));
    assert_eq!(o.statuses(), [403, 200], "the connection is kept");
}

#[test]
fn pipelined_negotiation_keeps_each_answer_apart() {
    let input = cat(&[
        &req("GET", "/both.txt", &["Accept-Encoding: br"]),
        &req("GET", "/both.txt", &[]),
        &req("GET", "/both.txt", &["Accept-Encoding: gzip"]),
    ]);
    let o = check_with(&site(), &Limits::default(), &input);
    let bodies: Vec<Vec<u8>> = o.responses().into_iter().map(|r| r.body).collect();
    assert_eq!(bodies, [BR.to_vec(), PLAIN.to_vec(), GZ.to_vec()]);
}

mod arbitrary_accept_encoding {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever the Accept-Encoding value (any bytes a field value may hold), a file
        /// with variants answers 200 with one of its representations, labelled right,
        /// or 406; the connection stays usable.
        #[test]
        fn any_accept_encoding_answers_one_representation_or_406(
            value in proptest::collection::vec(
                prop_oneof![
                    Just("br".to_string()), Just("gzip".to_string()), Just("identity".to_string()),
                    Just("*".to_string()), Just(";q=0".to_string()), Just(";q=0.5".to_string()),
                    Just(";q=1".to_string()), Just(",".to_string()), Just(" ".to_string()),
                    "[ -~\t]{0,6}",
                ],
                0..12,
            )
        ) {
            let value = value.concat();
            let input = cat(&[&req("GET", "/both.txt", &[&format!("Accept-Encoding: {value}")]), &req("GET", "/r", &[])]);
            let (o, _) = run_chunks(&site(), &Limits::default(), SendMode::ALL, &[&input]);
            let rs = o.responses();
            prop_assert_eq!(rs.len(), 2, "{}", o.text());
            let r = &rs[0];
            match (r.status, r.header("content-encoding")) {
                (200, None) => prop_assert_eq!(r.body.as_slice(), PLAIN),
                (200, Some("gzip")) => prop_assert_eq!(r.body.as_slice(), GZ),
                (200, Some("br")) => prop_assert_eq!(r.body.as_slice(), BR),
                (406, None) => {}
                other => prop_assert!(false, "unexpected {:?} for {:?}", other, value),
            }
            prop_assert_eq!(r.header("vary"), Some("Accept-Encoding"));
            prop_assert_eq!(rs[1].body.as_slice(), b"route");
        }
    }
}
