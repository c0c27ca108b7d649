//! The fuzz harness of duet-http, shared by the fuzz targets in `fuzz_targets/` and by
//! the stable corpus replay (`http/tests/fuzz_corpus.rs`). See `harness.rs`.

#![forbid(unsafe_code)]

mod harness;

pub use harness::*;
