// SPDX-License-Identifier: MPL-2.0
//! The one retry policy of the live reader, the archive reader and the
//! PutMedia sink: which
//! failures are worth another attempt, when the data endpoint is fetched
//! again, how long to wait, and when to give up. Each decision is logged
//! with the stream's name.

use std::time::{Duration, Instant};

use super::{Failure, backoff};

/// Repeated transient failures past this many attempts fetch the data
/// endpoint again too: the one in hand may be gone.
const REFRESH_AFTER: u32 = 2;
/// KVS allows 5 GetDataEndpoint calls a second per stream.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait, then try again; with `refresh`, get a new data endpoint first.
    Again { refresh: bool },
    /// The failure is final.
    GiveUp,
}

/// The decision for `failure` at attempt `attempt` (1 for the first failure
/// in a row), allowing `max_retries` attempts.
pub fn decide(failure: &Failure, attempt: u32, max_retries: u32) -> Decision {
    let refresh = match failure {
        Failure::Throttled(_) => false,
        Failure::Endpoint(_) => true,
        Failure::Transient(_) => attempt > REFRESH_AFTER,
        Failure::NotFound(_)
        | Failure::NotAuthorized(_)
        | Failure::InvalidArgument(_)
        | Failure::NoFragments => return Decision::GiveUp,
    };
    if attempt > max_retries {
        return Decision::GiveUp;
    }
    Decision::Again { refresh }
}

/// Where a caller counts throttles and endpoint refreshes.
pub trait Counts {
    fn throttled(&mut self);
    fn refreshed(&mut self);
}

/// Failures in a row, and when the endpoint was last fetched again.
#[derive(Debug)]
pub struct Retry {
    cat: gst::DebugCategory,
    stream: String,
    max_retries: u32,
    max_backoff: Duration,
    attempt: u32,
    last_refresh: Option<Instant>,
}

impl Retry {
    /// Decisions are logged in `cat` with the stream's name.
    pub fn new(
        cat: gst::DebugCategory,
        stream: &str,
        max_retries: u32,
        max_backoff: Duration,
    ) -> Self {
        Retry {
            cat,
            stream: stream.into(),
            max_retries,
            max_backoff,
            attempt: 0,
            last_refresh: None,
        }
    }

    /// An attempt worked: the next failure is the first in a row.
    pub fn succeeded(&mut self) {
        self.attempt = 0;
    }

    /// Counts `failure` in `stats`, waits before the next attempt and says
    /// whether to fetch the data endpoint again; or gives the failure back
    /// as final. `what` names the call that failed, for the log.
    pub async fn recover(
        &mut self,
        what: &str,
        failure: Failure,
        stats: &mut impl Counts,
    ) -> Result<bool, Failure> {
        self.attempt += 1;
        if matches!(failure, Failure::Throttled(_)) {
            stats.throttled();
        }
        let refresh = match decide(&failure, self.attempt, self.max_retries) {
            Decision::GiveUp => {
                gst::error!(
                    self.cat,
                    "Stream {}: {what} failed for good after {} attempts: {failure:?}",
                    self.stream,
                    self.attempt
                );
                return Err(failure);
            }
            Decision::Again { refresh } => refresh,
        };
        if refresh {
            if self
                .last_refresh
                .is_some_and(|t| t.elapsed() < REFRESH_EVERY)
            {
                tokio::time::sleep(REFRESH_EVERY).await;
            }
            self.last_refresh = Some(Instant::now());
            stats.refreshed();
        }
        let wait = backoff(self.attempt - 1, self.max_backoff);
        let level = if matches!(failure, Failure::Throttled(_)) || self.attempt > 1 {
            gst::DebugLevel::Warning
        } else {
            gst::DebugLevel::Info
        };
        gst::log_with_level!(
            self.cat,
            level,
            "Stream {}: {what} failed (attempt {} of {}): {failure:?}; trying again in {wait:?}{}",
            self.stream,
            self.attempt,
            self.max_retries + 1,
            if refresh {
                " with a new data endpoint"
            } else {
                ""
            }
        );
        tokio::time::sleep(wait).await;
        Ok(refresh)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_failures_are_tried_again() {
        let t = || Failure::Transient("reset".into());
        assert_eq!(decide(&t(), 1, 10), Decision::Again { refresh: false });
        assert_eq!(decide(&t(), 3, 10), Decision::Again { refresh: true });
        assert_eq!(decide(&t(), 11, 10), Decision::GiveUp);
        let throttled = Failure::Throttled("ClientLimitExceededException".into());
        assert_eq!(
            decide(&throttled, 5, 10),
            Decision::Again { refresh: false }
        );
        let endpoint = Failure::Endpoint("InvalidEndpointException".into());
        assert_eq!(decide(&endpoint, 1, 10), Decision::Again { refresh: true });
        for fatal in [
            Failure::NotFound("x".into()),
            Failure::NotAuthorized("x".into()),
            Failure::InvalidArgument("x".into()),
            Failure::NoFragments,
        ] {
            assert_eq!(decide(&fatal, 1, 10), Decision::GiveUp, "{fatal:?}");
        }
    }
}
