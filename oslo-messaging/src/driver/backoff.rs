//! Reconnect delays (oslo's use of kombu's `ensure_connection` intervals).

use std::time::Duration;

use crate::config::RabbitOptions;

/// The longest wait between two reconnect attempts, whatever the options say.
const MAX_DELAY: f64 = 3600.0;

/// The wait before reconnect attempt `attempt` (0-based) after a connection was lost, as
/// Python's (kombu's `ensure`) waits were measured: `kombu_reconnect_delay` first, then that
/// delay plus an interval growing from `rabbit_retry_interval` by `rabbit_retry_backoff` up to
/// `rabbit_interval_max` (1, 2, 4, 6, 8 ... s with the defaults). `kombu_reconnect_splay` adds
/// a random `0..splay` (Python only adds it to the logged number). Capped at an hour.
pub(crate) fn delay(opts: &RabbitOptions, attempt: u32) -> Duration {
    let start = opts.rabbit_retry_interval.max(1) as f64;
    let step = opts.rabbit_retry_backoff.max(0) as f64;
    let max = opts.rabbit_interval_max.max(1) as f64;
    let interval = if attempt == 0 {
        0.0
    } else {
        (start + step * f64::from(attempt - 1)).min(max)
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
    fn grows_linearly_to_the_cap_plus_delay() {
        let o = RabbitOptions::default();
        let secs: Vec<f64> = (0..20).map(|a| delay(&o, a).as_secs_f64()).collect();
        assert_eq!(
            &secs[..6],
            &[1.0, 2.0, 4.0, 6.0, 8.0, 10.0],
            "Python's measured waits"
        );
        assert!((secs[19] - 31.0).abs() < 1e-9, "capped at 30 s + 1 s");
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
            assert!((2.0..2.5).contains(&d), "{d}");
        }
    }
}
