//! Image garbage collection by disk usage, as the kubelet's image GC manager does it: when
//! the image filesystem is fuller than the high threshold, unused images are removed,
//! least recently used first, until usage is under the low threshold.

/// kubelet's --image-gc-high-threshold / --image-gc-low-threshold, in percent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub high: u8,
    pub low: u8,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds { high: 85, low: 80 }
    }
}
