//! How prepatch waits on AWS: it looks again soon, then less and less
//! often, so that it notices at once what finishes quickly and spends few
//! requests on what takes long.
//!
//! Each wait (AMIs available, instances running or stopped, validation's
//! second looks) makes one request per account-region per look, covering
//! everything still pending there, on a [`Polls`] schedule.

use std::time::Duration;

use tokio::time::Instant;

use super::Shutdown;

/// The first look, and the shortest gap between two.
pub const FIRST: Duration = Duration::from_secs(1);

/// A wait's schedule: the gap before the next look is a quarter of the
/// time waited so far, at least [`FIRST`] and at most `cap`, and never past
/// the deadline. Whenever AWS finishes, prepatch notices within
/// max(1 s, 25% of the time already waited), and a wait of T seconds costs
/// about 4 + ln(T / 4 s) / ln(1.25) looks until the cap is reached: 27 for
/// ten minutes, 31 for half an hour. (A 2-second first gap would save 3
/// looks a wait and notice a 3-second AMI or start a second later: on the
/// stage, 12.5 s against 14.6 s for a whole run.)
#[derive(Clone, Copy, Debug)]
pub struct Polls {
    began: Instant,
    deadline: Instant,
    first: Duration,
    cap: Duration,
}

impl Polls {
    /// A wait that starts now and gives up after `timeout`.
    pub fn new(timeout: Duration, cap: Duration) -> Polls {
        let began = Instant::now();
        Polls {
            began,
            deadline: began + timeout,
            first: FIRST,
            cap,
        }
    }

    /// The same wait with a longer shortest gap, for what AWS itself
    /// updates only every few seconds or more.
    pub fn first_gap(mut self, first: Duration) -> Polls {
        self.first = first.max(FIRST);
        self
    }

    /// The same wait, begun at `since` (earlier than now): what was asked
    /// for then has been waited on since, so the gaps start longer.
    pub fn waited_since(mut self, since: Instant) -> Polls {
        self.began = self.began.min(since);
        self
    }

    /// The gap from `now` to the next look.
    pub fn gap(&self, now: Instant) -> Duration {
        let waited = now.saturating_duration_since(self.began);
        (waited / 4)
            .max(self.first)
            .min(self.cap.max(self.first))
            .min(self.deadline.saturating_duration_since(now))
    }

    /// How long this wait has waited so far.
    pub fn waited(&self) -> Duration {
        Instant::now().saturating_duration_since(self.began)
    }

    /// The deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Sleeps until the next look. False when the deadline has passed or
    /// the operator asked to stop.
    pub async fn wait(&self, shutdown: &Shutdown) -> bool {
        !self.expired() && shutdown.sleep(self.gap(Instant::now())).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times of every look of a wait of `timeout`.
    async fn looks(timeout: Duration, cap: Duration) -> Vec<f64> {
        let polls = Polls::new(timeout, cap);
        let mut at = Vec::new();
        while polls.wait(&Shutdown::never()).await {
            at.push(polls.began.elapsed().as_secs_f64());
        }
        at
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_look_is_soon_and_no_finish_goes_unnoticed_long() {
        let at = looks(Duration::from_secs(3600), Duration::from_secs(180)).await;
        assert_eq!(at[..5], [1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut before = 0.0;
        for &t in &at {
            // Done just after the look before: noticed at `t`.
            let late = t - before;
            assert!(
                // The timer counts whole milliseconds.
                late <= f64::max(1.0, 0.25 * before) + 0.002,
                "{late} s late at {before} s"
            );
            before = t;
        }
        assert_eq!(*at.last().unwrap(), 3600.0, "a last look at the deadline");
        // 27 to reach the 3-minute cap at 12 minutes, then one each 3 minutes.
        assert!(at.len() <= 44, "{} looks in an hour", at.len());
    }

    #[tokio::test(start_paused = true)]
    async fn the_cap_bounds_the_gap_and_ten_minutes_cost_few_looks() {
        let at = looks(Duration::from_secs(600), Duration::from_secs(20)).await;
        assert!(at.windows(2).all(|w| w[1] - w[0] <= 20.002));
        let uncapped = looks(Duration::from_secs(600), Duration::from_secs(600)).await;
        assert!(uncapped.len() <= 27, "{uncapped:?}");
    }
}
