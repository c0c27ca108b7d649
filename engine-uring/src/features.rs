//! The modern io_uring features the engine uses where the kernel has them: each one
//! probed once at start, switchable with `--uring-features` (for the ablation), and
//! named in one log line with the reason when it is off.

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
}

impl Feature {
    /// Every feature, in the order they are listed.
    pub const ALL: [Feature; 7] = [
        Feature::Direct,
        Feature::RingFd,
        Feature::FlatSq,
        Feature::Send,
        Feature::Bundle,
        Feature::ZeroCopy,
        Feature::Incremental,
    ];

    /// The name `--uring-features` and the log use.
    pub fn name(self) -> &'static str {
        match self {
            Feature::Direct => "direct",
            Feature::RingFd => "ring-fd",
            Feature::FlatSq => "flat-sq",
            Feature::Send => "send",
            Feature::Bundle => "bundle",
            Feature::ZeroCopy => "zc",
            Feature::Incremental => "inc",
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
        }
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }

    fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of [`Feature`]s.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Features(u8);

/// The default set: every feature but zero-copy send, which does not pay on loopback
/// (the kernel copies each send anyway and says so in its notification) and, on Linux
/// 6.18, stalls a large send to a peer whose receive window is a few KiB.
impl Default for Features {
    fn default() -> Self {
        Features::all().without(Feature::ZeroCopy)
    }
}

impl Features {
    pub fn all() -> Features {
        Features(Feature::ALL.iter().fold(0, |bits, f| bits | f.bit()))
    }

    pub fn none() -> Features {
        Features(0)
    }

    pub fn has(self, feature: Feature) -> bool {
        self.0 & feature.bit() != 0
    }

    pub fn with(self, feature: Feature) -> Features {
        Features(self.0 | feature.bit())
    }

    pub fn without(self, feature: Feature) -> Features {
        Features(self.0 & !feature.bit())
    }

    /// `--uring-features`: comma-separated items applied left to right, starting from
    /// the default set: `default`, `all`, `none`, a feature's name (add it) or
    /// `no-NAME` (remove it). `none,direct` is direct alone; `no-inc,no-bundle` is the
    /// default without those two; `zc` is the default with zero-copy send.
    pub fn parse(list: &str) -> Result<Features, String> {
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
                        None => {
                            let names: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                            return Err(format!(
                                "unknown io_uring feature '{item}' (expected default, all, none, NAME or no-NAME; names: {})",
                                names.join(", ")
                            ));
                        }
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
    /// `--uring-features` turned it off.
    Flag,
    /// The kernel refused it; the text says how.
    Kernel(String),
    /// Another option excludes it; the text says which and why.
    Excluded(&'static str),
}

/// What the probe found: the features the workers use, and why the others are off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub on: Features,
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

    /// The one log line: which features are on, which are off and why.
    pub fn summary(&self) -> String {
        let mut line = format!(
            "io_uring features on: {}",
            if self.on == Features::none() { "none".into() } else { self.on.to_string() }
        );
        if !self.off.is_empty() {
            let off: Vec<String> = self
                .off
                .iter()
                .map(|(f, why)| match why {
                    Off::Flag => format!("{} (--uring-features)", f.name()),
                    Off::Kernel(how) => format!("{} ({how}; needs Linux {})", f.name(), f.kernel()),
                    Off::Excluded(why) => format!("{} ({why})", f.name()),
                })
                .collect();
            line.push_str("; off: ");
            line.push_str(&off.join(", "));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_applied_left_to_right_from_the_default() {
        let default = Features::default();
        assert_eq!(default.to_string(), "direct,ring-fd,flat-sq,send,bundle,inc");
        assert_eq!(Features::parse("default").unwrap(), default);
        assert_eq!(Features::parse("all").unwrap(), Features::all());
        assert_eq!(Features::parse("zc").unwrap(), Features::all());
        assert_eq!(Features::parse("none").unwrap(), Features::none());
        assert_eq!(Features::parse("none,direct").unwrap(), Features::none().with(Feature::Direct));
        let two_off = Features::parse("all,no-zc, no-bundle").unwrap();
        assert!(!two_off.has(Feature::ZeroCopy) && !two_off.has(Feature::Bundle));
        assert!(two_off.has(Feature::Direct) && two_off.has(Feature::Incremental));
        assert_eq!(two_off.to_string(), "direct,ring-fd,flat-sq,send,inc");
        for f in Feature::ALL {
            assert_eq!(Features::parse(f.name()).unwrap(), default.with(f));
            assert_eq!(Features::parse(&format!("no-{}", f.name())).unwrap(), default.without(f));
        }
    }

    #[test]
    fn an_unknown_feature_is_named_with_the_valid_ones() {
        let err = Features::parse("no-direct,turbo").unwrap_err();
        assert!(err.contains("'turbo'") && err.contains("ring-fd") && err.contains("no-NAME"), "{err}");
        assert!(Features::parse("").is_err());
    }

    #[test]
    fn the_summary_names_each_feature_off_and_why() {
        let resolved = Resolved {
            on: Features::none().with(Feature::Direct),
            off: vec![
                (Feature::ZeroCopy, Off::Flag),
                (Feature::Bundle, Off::Kernel("no IORING_FEAT_RECVSEND_BUNDLE".into())),
                (Feature::Incremental, Off::Excluded("--other needs it off")),
            ],
        };
        assert_eq!(
            resolved.summary(),
            "io_uring features on: direct; off: zc (--uring-features), bundle (no IORING_FEAT_RECVSEND_BUNDLE; \
             needs Linux 6.10), inc (--other needs it off)"
        );
    }
}
