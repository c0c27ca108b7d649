//! What `serve` is given, and the worker threads it runs: one per listener, each
//! pinned by one rule, each handed a ready [`Context`].

use crate::access_log::{AccessLog, AccessLogWriter};
use crate::shutdown::{Drain, Shutdown};
use crate::stats::{Metrics, Stats};
use duet_http::{Context, HttpStats, Limits, MetricsSource, Site};
use std::io;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tracing::{debug, warn};

/// Everything an engine needs to serve (engine-specific tuning comes beside it).
#[derive(Debug)]
pub struct ServeConfig {
    /// One bound, listening, non-blocking `SO_REUSEPORT` socket per worker thread.
    pub listeners: Vec<TcpListener>,
    /// Pin each worker to a CPU ([`pin_cpu`] says which).
    pub pin: bool,
    /// Per-connection limits.
    pub limits: Limits,
    /// How long a graceful shutdown waits for busy connections.
    pub drain_timeout: Duration,
    /// The first part of the drain in which idle keep-alive connections stay open for
    /// their next request, answered with `Connection: close` ([`Drain`]).
    pub lame_duck: Duration,
    /// Where workers publish their counters for `--metrics` (`None`: off, no cost).
    pub metrics: Option<Arc<Metrics>>,
    /// `--access-log`: where each worker writes a line per response (`None`: off, no
    /// cost).
    pub access_log: Option<Arc<AccessLog>>,
}

/// Where a worker publishes its counters (a no-op when `--metrics` is off).
#[derive(Debug)]
pub struct Publisher {
    metrics: Option<Arc<Metrics>>,
    worker: usize,
}

impl Publisher {
    /// Publishes the worker's counters; engines call it once per loop turn, before
    /// blocking.
    #[inline]
    pub fn publish(&self, stats: &Stats, http: &HttpStats) {
        if let Some(metrics) = &self.metrics {
            metrics.publish(self.worker, stats, http);
        }
    }
}

/// What one worker thread is handed.
#[derive(Debug)]
pub struct WorkerSetup {
    /// The worker's index (0-based), also its listener's.
    pub index: usize,
    /// The listener it alone accepts on.
    pub listener: TcpListener,
    /// Its HTTP context, with `--metrics` attached.
    pub ctx: Context,
    /// The shutdown request (register a waker, then check its state).
    pub shutdown: Shutdown,
    /// Its drain, not begun.
    pub drain: Drain,
    /// Where it publishes its counters.
    pub publisher: Publisher,
    /// Its access log writer (a no-op when the log is off): `turn_end` before each
    /// wait for events, `finish` when it stops.
    pub access_log: AccessLogWriter,
}

impl WorkerSetup {
    /// Worker 0 alone, outside [`run_workers`]: `listener`, a fresh context for `site`
    /// and `limits`, no metrics, no shutdown asked. For an engine's tests of its loop.
    pub fn single(listener: TcpListener, site: Arc<Site>, limits: Limits) -> WorkerSetup {
        let mut ctx = Context::new(site, limits, Instant::now(), SystemTime::now());
        WorkerSetup {
            index: 0,
            listener,
            access_log: AccessLogWriter::new(None, &mut ctx),
            ctx,
            shutdown: Shutdown::new(),
            drain: Drain::new(Duration::from_secs(1), Duration::ZERO),
            publisher: Publisher { metrics: None, worker: 0 },
        }
    }
}

/// The CPU worker `index` is pinned to with `--pin`: the `index`-th CPU this process
/// may run on, wrapping around when there are more workers than CPUs.
pub fn pin_cpu(index: usize, cpus: &[usize]) -> Option<usize> {
    if cpus.is_empty() {
        None
    } else {
        Some(cpus[index % cpus.len()])
    }
}

