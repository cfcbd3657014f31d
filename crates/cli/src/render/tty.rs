//! `--progress=tty`: a live view of the build, redrawn in place, like BuildKit's tty mode.
//!
//! ```text
//! [+] Building 2.4s (5/9)
//!  => CACHED [1/3] FROM docker.io/library/busybox:latest                  0.0s
//!  => [a 2/3] RUN make                                                     1.9s
//!  => => # cc -c main.c
//!  => => # cc -o app main.o
//!  => [b 2/3] RUN ./configure                                              1.2s
//! ```
//!
//! Running steps show a live timer and their last few output lines; finished steps collapse to
//! one line with their duration. When the view is taller than the terminal, the oldest
//! finished steps leave the view first, then running steps show fewer output lines. At the end
//! the view is drawn one last time with every step on one line (a failed step keeps its last
//! output lines) and the cursor is left below it, so whatever follows prints cleanly.
//!
//! Drawing: a background thread redraws about ten times a second. Each frame moves the cursor
//! up over the previous frame (`ESC [ n A`), rewrites every line followed by "erase to end of
//! line" (`ESC [ K`), and erases whatever an older, taller frame left below (`ESC [ J`). Lines
//! are cut to the terminal's width minus one column so that none wraps (a wrapped line would
//! throw the line count off). Step output is stripped of control characters. Colours follow
//! `NO_COLOR`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anstyle::{AnsiColor, Style};
use strata_builder::progress::{Event, Reporter, StepId};

use super::plain::step_label;
use super::{emit, Out};

/// How often the view is redrawn.
const TICK: Duration = Duration::from_millis(100);
/// Output lines kept (and shown) per running step.
const LOG_LINES: usize = 6;

/// The size of the terminal the view is drawn on: `(columns, rows)`.
pub type SizeFn = Box<dyn Fn() -> (usize, usize) + Send + Sync>;

/// The size of the terminal on standard error, 80x24 when it cannot be read.
pub fn stderr_size() -> (usize, usize) {
    match rustix::termios::tcgetwinsize(std::io::stderr()) {
        Ok(w) if w.ws_col > 0 && w.ws_row > 0 => (usize::from(w.ws_col), usize::from(w.ws_row)),
        _ => (80, 24),
    }
}

/// The live renderer.
pub struct Tty {
    inner: Arc<Inner>,
    ticker: Mutex<Option<JoinHandle<()>>>,
}

struct Inner {
    out: Out,
    size: SizeFn,
    color: bool,
    state: Mutex<State>,
    wake: Condvar,
}

/// Where a step is.
#[derive(Debug, Clone, PartialEq)]
enum Status {
    Running,
    Cached,
    Done(Duration),
    Failed(Duration),
}

#[derive(Debug)]
struct Step {
    label: String,
    started: Instant,
    status: Status,
    logs: VecDeque<String>,
}

/// Everything the view shows, updated by events and read by frames.
#[derive(Debug)]
struct State {
    started: Instant,
    total: usize,
    order: Vec<StepId>,
    steps: HashMap<StepId, Step>,
    warnings: Vec<String>,
    /// `Some(ok)` once the build ended.
    outcome: Option<Outcome>,
    /// Lines of the frame currently on screen (the cursor is on the line below it).
    drawn: usize,
    /// The final frame was drawn: nothing more is drawn.
    closed: bool,
}

#[derive(Debug, Clone)]
enum Outcome {
    Finished {
        image_id: Option<String>,
        duration: Duration,
    },
    Failed {
        duration: Duration,
    },
}

impl State {
    fn new(now: Instant) -> State {
        State {
            started: now,
            total: 0,
            order: Vec::new(),
            steps: HashMap::new(),
            warnings: Vec::new(),
            outcome: None,
            drawn: 0,
            closed: false,
        }
    }

