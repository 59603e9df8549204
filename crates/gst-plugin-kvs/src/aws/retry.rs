// SPDX-License-Identifier: MPL-2.0
//! The one retry policy of the live reader, the archive reader and the
//! PutMedia sink: which failures are worth another attempt, when the data
//! endpoint is fetched again, how long to wait, how long a request may go
//! unanswered, and when to give up. Each decision is logged with the
//! stream's name.

use std::time::{Duration, Instant};

use super::{Failure, backoff};

/// Repeated transient failures past this many attempts fetch the data
/// endpoint again too: the one in hand may be gone.
const REFRESH_AFTER: u32 = 2;
/// KVS allows 5 GetDataEndpoint calls a second per stream.
const REFRESH_EVERY: Duration = Duration::from_millis(200);

/// How hard to try: the element properties of the one retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Failed attempts in a row before the error is final ...
    pub max_retries: u32,
    /// ... unless the failures have not yet lasted this long, once the
    /// stream was reached (zero: `max_retries` alone decides). Before the
    /// first answer `max_retries` alone decides, so that a wrong endpoint
    /// or stream fails fast.
    pub max_outage: Duration,
    /// Longest wait between attempts (with jitter).
    pub max_backoff: Duration,
    /// A request whose answer has not begun by then is a failed attempt.
    pub request_timeout: Duration,
}

/// What to do about a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait, then try again; with `refresh`, get a new data endpoint first.
    Again { refresh: bool },
    /// The failure is final.
    GiveUp,
}

/// The decision for `failure` at attempt `attempt` (1 for the first failure
/// in a row), the failures in a row having lasted `outage` (None: the
/// stream was never reached).
pub fn decide(
    failure: &Failure,
    attempt: u32,
    outage: Option<Duration>,
    limits: &Limits,
) -> Decision {
    let refresh = match failure {
        Failure::Throttled(_) => false,
        Failure::Endpoint(_) => true,
        Failure::Transient(_) => attempt > REFRESH_AFTER,
        Failure::NotFound(_)
        | Failure::NotAuthorized(_)
        | Failure::InvalidArgument(_)
        | Failure::NoFragments(_) => return Decision::GiveUp,
    };
    let outage_over = outage.is_none_or(|o| o >= limits.max_outage);
    if attempt > limits.max_retries && outage_over {
        return Decision::GiveUp;
    }
    Decision::Again { refresh }
}

/// `call`'s outcome, or a failed attempt when its answer has not begun
/// within `limit`: a peer that takes the connection and never answers
/// (a stalled proxy, a half-open connection) must not hold a reader for good.
pub async fn within<T>(
    limit: Duration,
    what: &str,
    call: impl Future<Output = Result<T, Failure>>,
) -> Result<T, Failure> {
    // Boxed: an SDK call's future is large; moved by value into the
    // timeout, its copies deepen the stack of the thread that polls it,
    // pages a streaming thread then keeps (about 60 KB a live camera).
    tokio::time::timeout(limit, Box::pin(call))
        .await
        .unwrap_or_else(|_| {
            Err(Failure::Transient(format!(
                "{what} got no answer within {:.1} s",
                limit.as_secs_f64()
            )))
        })
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
    limits: Limits,
    attempt: u32,
    /// When the first of the failures in a row happened.
    failing_since: Option<Instant>,
    /// An attempt has worked: failures from now on are an outage.
    reached: bool,
    last_refresh: Option<Instant>,
}

impl Retry {
    /// Decisions are logged in `cat` with the stream's name.
    pub fn new(cat: gst::DebugCategory, stream: &str, limits: Limits) -> Self {
        Retry {
            cat,
            stream: stream.into(),
            limits,
            attempt: 0,
            failing_since: None,
            reached: false,
            last_refresh: None,
        }
    }

    /// An attempt worked: the next failure is the first in a row.
    pub fn succeeded(&mut self) {
        self.attempt = 0;
        self.failing_since = None;
        self.reached = true;
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
        let since = *self.failing_since.get_or_insert_with(Instant::now);
        if matches!(failure, Failure::Throttled(_)) {
            stats.throttled();
        }
        let outage = since.elapsed();
        let counted = self.reached.then_some(outage);
        let refresh = match decide(&failure, self.attempt, counted, &self.limits) {
            Decision::GiveUp => {
                gst::error!(
                    self.cat,
                    "Stream {}: {what} failed for good after {} attempts in {:.1} s: {failure:?}",
                    self.stream,
                    self.attempt,
                    outage.as_secs_f64()
                );
                return Err(failure.after(self.attempt, outage));
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
        let wait = backoff(self.attempt - 1, self.limits.max_backoff);
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
            self.limits.max_retries + 1,
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

    const LIMITS: Limits = Limits {
        max_retries: 10,
        max_outage: Duration::ZERO,
        max_backoff: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
    };

    #[test]
    fn which_failures_are_tried_again() {
        let t = || Failure::Transient("reset".into());
        let now = Some(Duration::ZERO);
        assert_eq!(
            decide(&t(), 1, now, &LIMITS),
            Decision::Again { refresh: false }
        );
        assert_eq!(
            decide(&t(), 3, now, &LIMITS),
            Decision::Again { refresh: true }
        );
        assert_eq!(decide(&t(), 11, now, &LIMITS), Decision::GiveUp);
        let throttled = Failure::Throttled("ClientLimitExceededException".into());
        assert_eq!(
            decide(&throttled, 5, now, &LIMITS),
            Decision::Again { refresh: false }
        );
        let endpoint = Failure::Endpoint("InvalidEndpointException".into());
        assert_eq!(
            decide(&endpoint, 1, now, &LIMITS),
            Decision::Again { refresh: true }
        );
        for fatal in [
            Failure::NotFound("x".into()),
            Failure::NotAuthorized("x".into()),
            Failure::InvalidArgument("x".into()),
            Failure::NoFragments("from 1 to 2".into()),
        ] {
            assert_eq!(
                decide(&fatal, 1, now, &LIMITS),
                Decision::GiveUp,
                "{fatal:?}"
            );
        }
    }

    #[test]
    fn max_outage_keeps_trying_past_max_retries_until_it_has_passed() {
        let t = Failure::Transient("connection refused".into());
        let limits = Limits {
            max_outage: Duration::from_secs(60),
            ..LIMITS
        };
        let s = |n| Some(Duration::from_secs(n));
        let again = |d| matches!(d, Decision::Again { .. });
        assert!(again(decide(&t, 50, s(59), &limits)));
        assert_eq!(decide(&t, 50, s(60), &limits), Decision::GiveUp);
        // Both must be spent: a long outage of few attempts goes on.
        assert!(again(decide(&t, 3, s(600), &limits)));
        // A stream never reached: max-retries alone, to fail fast.
        assert_eq!(decide(&t, 11, None, &limits), Decision::GiveUp);
        assert!(again(decide(&t, 10, None, &limits)));
    }

    #[test]
    fn an_answer_that_never_begins_is_a_failed_attempt() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let never = std::future::pending::<Result<(), Failure>>();
        let out = rt.block_on(within(Duration::from_millis(50), "GetMedia", never));
        match out {
            Err(Failure::Transient(why)) => {
                assert_eq!(why, "GetMedia got no answer within 0.1 s")
            }
            other => panic!("{other:?}"),
        }
        let quick = async { Ok::<_, Failure>(7) };
        let out = rt.block_on(within(Duration::from_secs(5), "GetMedia", quick));
        assert_eq!(out.unwrap(), 7);
    }
}