/// Runs `worker` on one thread per listener, named `duet-<engine>-<i>` and pinned
/// when `config.pin`, and merges their counters. The first worker error is returned
/// after all have stopped; a failing worker asks the others to stop. A replaced `site`
/// wakes every worker (through the wakers registered with `shutdown`), so each picks
/// up the new table and lets go of the old one at once, traffic or not.
pub fn run_workers<F>(
    engine: &str,
    config: ServeConfig,
    site: Arc<Site>,
    shutdown: &Shutdown,
    worker: F,
) -> io::Result<Stats>
where
    F: Fn(WorkerSetup) -> io::Result<Stats> + Send + Sync + 'static,
{
    let ServeConfig { listeners, pin, limits, drain_timeout, lame_duck, metrics, access_log } = config;
    let cores = if pin { core_affinity::get_core_ids().unwrap_or_default() } else { Vec::new() };
    let cpus: Vec<usize> = cores.iter().map(|c| c.id).collect();
    let worker = Arc::new(worker);
    {
        let shutdown = shutdown.clone();
        site.on_replace(move || shutdown.wake());
    }
    let mut handles = Vec::new();
    for (index, listener) in listeners.into_iter().enumerate() {
        let worker = Arc::clone(&worker);
        let shutdown = shutdown.clone();
        let site = Arc::clone(&site);
        let limits = limits.clone();
        let metrics = metrics.clone();
        let access_log = access_log.clone();
        let cpu = if pin { Some(pin_cpu(index, &cpus)) } else { None };
        let handle = std::thread::Builder::new().name(format!("duet-{engine}-{index}")).spawn(move || {
            match cpu {
                Some(Some(id)) if core_affinity::set_for_current(core_affinity::CoreId { id }) => {
                    debug!("worker {index} pinned to CPU {id}")
                }
                Some(_) => warn!("worker {index}: could not pin to a CPU"),
                None => {}
            }
            let mut ctx = Context::new(site, limits, Instant::now(), SystemTime::now());
            ctx.attach_metrics(metrics.clone().map(|m| m as Arc<dyn MetricsSource>), index);
            let access_log = AccessLogWriter::new(access_log, &mut ctx);
            let setup = WorkerSetup {
                access_log,
                index,
                listener,
                ctx,
                shutdown: shutdown.clone(),
                drain: Drain::new(drain_timeout, lame_duck),
                publisher: Publisher { metrics, worker: index },
            };
            let result = worker(setup);
            if result.is_err() {
                shutdown.force();
            }
            result
        })?;
        handles.push(handle);
    }
    let mut report = Stats::default();
    let mut first_err = None;
    for h in handles {
        match h.join() {
            Ok(Ok(stats)) => report.merge(&stats),
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(io::Error::other("a worker thread panicked"));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A config with `n` listeners on ephemeral loopback ports.
    fn config_with_listeners(n: usize) -> ServeConfig {
        ServeConfig {
            listeners: (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind")).collect(),
            pin: false,
            limits: Limits::default(),
            drain_timeout: Duration::from_secs(1),
            lame_duck: Duration::ZERO,
            metrics: None,
            access_log: None,
        }
    }

    #[test]
    fn workers_pin_to_the_allowed_cpus_in_order_and_wrap() {
        assert_eq!(pin_cpu(0, &[]), None);
        let cpus = [2, 3, 5];
        let picked: Vec<_> = (0..5).map(|i| pin_cpu(i, &cpus)).collect();
        assert_eq!(picked, vec![Some(2), Some(3), Some(5), Some(2), Some(3)]);
    }

    #[test]
    fn every_worker_runs_once_with_its_own_listener_and_the_reports_merge() {
        let config = config_with_listeners(3);
        let ports: Vec<_> = config.listeners.iter().map(|l| l.local_addr().unwrap().port()).collect();
        let site = Arc::new(Site::builder().build());
        let report = run_workers("test", config, site, &Shutdown::new(), move |setup| {
            assert_eq!(setup.listener.local_addr().unwrap().port(), ports[setup.index]);
            assert_eq!(std::thread::current().name(), Some(format!("duet-test-{}", setup.index).as_str()));
            Ok(Stats { accepted: 1 + setup.index as u64, ..Stats::default() })
        })
        .expect("workers ran");
        assert_eq!(report.accepted, 1 + 2 + 3);
    }

    #[test]
    fn a_replaced_site_wakes_every_worker() {
        let config = config_with_listeners(2);
        let shutdown = Shutdown::new();
        let site = Arc::new(Site::builder().build());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let ready_tx = std::sync::Mutex::new(ready_tx);
        let replacer = {
            let site = Arc::clone(&site);
            std::thread::spawn(move || {
                // Both workers have registered their wakers: replace the site, once.
                for _ in 0..2 {
                    ready_rx.recv_timeout(Duration::from_secs(60)).expect("a worker is ready");
                }
                site.replace(Site::hello());
            })
        };
        let report = run_workers("test", config, site, &shutdown, move |setup| {
            let (tx, rx) = std::sync::mpsc::channel();
            let tx = std::sync::Mutex::new(tx);
            setup.shutdown.register_waker(move || {
                let _ = tx.lock().map(|tx| tx.send(()));
            });
            let _ = ready_tx.lock().map(|tx| tx.send(()));
            // Woken although the shutdown state did not change.
            rx.recv_timeout(Duration::from_secs(60)).expect("woken by the replaced site");
            assert_eq!(setup.shutdown.state(), crate::ShutdownState::Running);
            Ok(Stats { wakeups: 1, ..Stats::default() })
        })
        .expect("workers ran");
        assert_eq!(report.wakeups, 2, "every worker was woken");
        replacer.join().expect("the replacing thread");
    }

    #[test]
    fn a_failing_worker_forces_shutdown_and_its_error_is_returned() {
        let config = config_with_listeners(2);
        let shutdown = Shutdown::new();
        let seen = shutdown.clone();
        let site = Arc::new(Site::builder().build());
        let err = run_workers("test", config, site, &shutdown, move |setup| {
            if setup.index == 0 {
                return Err(io::Error::other("worker 0 failed"));
            }
            // Worker 1 stops once worker 0's failure forced the shutdown.
            let (tx, rx) = std::sync::mpsc::channel();
            let tx = std::sync::Mutex::new(tx);
            setup.shutdown.register_waker(move || {
                let _ = tx.lock().map(|tx| tx.send(()));
            });
            while setup.shutdown.state() != crate::ShutdownState::Immediate {
                rx.recv_timeout(Duration::from_secs(60)).expect("woken by the forced shutdown");
            }
            Ok(Stats::default())
        })
        .expect_err("the error is returned");
        assert_eq!(err.to_string(), "worker 0 failed");
        assert_eq!(seen.state(), crate::ShutdownState::Immediate);
    }
}
