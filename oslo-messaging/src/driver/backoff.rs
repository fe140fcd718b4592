//! Reconnect delays (oslo's use of kombu's `ensure_connection` intervals).

use std::time::Duration;

use crate::config::RabbitOptions;

/// The longest wait between two reconnect attempts, whatever the options say.
const MAX_DELAY: f64 = 3600.0;

/// The wait before reconnect attempt `attempt` (0-based) after a connection was lost, as
/// Python's (kombu's `ensure`) waits were measured: `kombu_reconnect_delay` first, then that
/// delay plus an interval growing from `rabbit_retry_interval` by `rabbit_retry_backoff` up to
/// `rabbit_interval_max` (1, 2, 4, 6, 8 ... s with the defaults). The interval part varies by
/// ±25% at random, so processes that lost the same broker at the same moment do not all come
/// back at the same moments (Python's waits have no jitter: its `kombu_reconnect_splay` is only
/// added to the logged number); `kombu_reconnect_splay` adds a random `0..splay` on top.
/// Capped at an hour.
pub(crate) fn delay(opts: &RabbitOptions, attempt: u32) -> Duration {
    let start = opts.rabbit_retry_interval.max(1) as f64;
    let step = opts.rabbit_retry_backoff.max(0) as f64;
    let max = opts.rabbit_interval_max.max(1) as f64;
    let interval = if attempt == 0 {
        0.0
    } else {
        (start + step * f64::from(attempt - 1)).min(max) * (0.75 + 0.5 * fastrand::f64())
    };
    let splay = if opts.kombu_reconnect_splay > 0.0 {
        fastrand::f64() * opts.kombu_reconnect_splay
    } else {
        0.0
    };
    let total = interval + opts.kombu_reconnect_delay.max(0.0) + splay;
    Duration::from_secs_f64(if total.is_finite() {
        total.clamp(0.0, MAX_DELAY)
    } else {
        MAX_DELAY
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_linearly_to_the_cap_plus_delay_with_jitter() {
        let o = RabbitOptions::default();
        // Python's measured waits, the interval part (all but the 1 s delay) within ±25%.
        let python = [1.0, 2.0, 4.0, 6.0, 8.0, 10.0];
        let mut spread = [(f64::MAX, 0.0f64); 6];
        for _ in 0..200 {
            for (a, want) in python.iter().enumerate() {
                let got = delay(&o, a as u32).as_secs_f64();
                let interval = want - 1.0;
                assert!(
                    got >= 1.0 + 0.75 * interval - 1e-9 && got <= 1.0 + 1.25 * interval + 1e-9,
                    "attempt {a}: {got}"
                );
                spread[a] = (spread[a].0.min(got), spread[a].1.max(got));
            }
        }
        assert_eq!(
            spread[0],
            (1.0, 1.0),
            "the first wait is kombu_reconnect_delay"
        );
        assert!(spread[5].1 - spread[5].0 > 2.0, "waits vary: {spread:?}");
        let last = delay(&o, 19).as_secs_f64();
        assert!(
            (23.5..=38.5).contains(&last),
            "capped at 30 s ±25% + 1 s: {last}"
        );
    }

    #[test]
    fn absurd_options_are_capped() {
        let o = RabbitOptions {
            kombu_reconnect_splay: 1e300,
            rabbit_interval_max: i64::MAX,
            rabbit_retry_backoff: i64::MAX,
            ..RabbitOptions::default()
        };
        assert_eq!(delay(&o, u32::MAX), Duration::from_secs(3600));
    }

    #[test]
    fn splay_adds_bounded_jitter() {
        let o = RabbitOptions {
            kombu_reconnect_splay: 0.5,
            ..RabbitOptions::default()
        };
        for _ in 0..100 {
            let d = delay(&o, 1).as_secs_f64();
            assert!((1.75..2.75).contains(&d), "{d}");
        }
    }
}
