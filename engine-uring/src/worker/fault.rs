//! Fault injection, in test builds only: a panic inside the loop at a point where a
//! connection has operations in flight, and a report of the teardown that followed.

use super::conn::Recv;
use super::{Teardown, Worker};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Armed on a worker through `UringOptions::fault`: the worker panics at the top of the
/// first loop turn in which a connection has its multishot receive armed and a send in
/// flight, and its guard reports the teardown here.
#[derive(Debug, Default)]
pub(crate) struct Fault {
    hit: AtomicBool,
    teardown: Mutex<Option<Teardown>>,
}

impl Fault {
    pub(crate) fn new() -> Arc<Fault> {
        Arc::new(Fault::default())
    }

    /// The worker reached the fault and panicked.
    pub(crate) fn hit(&self) -> bool {
        self.hit.load(Ordering::SeqCst)
    }

    /// What the worker's guard did when it dropped, if it has.
    pub(crate) fn teardown(&self) -> Option<Teardown> {
        *self.teardown.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Worker {
    /// Panics if the fault is armed and a connection has a receive armed and a send in
    /// flight (a connection's send was submitted by the last `io_uring_enter`, and its
    /// completion has not been reaped).
    pub(super) fn fault_point(&mut self) {
        let Some(fault) = self.fault.as_ref() else { return };
        let conns = &self.core.conns;
        let in_flight = conns
            .ids()
            .into_iter()
            .filter_map(|id| conns.get(id))
            .any(|e| e.io.recv == Recv::Armed && e.io.send.is_some());
        if in_flight && !fault.hit.swap(true, Ordering::SeqCst) {
            panic!("injected fault: a panic inside the io_uring loop with a receive and a send in flight");
        }
    }
}

/// Records what `worker`'s guard did, if a fault is armed on it.
pub(super) fn report(worker: &Worker, teardown: Teardown) {
    if let Some(fault) = worker.fault.as_ref() {
        *fault.teardown.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(teardown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UringOptions;
    use duet_engine::WorkerSetup;
    use duet_http::{Limits, Site};
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::panic::{catch_unwind, AssertUnwindSafe};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    /// A panic inside the io_uring loop while a connection has a multishot receive and
    /// a send in flight (the kernel may still write the receive's buffers and read the
    /// send's `msghdr`, iovecs and segments): the worker's guard cancels and reaps every
    /// operation before anything is freed. Shown by the guard's report: teardown began
    /// with those operations in flight and reaped them all, so the worker was freed only
    /// then (had the ring not settled, it would have been leaked).
    ///
    /// This checks that the teardown path was taken, not the absence of a
    /// use-after-free itself: that would need the address sanitizer, which needs a
    /// nightly toolchain this project does not use.
    #[test]
    fn a_panic_in_the_loop_with_operations_in_flight_reaps_them_before_memory_goes() {
        if let Err(e) = crate::probe(&UringOptions::default(), 1) {
            if std::env::var("DUET_REQUIRE_URING").as_deref() == Ok("1") {
                panic!("DUET_REQUIRE_URING=1 but the probe failed: {e}");
            }
            eprintln!("skipped: io_uring unavailable here: {e}");
            return;
        }
        // A body larger than the loopback socket buffers of both ends: with a client
        // that never reads, a send stays in flight.
        let body = bytes::Bytes::from(vec![b'x'; 64 << 20]);
        let site = Site::builder().route("/big", "application/octet-stream", body).build();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("non-blocking listener");
        let addr = listener.local_addr().expect("address");
        // Output queued up to twice the body keeps the receive armed while it is sent.
        let limits = Limits { max_output: 128 << 20, ..Limits::default() };
        let setup = WorkerSetup::single(listener, Arc::new(site), limits);
        let fault = Fault::new();
        let opts = UringOptions { fault: Some(Arc::clone(&fault)), ..Default::default() };
        let features = crate::features(&opts).on;
        let (done_tx, done) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let outcome = catch_unwind(AssertUnwindSafe(|| super::super::run(setup, &opts, features)));
            let _ = done_tx.send(());
            outcome.is_err()
        });

        let mut client = TcpStream::connect(addr).expect("connect");
        client.write_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n").expect("request");
        // Each further request (a small 404) is a receive completion that wakes the
        // loop; the fault point is reached at the top of the next turn. Write errors are
        // expected once the worker has gone.
        let give_up = Instant::now() + Duration::from_secs(30);
        while done.recv_timeout(Duration::from_millis(20)).is_err() {
            assert!(Instant::now() < give_up, "the worker never reached the fault point");
            let _ = client.write_all(b"GET /none HTTP/1.1\r\nHost: x\r\n\r\n");
        }
        let panicked = worker.join().expect("the worker thread");

        assert!(panicked && fault.hit(), "the worker did not panic at the fault point");
        let teardown = fault.teardown().expect("the guard did not tear down on the way out of the panic");
        eprintln!("teardown after the panic: {teardown:?}");
        // The receive and the send at least (with the wake read, the accept, the timeout).
        assert!(teardown.in_flight >= 2, "{teardown:?}");
        assert!(teardown.settled, "the ring did not give back every completion (the worker was leaked): {teardown:?}");
    }
}
