//! `--rate-limit-per-ip` and `--rate-limit-per-user` as settings: a sustained rate and its
//! burst. Here, below both `config` and `http`, so that settings import nothing from `http`
//! (`http::rate_limit` turns a rate into a budget).

use std::num::NonZeroU32;

/// A sustained rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_second: NonZeroU32,
    pub burst: NonZeroU32,
}

impl Rate {
    /// `per_second` requests a second (0: no limit) and a burst of `burst` (default: one
    /// second's worth).
    pub fn new(per_second: u32, burst: Option<u32>) -> Option<Rate> {
        let per_second = NonZeroU32::new(per_second)?;
        let burst = burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Some(Rate { per_second, burst })
    }
}
