//! One timer per client connection for every read and write deadline of its requests.
//!
//! A timeout per read would put a timer in tokio's wheel and take it out again for nearly
//! every read (each waits a little for the other side): two locked wheel operations per read,
//! a measurable share of a small request's CPU. Writes, nearly always done at once, do not
//! even read the clock. Here the connection's one timer stays armed at
//! or before every deadline it guards and is only moved when it goes off early: at most once
//! per `shortest` timeout per connection, however many requests pass.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::task::Poll;
use std::time::Duration;
use tokio::time::{Instant, Sleep};

pub(super) struct Deadline {
    timer: Pin<Box<Sleep>>,
    /// The shortest timeout it guards: armed no later than this from any moment a wait
    /// begins, it never goes off late for any of them.
    shortest: Duration,
}

impl Deadline {
    pub(super) fn new(shortest: Duration) -> Self {
        // The wheel's resolution: a zero would have it go off early without end.
        let shortest = shortest.max(Duration::from_millis(1));
        Self {
            timer: Box::pin(tokio::time::sleep(shortest)),
            shortest,
        }
    }

    /// `work`'s output, or `None` once `at` has passed first.
    pub(super) async fn within<F: Future>(&mut self, at: Instant, work: F) -> Option<F::Output> {
        self.run(Until::At(at), work).await
    }

    /// `work`'s output, or `None` once it has waited `wait` (counted from its first wait:
    /// work done at once costs no clock read).
    pub(super) async fn within_for<F: Future>(
        &mut self,
        wait: Duration,
        work: F,
    ) -> Option<F::Output> {
        self.run(Until::After(wait), work).await
    }

    async fn run<F: Future>(&mut self, until: Until, work: F) -> Option<F::Output> {
        let mut work = pin!(work);
        let mut at = None;
        poll_fn(|cx| {
            if let Poll::Ready(output) = work.as_mut().poll(cx) {
                return Poll::Ready(Some(output));
            }
            let at = *at.get_or_insert_with(|| {
                let at = match until {
                    Until::At(at) => at,
                    Until::After(wait) => Instant::now() + wait,
                };
                // Sooner than the armed moment (a timeout shorter than `shortest`, which the
                // caller promised not to use, or an instant already close): moved to it.
                if self.timer.deadline() > at {
                    self.timer.as_mut().reset(at);
                }
                at
            });
            while self.timer.as_mut().poll(cx).is_ready() {
                let now = Instant::now();
                if now >= at {
                    return Poll::Ready(None);
                }
                // Gone off early: armed again for the nearest moment any wait could end.
                let next = at.min(now + self.shortest);
                self.timer.as_mut().reset(next);
            }
            Poll::Pending
        })
        .await
    }
}

#[derive(Clone, Copy)]
enum Until {
    At(Instant),
    After(Duration),
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHORTEST: Duration = Duration::from_millis(40);

    #[tokio::test]
    async fn goes_off_at_the_deadline_not_before() {
        let mut deadline = Deadline::new(SHORTEST);
        let start = Instant::now();
        let at = start + 3 * SHORTEST;
        assert_eq!(
            deadline.within(at, std::future::pending::<()>()).await,
            None
        );
        let waited = start.elapsed();
        assert!(waited >= 3 * SHORTEST, "{waited:?}");
    }

    #[tokio::test]
    async fn work_done_in_time_wins_and_later_waits_get_their_full_time() {
        let mut deadline = Deadline::new(SHORTEST);
        for _ in 0..3 {
            let at = Instant::now() + SHORTEST;
            let quick = tokio::time::sleep(SHORTEST / 2);
            assert_eq!(deadline.within(at, quick).await, Some(()));
        }
        // The timer armed for the first wait has gone off by now: this wait still gets all
        // of its time, and ends when its work does.
        let start = Instant::now();
        let at = start + 4 * SHORTEST;
        let slower = tokio::time::sleep(2 * SHORTEST);
        assert_eq!(deadline.within(at, slower).await, Some(()));
        assert!(start.elapsed() >= 2 * SHORTEST);
    }

    #[tokio::test]
    async fn a_wait_counts_from_when_the_work_first_waits() {
        let mut deadline = Deadline::new(SHORTEST);
        let start = Instant::now();
        let never = std::future::pending::<()>();
        assert_eq!(deadline.within_for(2 * SHORTEST, never).await, None);
        assert!(start.elapsed() >= 2 * SHORTEST);
        let quick = tokio::time::sleep(SHORTEST);
        assert_eq!(deadline.within_for(2 * SHORTEST, quick).await, Some(()));
    }

    #[tokio::test]
    async fn a_deadline_sooner_than_the_armed_one_is_kept() {
        let mut deadline = Deadline::new(Duration::from_secs(60));
        let start = Instant::now();
        let at = start + SHORTEST;
        assert_eq!(
            deadline.within(at, std::future::pending::<()>()).await,
            None
        );
        let waited = start.elapsed();
        assert!(
            waited >= SHORTEST && waited < Duration::from_secs(10),
            "{waited:?}"
        );
    }
}
