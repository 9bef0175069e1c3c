//! The one place that reads the clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use zt_proto::Timestamp;

/// Wall-clock milliseconds (ZeroTier's time base) that never run backwards: anchored to the
/// system clock once, then advanced by the monotonic clock.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_ms: i64,
    anchor: Instant,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock anchored now.
    #[must_use]
    pub fn new() -> Self {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Self {
            anchor_ms: i64::try_from(wall.as_millis()).unwrap_or(0),
            anchor: Instant::now(),
        }
    }

    /// The current time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        let elapsed = i64::try_from(self.anchor.elapsed().as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.anchor_ms.saturating_add(elapsed))
    }

    /// The current time in microseconds on the same base as [`Self::now`] (the TCP/IP stacks'
    /// clock: `now_us() / 1000` is `now()`).
    #[must_use]
    pub fn now_us(&self) -> i64 {
        let elapsed = i64::try_from(self.anchor.elapsed().as_micros()).unwrap_or(i64::MAX);
        self.anchor_ms.saturating_mul(1000).saturating_add(elapsed)
    }

    /// How long from now until `deadline` (zero if it has passed).
    #[must_use]
    pub fn until(&self, deadline: Timestamp) -> Duration {
        let ms = deadline.since(self.now()).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }
}

/// Wall-clock milliseconds since the epoch (for timestamps in worlds and signatures).
#[must_use]
pub fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
