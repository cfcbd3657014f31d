//! Progress bars for long byte streams (`load`, `save`), drawn on standard error.
//!
//! Callers create a bar only when standard error is a terminal; indicatif redraws it in place
//! at most ~20 times a second and `finish_and_clear` leaves no trace of it. The template
//! carries no colour, so `NO_COLOR` has nothing to switch off.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar counting bytes towards `total`, or a spinner counting bytes when the total is not
/// known, labelled with `what` (e.g. `Reading`).
pub fn bytes_bar(what: &str, total: Option<u64>) -> ProgressBar {
    let (bar, template) = match total {
        Some(total) => (
            ProgressBar::new(total),
            "{prefix} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        ),
        None => (
            ProgressBar::no_length(),
            "{prefix} {spinner} {bytes} {bytes_per_sec} {elapsed}",
        ),
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(style);
    bar.set_prefix(what.to_string());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