    /// Takes one event into the state, `now` being when it arrived.
    fn apply(&mut self, event: &Event, now: Instant) {
        match event {
            Event::BuildStarted { steps, .. } => self.total = *steps,
            Event::StepStarted(info) => {
                if !self.steps.contains_key(&info.id) {
                    self.order.push(info.id);
                }
                self.steps.insert(
                    info.id,
                    Step {
                        label: step_label(info),
                        started: now,
                        status: Status::Running,
                        logs: VecDeque::new(),
                    },
                );
            }
            Event::Cached { step, .. } => {
                if let Some(s) = self.steps.get_mut(step) {
                    s.status = Status::Cached;
                }
            }
            Event::Output { step, line, .. } => {
                if let Some(s) = self.steps.get_mut(step) {
                    if s.logs.len() == LOG_LINES {
                        s.logs.pop_front();
                    }
                    s.logs.push_back(clean(&String::from_utf8_lossy(line)));
                }
            }
            Event::StepDone { step, duration } => {
                if let Some(s) = self.steps.get_mut(step) {
                    if s.status != Status::Cached {
                        s.status = Status::Done(*duration);
                    }
                }
            }
            Event::StepFailed {
                step,
                message,
                duration,
            } => {
                if let Some(s) = self.steps.get_mut(step) {
                    s.status = Status::Failed(*duration);
                    if s.logs.len() == LOG_LINES {
                        s.logs.pop_front();
                    }
                    s.logs.push_back(clean(&format!("ERROR: {message}")));
                }
            }
            Event::Warning { step, message } => {
                let text = match step {
                    Some(id) => format!("#{} {}", id.0, clean(message)),
                    None => clean(message),
                };
                self.warnings.push(text);
            }
            Event::BuildFinished(summary) => {
                self.outcome = Some(Outcome::Finished {
                    image_id: summary.image_id.clone(),
                    duration: summary.duration,
                });
            }
            Event::BuildFailed { duration, .. } => {
                self.outcome = Some(Outcome::Failed {
                    duration: *duration,
                });
            }
            _ => {}
        }
    }

    fn finished_steps(&self) -> usize {
        self.steps
            .values()
            .filter(|s| s.status != Status::Running)
            .count()
    }
}

