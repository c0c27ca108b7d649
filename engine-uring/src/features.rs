//! The modern io_uring features the engine uses where the kernel has them: each one
//! probed once at start ([`crate::features()`]), switchable one by one (for the
//! ablation), and reported with the reason when it is off ([`Resolved`]).

use std::fmt;

/// One optional io_uring feature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Feature {
    /// Direct descriptors: accepted sockets live in the ring's registered file table
    /// (multishot accept with `IORING_FILE_INDEX_ALLOC`), every operation names the slot,
    /// and `IORING_OP_CLOSE` closes it: no process fd, no fd lookup per operation.
    Direct,
    /// The ring's own fd registered (`IORING_REGISTER_RING_FDS`): `io_uring_enter` skips
    /// the fd lookup.
    RingFd,
    /// `IORING_SETUP_NO_SQARRAY`: submissions are read straight from the SQE array.
    FlatSq,
    /// `IORING_OP_SEND` for one contiguous segment, `SENDMSG` only for several.
    Send,
    /// Receive bundles: one multishot completion carries several provided buffers.
    Bundle,
    /// Zero-copy send (`SEND_ZC`/`SENDMSG_ZC`) for responses above a threshold.
    ZeroCopy,
    /// Incremental consumption of provided buffers (`IOU_PBUF_RING_INC`): one large
    /// buffer serves many small receives, so the receive pool can be small.
    Incremental,
    /// File bodies leave with `sendfile(2)` called from the loop on the non-blocking
    /// socket (page-cache pages go to the socket by reference: no copy, no buffer), with
    /// a one-shot `POLLOUT` through the ring when the socket is full. A direct descriptor
    /// gets a process fd for it once, with `IORING_OP_FIXED_FD_INSTALL`. Off: files are
    /// read into a chunk buffer and sent from it (two copies).
    Sendfile,
    /// File bodies go file -> pipe -> socket as linked `IORING_OP_SPLICE` entries
    /// through a pipe per streaming connection. Every splice runs in an io-wq thread
    /// (io_uring cannot splice without blocking), so it is off by default: an ablation
    /// item. Takes precedence over [`Feature::Sendfile`] when both are on.
    Splice,
    /// File bodies are sent straight from a shared read-only `mmap` of the file (one
    /// mapping per file and worker, kept while the file is served): the head and the
    /// body's share leave in one `sendmsg` through the ring, one copy (page cache to
    /// socket) instead of the chunk buffer's two. The engine never reads the mapping
    /// itself, so a truncated file is an `EFAULT` in a send, never a SIGBUS. Takes
    /// precedence over [`Feature::Sendfile`] (not over [`Feature::Splice`]).
    Mmap,
    /// As [`Feature::Mmap`], with zero-copy sends (`SENDMSG_ZC`) of the mapped body:
    /// the kernel pins the page-cache pages instead of copying them, and the mapping is
    /// held until the send's notification.
    MmapZc,
}

impl Feature {
    /// Every feature, in the order they are listed.
    pub const ALL: [Feature; 11] = [
        Feature::Direct,
        Feature::RingFd,
        Feature::FlatSq,
        Feature::Send,
        Feature::Bundle,
        Feature::ZeroCopy,
        Feature::Incremental,
        Feature::Sendfile,
        Feature::Splice,
        Feature::Mmap,
        Feature::MmapZc,
    ];

    /// Its name in a feature list ([`Features::parse`]) and in the log.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Direct => "direct",
            Feature::RingFd => "ring-fd",
            Feature::FlatSq => "flat-sq",
            Feature::Send => "send",
            Feature::Bundle => "bundle",
            Feature::ZeroCopy => "zc",
            Feature::Incremental => "inc",
            Feature::Sendfile => "sendfile",
            Feature::Splice => "splice",
            Feature::Mmap => "mmap",
            Feature::MmapZc => "mmap-zc",
        }
    }

    /// The oldest kernel that has it, as the engine uses it.
    pub fn kernel(self) -> &'static str {
        match self {
            // Socket commands through the ring (the drain's unread-bytes check).
            Feature::Direct => "6.7",
            Feature::RingFd => "5.18",
            Feature::FlatSq => "6.6",
            Feature::Send => "5.6",
            Feature::Bundle => "6.10",
            Feature::ZeroCopy => "6.1",
            Feature::Incremental => "6.12",
            // `IORING_OP_FIXED_FD_INSTALL`, for a direct descriptor (5.1 without them).
            Feature::Sendfile => "6.8",
            Feature::Splice => "5.7",
            Feature::Mmap => "5.6",
            Feature::MmapZc => "6.1",
        }
    }

    fn bit(self) -> u16 {
        1 << self as u16
    }

    fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of [`Feature`]s.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Features(u16);

