//! A replaced site lets go of what it served: its table at each worker's next loop
//! turn, a streamed file once the last response sending it is done.

use duet_http::testing::*;
use duet_http::{Body, Limits, Site};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};

#[test]
fn a_replaced_sites_file_closes_once_no_table_and_no_response_uses_it() {
    let path = std::env::temp_dir().join(format!("duet-reload-{}", std::process::id()));
    std::fs::write(&path, b"old body").unwrap();
    let file = Arc::new(std::fs::File::open(&path).unwrap());
    std::fs::remove_file(&path).unwrap();
    let alive: Weak<std::fs::File> = Arc::downgrade(&file);
    let site = Arc::new(Site::builder().route("/f", "text/plain", Body::file(file, 8)).build());
    let replaced = Arc::new(AtomicUsize::new(0));
    {
        let replaced = Arc::clone(&replaced);
        site.on_replace(move || {
            replaced.fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut e = Driver::with_site(Arc::clone(&site), Limits::default());
    // A response streaming the file is queued, not sent, when the site is replaced.
    e.feed(&get("/f"));
    site.replace(Site::hello());
    assert_eq!(replaced.load(Ordering::SeqCst), 1, "the hook runs once per replace");
    assert!(alive.upgrade().is_some(), "the worker's table and the queued response still use it");
    // The worker's next loop turn picks up the new table.
    e.ctx.set_time(e.t0, wall());
    assert!(alive.upgrade().is_some(), "the queued response still sends it");
    e.flush();
    assert_eq!(e.responses()[0].body, b"old body");
    assert!(alive.upgrade().is_none(), "the file is closed once the response is sent");
    e.read_event(&get("/"));
    assert_eq!(e.responses()[1].body, b"Hello, World!");
}