/// One line of a frame: its text (already cut to width) and how to paint it.
#[derive(Debug, Clone, PartialEq)]
struct Line {
    text: String,
    paint: Paint,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Paint {
    Plain,
    Done,
    Log,
    Error,
    Warn,
}

/// Cut `text` to at most `width` characters.
fn cut(text: &str, width: usize) -> String {
    text.chars().take(width).collect()
}

/// `left` and a right-aligned `right` in `width` columns; `left` is cut (with `…`) to make room.
fn justify(left: &str, right: &str, width: usize) -> String {
    let rlen = right.chars().count();
    if width <= rlen + 1 {
        return cut(left, width);
    }
    let room = width - rlen - 1;
    let llen = left.chars().count();
    let left = if llen > room {
        let mut s = cut(left, room.saturating_sub(1));
        s.push('…');
        s
    } else {
        left.to_string()
    };
    let pad = width - left.chars().count() - rlen;
    format!("{left}{}{right}", " ".repeat(pad))
}

/// Output text made safe to draw: tabs become spaces, a carriage return keeps what follows it
/// (as a terminal would show a progress line), other control characters and escape
/// sequences go.
fn clean(text: &str) -> String {
    let text = text.rsplit('\r').find(|p| !p.is_empty()).unwrap_or("");
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\t' => out.push_str("    "),
            '\x1b' => match chars.next() {
                // CSI: ESC [ parameters, then a final byte in @..~.
                Some('[') => {
                    for f in chars.by_ref() {
                        if ('@'..='~').contains(&f) {
                            break;
                        }
                    }
                }
                // OSC (titles, links): ESC ] ... up to BEL or ESC \.
                Some(']') => {
                    while let Some(f) = chars.next() {
                        if f == '\x07' || (f == '\x1b' && chars.next_if_eq(&'\\').is_some()) {
                            break;
                        }
                    }
                }
                // Other escapes are two characters long.
                _ => {}
            },
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// The frame for `state` at `now` on a `width` x `height` terminal. A live frame fits in
/// `height - 1` lines (the cursor's line stays free); the final frame shows every step.
fn frame(state: &State, now: Instant, width: usize, height: usize) -> Vec<Line> {
    let width = width.saturating_sub(1).max(10);
    let done = state.outcome.is_some();
    let elapsed = match &state.outcome {
        Some(Outcome::Finished { duration, .. }) | Some(Outcome::Failed { duration }) => *duration,
        None => now.saturating_duration_since(state.started),
    };
    let total = state.total.max(state.order.len());
    let header = match &state.outcome {
        None => format!(
            "[+] Building {} ({}/{total})",
            secs(elapsed),
            state.finished_steps()
        ),
        Some(Outcome::Finished { .. }) => format!(
            "[+] Building {} ({}/{total}) FINISHED",
            secs(elapsed),
            state.finished_steps()
        ),
        Some(Outcome::Failed { .. }) => format!(
            "[+] Building {} ({}/{total}) FAILED",
            secs(elapsed),
            state.finished_steps()
        ),
    };

    // Blocks: one per step, a head line and the output lines shown under it.
    let mut blocks: Vec<(bool, Line, Vec<Line>)> = Vec::new();
    for id in &state.order {
        let Some(step) = state.steps.get(id) else {
            continue;
        };
        let (prefix, time, paint) = match &step.status {
            Status::Running => (
                " => ",
                now.saturating_duration_since(step.started),
                Paint::Plain,
            ),
            Status::Cached => (" => CACHED ", Duration::ZERO, Paint::Done),
            Status::Done(d) => (" => ", *d, Paint::Done),
            Status::Failed(d) => (" => ERROR ", *d, Paint::Error),
        };
        let head = Line {
            text: justify(&format!("{prefix}{}", step.label), &secs(time), width),
            paint,
        };
        let show_logs = match step.status {
            Status::Running => !done,
            Status::Failed(_) => true,
            _ => false,
        };
        let logs = if show_logs {
            step.logs
                .iter()
                .map(|l| Line {
                    text: cut(&format!(" => => # {l}"), width),
                    paint: if matches!(step.status, Status::Failed(_)) {
                        Paint::Error
                    } else {
                        Paint::Log
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        let running = step.status == Status::Running && !done;
        blocks.push((running, head, logs));
    }

    let mut lines = vec![Line {
        text: cut(&header, width),
        paint: Paint::Plain,
    }];
    if done {
        for (_, head, logs) in blocks {
            lines.push(head);
            lines.extend(logs);
        }
        if let Some(Outcome::Finished {
            image_id: Some(id), ..
        }) = &state.outcome
        {
            lines.push(Line {
                text: justify(&format!(" => writing image {id}"), "done", width),
                paint: Paint::Done,
            });
        }
        for w in &state.warnings {
            lines.push(Line {
                text: cut(&format!("WARN: {w}"), width),
                paint: Paint::Warn,
            });
        }
        return lines;
    }

    // A live frame must fit: header + blocks <= height - 1.
    let budget = height.saturating_sub(2).max(1);
    let running: usize = blocks.iter().filter(|b| b.0).count();
    // Output lines per running step, as many as fit after one head line per running step.
    let mut per_step = LOG_LINES;
    while per_step > 0 && running * (1 + per_step) > budget {
        per_step -= 1;
    }
    let mut keep = vec![false; blocks.len()];
    let mut used = 0;
    // Running steps first (newest last), then finished ones from the newest back.
    for (i, b) in blocks.iter().enumerate().rev() {
        if b.0 {
            let need = 1 + b.2.len().min(per_step);
            if used + need <= budget {
                keep[i] = true;
                used += need;
            }
        }
    }
    for (i, b) in blocks.iter().enumerate().rev() {
        if !b.0 && used < budget {
            let need = 1 + b.2.len();
            if used + need <= budget {
                keep[i] = true;
                used += need;
            }
        }
    }
    for (i, (running, head, logs)) in blocks.into_iter().enumerate() {
        if !keep[i] {
            continue;
        }
        lines.push(head);
        let n = if running { per_step } else { logs.len() };
        let skip = logs.len().saturating_sub(n);
        lines.extend(logs.into_iter().skip(skip));
    }
    lines
}

fn style(paint: Paint) -> Style {
    match paint {
        Paint::Plain => Style::new(),
        Paint::Done => Style::new().fg_color(Some(AnsiColor::Blue.into())),
        Paint::Log => Style::new().dimmed(),
        Paint::Error => Style::new().fg_color(Some(AnsiColor::Red.into())),
        Paint::Warn => Style::new().fg_color(Some(AnsiColor::Yellow.into())),
    }
}

/// The bytes that replace the `previous` lines on screen with `lines`.
fn paint_frame(lines: &[Line], previous: usize, color: bool) -> String {
    let mut s = String::new();
    if previous > 0 {
        s.push_str(&format!("\x1b[{previous}A"));
    }
    s.push('\r');
    for l in lines {
        if color && l.paint != Paint::Plain {
            let st = style(l.paint);
            s.push_str(&format!("{st}{}{st:#}", l.text));
        } else {
            s.push_str(&l.text);
        }
        s.push_str("\x1b[K\n");
    }
    s.push_str("\x1b[J");
    s
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Draws the current frame (the final one once the build ended), under the state lock.
    fn draw(&self, state: &mut State) {
        if state.closed {
            return;
        }
        let (width, height) = (self.size)();
        let lines = frame(state, Instant::now(), width, height);
        emit(&self.out, &paint_frame(&lines, state.drawn, self.color));
        state.drawn = lines.len();
        if state.outcome.is_some() {
            state.closed = true;
        }
    }
}

impl Tty {
    /// A live renderer writing to `out` (a terminal of size `size()`), colouring when `color`.
    pub fn new(out: Out, size: SizeFn, color: bool) -> Tty {
        let inner = Arc::new(Inner {
            out,
            size,
            color,
            state: Mutex::new(State::new(Instant::now())),
            wake: Condvar::new(),
        });
        let ticker = {
            let inner = inner.clone();
            std::thread::Builder::new()
                .name("strata-progress".into())
                .spawn(move || {
                    let mut state = inner.lock();
                    while !state.closed {
                        inner.draw(&mut state);
                        state = inner
                            .wake
                            .wait_timeout(state, TICK)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                })
                .ok()
        };
        Tty {
            inner,
            ticker: Mutex::new(ticker),
        }
    }

    /// Draws the final frame (if the build did not end with an event) and stops redrawing.
    fn close(&self) {
        {
            let mut state = self.inner.lock();
            if !state.closed {
                if state.outcome.is_none() {
                    let duration = state.started.elapsed();
                    state.outcome = Some(Outcome::Failed { duration });
                }
                self.inner.draw(&mut state);
            }
        }
        self.inner.wake.notify_all();
        let handle = self.ticker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

impl Reporter for Tty {
    fn report(&self, event: &Event) {
        let mut state = self.inner.lock();
        state.apply(event, Instant::now());
        if state.outcome.is_some() {
            // The final frame is drawn right away, so anything printed next comes below it.
            self.inner.draw(&mut state);
            drop(state);
            self.inner.wake.notify_all();
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use strata_builder::exec::Stream;
    use strata_builder::progress::{BuildSummary, StepInfo};

    use super::*;

    fn started(id: usize, stage: &str, k: usize, n: usize, instruction: &str) -> Event {
        Event::StepStarted(StepInfo {
            id: StepId(id),
            stage: stage.into(),
            index: k,
            total: n,
            instruction: instruction.into(),
        })
    }

    fn output(id: usize, line: &str) -> Event {
        Event::Output {
            step: StepId(id),
            stream: Stream::Stdout,
            line: line.as_bytes().to_vec(),
        }
    }

    fn done(id: usize, ms: u64) -> Event {
        Event::StepDone {
            step: StepId(id),
            duration: Duration::from_millis(ms),
        }
    }

    fn text(lines: &[Line]) -> String {
        lines
            .iter()
            .map(|l| format!("{}|\n", l.text))
            .collect::<String>()
    }

    /// A build of two parallel stages, taken to the point where both RUN steps print.
    fn running_build() -> (State, Instant) {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = State::new(t0);
        let events = [
            (
                0,
                Event::BuildStarted {
                    stages: 2,
                    steps: 5,
                },
            ),
            (
                10,
                started(1, "", 1, 1, "FROM docker.io/library/busybox:latest"),
            ),
            (
                12,
                Event::Cached {
                    step: StepId(1),
                    key: "k".into(),
                },
            ),
            (12, done(1, 2)),
            (
                20,
                started(2, "a", 2, 2, "RUN for i in 1 2 3; do echo a$i; done"),
            ),
            (25, started(3, "b", 2, 2, "RUN ./configure --prefix=/usr")),
            (100, output(2, "a1")),
            (200, output(2, "a2\tx")),
            (
                300,
                output(3, "\x1b[1mchecking\x1b[0m for cc... 10%\r20%\rcc"),
            ),
        ];
        for (ms, e) in events {
            s.apply(&e, at(ms));
        }
        (s, at(1500))
    }

    #[test]
    fn a_live_frame_shows_running_steps_with_timers_and_their_last_lines() {
        let (s, now) = running_build();
        insta::assert_snapshot!(text(&frame(&s, now, 62, 20)), @r###"
        [+] Building 1.5s (1/5)|
         => CACHED [1/1] FROM docker.io/library/busybox:latest   0.0s|
         => [a 2/2] RUN for i in 1 2 3; do echo a$i; done        1.5s|
         => => # a1|
         => => # a2    x|
         => [b 2/2] RUN ./configure --prefix=/usr                1.5s|
         => => # cc|
        "###);
    }

    #[test]
    fn the_final_frame_collapses_every_step_to_one_line() {
        let (mut s, now) = running_build();
        s.apply(&done(2, 1200), now);
        s.apply(&done(3, 1400), now);
        s.apply(
            &Event::Warning {
                step: None,
                message: "JSONArgsRecommended: use JSON".into(),
            },
            now,
        );
        s.apply(
            &Event::BuildFinished(BuildSummary {
                cache: Default::default(),
                image_id: Some("sha256:0123456789ab".into()),
                steps: 3,
                cached: 1,
                warnings: 1,
                duration: Duration::from_millis(1520),
            }),
            now,
        );
        insta::assert_snapshot!(text(&frame(&s, now, 62, 5)), @r###"
        [+] Building 1.5s (3/5) FINISHED|
         => CACHED [1/1] FROM docker.io/library/busybox:latest   0.0s|
         => [a 2/2] RUN for i in 1 2 3; do echo a$i; done        1.2s|
         => [b 2/2] RUN ./configure --prefix=/usr                1.4s|
         => writing image sha256:0123456789ab                    done|
        WARN: JSONArgsRecommended: use JSON|
        "###);
    }

    #[test]
    fn a_failed_step_keeps_its_last_lines_and_the_error() {
        let (mut s, now) = running_build();
        s.apply(
            &Event::StepFailed {
                step: StepId(3),
                message: "RUN ./configure returned exit code 1".into(),
                duration: Duration::from_millis(1400),
            },
            now,
        );
        s.apply(
            &Event::BuildFailed {
                message: "x".into(),
                duration: Duration::from_millis(1600),
            },
            now,
        );
        insta::assert_snapshot!(text(&frame(&s, now, 62, 5)), @r###"
        [+] Building 1.6s (2/5) FAILED|
         => CACHED [1/1] FROM docker.io/library/busybox:latest   0.0s|
         => [a 2/2] RUN for i in 1 2 3; do echo a$i; done        1.5s|
         => ERROR [b 2/2] RUN ./configure --prefix=/usr          1.4s|
         => => # cc|
         => => # ERROR: RUN ./configure returned exit code 1|
        "###);
    }

    #[test]
    fn a_short_terminal_drops_finished_steps_then_output_lines() {
        let (s, now) = running_build();
        // 6 rows: header + 4 lines (one row stays free for the cursor).
        let lines = frame(&s, now, 62, 6);
        insta::assert_snapshot!(text(&lines), @r###"
        [+] Building 1.5s (1/5)|
         => [a 2/2] RUN for i in 1 2 3; do echo a$i; done        1.5s|
         => => # a2    x|
         => [b 2/2] RUN ./configure --prefix=/usr                1.5s|
         => => # cc|
        "###);
        for rows in 2..30 {
            assert!(frame(&s, now, 61, rows).len() < rows.max(3), "{rows} rows");
        }
    }

    #[test]
    fn lines_never_reach_the_last_column() {
        let (s, now) = running_build();
        for width in [1, 10, 20, 40, 61, 200] {
            for l in frame(&s, now, width, 30) {
                assert!(l.text.chars().count() < width.max(11), "{width}: {l:?}");
            }
        }
        let l = &frame(&s, now, 40, 30)[2];
        assert_eq!(l.text, " => [a 2/2] RUN for i in 1 2 3; d… 1.5s");
    }

    #[test]
    fn frames_replace_the_previous_one_in_place() {
        let lines = vec![
            Line {
                text: "[+] Building".into(),
                paint: Paint::Plain,
            },
            Line {
                text: " => x".into(),
                paint: Paint::Done,
            },
        ];
        assert_eq!(
            paint_frame(&lines, 0, false),
            "\r[+] Building\x1b[K\n => x\x1b[K\n\x1b[J"
        );
        assert_eq!(
            paint_frame(&lines, 3, true),
            "\x1b[3A\r[+] Building\x1b[K\n\x1b[34m => x\x1b[0m\x1b[K\n\x1b[J"
        );
    }

    #[test]
    fn output_is_cleaned_of_control_characters() {
        assert_eq!(clean("a\x1b[31mred\x1b[0m\tb\x07"), "ared    b");
        assert_eq!(clean("10%\r50%\r"), "50%");
        assert_eq!(clean("\x1b]0;title\x07x\x1b]8;;u\x1b\\y"), "xy");
    }

    #[test]
    fn the_renderer_draws_and_ends_with_the_final_frame() {
        let (out, data) = super::super::testing::buffer();
        let tty = Tty::new(out, Box::new(|| (60, 20)), false);
        tty.report(&Event::BuildStarted {
            stages: 1,
            steps: 1,
        });
        tty.report(&started(1, "", 1, 1, "RUN echo hi"));
        tty.report(&output(1, "hi"));
        std::thread::sleep(TICK * 3);
        tty.report(&done(1, 5));
        tty.report(&Event::BuildFinished(BuildSummary {
            cache: Default::default(),
            image_id: None,
            steps: 1,
            cached: 0,
            warnings: 0,
            duration: Duration::from_millis(5),
        }));
        drop(tty);
        let got = super::super::testing::text(&data);
        assert!(
            got.contains(" => => # hi"),
            "live frames show output: {got:?}"
        );
        let last = got.rsplit("\x1b[J").nth(1).unwrap();
        let last = last.rsplit('\r').next().unwrap();
        assert!(last.starts_with("[+] Building 0.0s (1/1) FINISHED\x1b[K\n => [1/1] RUN echo hi"));
        assert!(
            !last.contains("# hi"),
            "the final frame has no output lines"
        );
        assert!(
            got.ends_with("\x1b[J"),
            "nothing drawn after the final frame"
        );
    }
}