/// The default set: every feature but zero-copy send, which does not pay on loopback
/// (the kernel copies each send anyway and says so in its notification) and, on Linux
/// 6.18, stalls a large send to a peer whose receive window is a few KiB; and but ring
/// splices, which io_uring runs in io-wq worker threads (measured in docs/io_uring.md:
/// no cheaper than `sendfile` from the loop, and three more threads); and but sends
/// from a file mapping, with or without zero copy (measured in docs/io_uring.md:
/// `sendfile` from the loop costs less server CPU at every size).
impl Default for Features {
    fn default() -> Self {
        Features::all()
            .without(Feature::ZeroCopy)
            .without(Feature::Splice)
            .without(Feature::Mmap)
            .without(Feature::MmapZc)
    }
}

/// An item of a feature list that is no feature (see [`Features::parse`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownFeature {
    /// The item, as written.
    pub item: String,
}

impl fmt::Display for UnknownFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
        write!(
            f,
            "unknown io_uring feature '{}' (expected default, all, none, NAME or no-NAME; names: {})",
            self.item,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownFeature {}

impl Features {
    /// Every feature.
    pub fn all() -> Features {
        Features(Feature::ALL.iter().fold(0, |bits, f| bits | f.bit()))
    }

    /// No feature.
    pub fn none() -> Features {
        Features(0)
    }

    /// Whether `feature` is in the set.
    pub fn has(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    /// The set with `feature` added.
    pub fn with(self, feature: Feature) -> Features {
        Features(self.0 | feature.bit())
    }

    /// The set with `feature` removed.
    pub fn without(self, feature: Feature) -> Features {
        Features(self.0 & !feature.bit())
    }

    /// A feature list: comma-separated items applied left to right, starting from
    /// the default set: `default`, `all`, `none`, a feature's name (add it) or
    /// `no-NAME` (remove it). `none,direct` is direct alone; `no-inc,no-bundle` is the
    /// default without those two; `zc` is the default with zero-copy send.
    pub fn parse(list: &str) -> Result<Features, UnknownFeature> {
        let mut set = Features::default();
        for item in list.split(',').map(str::trim) {
            set = match item {
                "default" => Features::default(),
                "all" => Features::all(),
                "none" => Features::none(),
                _ => {
                    let (name, on) = match item.strip_prefix("no-") {
                        Some(name) => (name, false),
                        None => (item, true),
                    };
                    match Feature::from_name(name) {
                        Some(f) if on => set.with(f),
                        Some(f) => set.without(f),
                        None => return Err(UnknownFeature { item: item.to_owned() }),
                    }
                }
            };
        }
        Ok(set)
    }

    /// The features in the set, in [`Feature::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.has(*f))
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_string())
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.iter().map(Feature::name).collect();
        f.write_str(&names.join(","))
    }
}

/// Why a feature asked for is off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Off {
    /// It was not asked for (the program's options turned it off).
    Flag,
    /// The kernel refused it; the text says how.
    Kernel(String),
    /// Another option excludes it; the text says which and why.
    Excluded(&'static str),
}

/// What the probe found: the features the workers use, and why the others are off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The features to use.
    pub on: Features,
    /// Each feature that is off, with the reason, in [`Feature::ALL`] order (then those
    /// [`Resolved::exclude`] turned off).
    pub off: Vec<(Feature, Off)>,
}

impl Resolved {
    /// Turns `feature` off, if it is on, because another option excludes it (`why`).
    pub fn exclude(&mut self, feature: Feature, why: &'static str) {
        if self.on.has(feature) {
            self.on = self.on.without(feature);
            self.off.push((feature, Off::Excluded(why)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_applied_left_to_right_from_the_default() {
        let default = Features::default();
        assert_eq!(default.to_string(), "direct,ring-fd,flat-sq,send,bundle,inc,sendfile");
        assert_eq!(Features::parse("default").unwrap(), default);
        assert_eq!(Features::parse("all").unwrap(), Features::all());
        assert_eq!(Features::parse("zc,splice,mmap,mmap-zc").unwrap(), Features::all());
        assert_eq!(Features::parse("none").unwrap(), Features::none());
        assert_eq!(Features::parse("none,direct").unwrap(), Features::none().with(Feature::Direct));
        let two_off = Features::parse("all,no-zc, no-bundle").unwrap();
        assert!(!two_off.has(Feature::ZeroCopy) && !two_off.has(Feature::Bundle));
        assert!(two_off.has(Feature::Direct) && two_off.has(Feature::Incremental));
        assert_eq!(two_off.to_string(), "direct,ring-fd,flat-sq,send,inc,sendfile,splice,mmap,mmap-zc");
        for f in Feature::ALL {
            assert_eq!(Features::parse(f.name()).unwrap(), default.with(f));
            assert_eq!(Features::parse(&format!("no-{}", f.name())).unwrap(), default.without(f));
        }
    }

    #[test]
    fn an_unknown_feature_is_named_with_the_valid_ones() {
        let err = Features::parse("no-direct,turbo").unwrap_err();
        assert_eq!(err.item, "turbo");
        let err = err.to_string();
        assert!(err.contains("'turbo'") && err.contains("ring-fd") && err.contains("no-NAME"), "{err}");
        assert!(Features::parse("").is_err());
    }
}
