//! `--progress=plain`: BuildKit's plain output, plus why each step missed the cache.
//!
//! ```text
//! #2 [base 2/3] RUN make
//! #2 cache miss: build arg VERSION changed from "1" to "2"
//! #2 0.412 cc -o app main.c
//! #2 DONE 1.2s
//!
//! #3 [base 3/3] RUN echo done
//! #3 CACHED
//! ```
//!
//! Steps of stages running in parallel interleave, but every line names its step.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use strata_builder::progress::{BuildSummary, Event, Reporter, StepId, StepInfo};
use strata_builder::StepOutcome;
use strata_store::human_size;

use super::{emit, Out};

/// The plain renderer.
pub struct Plain {
    out: Out,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: HashMap<StepId, Instant>,
    cached: HashSet<StepId>,
}

/// `sha256:` and the first 12 hex digits of a digest.
fn short_id(digest: &str) -> String {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    format!("sha256:{}", &hex[..hex.len().min(12)])
}

/// `[stage k/n]` with `k` padded to the width of `n`, as BuildKit aligns it.
pub fn step_label(info: &StepInfo) -> String {
    let width = info.total.to_string().len();
    let k = format!("{:>width$}/{}", info.index, info.total);
    if info.stage.is_empty() {
        format!("[{k}] {}", info.instruction)
    } else {
        format!("[{} {k}] {}", info.stage, info.instruction)
    }
}

/// `--explain`'s closing lines: steps cached and run, the first miss and its cause, then
/// the other misses (from `steps`, the build's outcomes) with theirs.
///
/// ```text
/// cache: 2 cached, 3 run; first miss: #4 [base 2/3] COPY app/ /app: file app/main.rs changed
///   #5 [base 3/3] RUN make: the previous step changed
/// ```
pub fn explain_lines(summary: &BuildSummary, steps: &[StepOutcome]) -> String {
    let c = &summary.cache;
    let mut s = format!("\ncache: {} cached, {} run", c.cached, c.run);
    if let Some(first) = &c.first_miss {
        s.push_str(&format!(
            "; first miss: #{} {}: {}",
            first.step.0, first.label, first.reason
        ));
    }
    s.push('\n');
    let first = c.first_miss.as_ref().map(|m| m.step);
    for step in steps.iter().filter(|o| !o.cached && Some(o.id) != first) {
        if let Some(reason) = &step.reason {
            s.push_str(&format!("  #{} {}: {reason}\n", step.id.0, step.label));
        }
    }
    s
}

impl Plain {
    /// A renderer writing to `out`.
    pub fn new(out: Out) -> Plain {
        Plain {
            out,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Reporter for Plain {
    fn report(&self, event: &Event) {
        let text = match event {
            Event::BuildStarted { .. } | Event::BuildFinished(_) | Event::BuildFailed { .. } => {
                return
            }
            Event::StepStarted(info) => {
                self.state().started.insert(info.id, Instant::now());
                format!("\n#{} {}\n", info.id.0, step_label(info))
            }
            Event::Cached { step, .. } => {
                self.state().cached.insert(*step);
                format!("#{} CACHED\n", step.0)
            }
            Event::CacheMiss {
                step,
                reason: Some(r),
                ..
            } => format!("#{} cache miss: {r}\n", step.0),
            Event::Output { step, line, .. } => {
                let since = self
                    .state()
                    .started
                    .get(step)
                    .map(|t| t.elapsed().as_secs_f64())
                    .unwrap_or(0.0);
                format!("#{} {since:.3} {}\n", step.0, String::from_utf8_lossy(line))
            }
            Event::StepDone { step, duration } => {
                if self.state().cached.contains(step) {
                    return;
                }
                format!("#{} DONE {:.1}s\n", step.0, duration.as_secs_f64())
            }
            Event::StepFailed {
                step,
                message,
                duration,
            } => format!(
                "#{} ERROR: {message}\n#{} FAILED {:.1}s\n",
                step.0,
                step.0,
                duration.as_secs_f64()
            ),
            Event::Warning {
                step: Some(step),
                message,
            } => format!("#{} WARN: {message}\n", step.0),
            Event::Warning {
                step: None,
                message,
            } => format!("WARN: {message}\n"),
            Event::PullStarted { image } => format!("pulling {image}\n"),
            Event::PullDone {
                image,
                id,
                downloaded: 0,
                ..
            } => format!("{image} is up to date ({})\n", short_id(id)),
            Event::PullDone {
                image,
                id,
                downloaded,
                bytes,
                duration,
            } => format!(
                "pulled {image} ({}): {downloaded} blob(s), {} in {:.1}s\n",
                short_id(id),
                human_size(*bytes),
                duration.as_secs_f64()
            ),
            Event::CacheImported {
                source,
                found: false,
                ..
            } => format!("importing cache from {source}: nothing there yet\n"),
            Event::CacheImported {
                source,
                records,
                duration,
                ..
            } => format!(
                "importing cache from {source}: {records} record(s) in {:.1}s\n",
                duration.as_secs_f64()
            ),
            Event::CacheLayerFetched {
                source,
                digest,
                size,
                duration,
            } => format!(
                "fetched layer {} ({}) from {source} in {:.1}s\n",
                short_id(digest),
                human_size(*size),
                duration.as_secs_f64()
            ),
            Event::CacheExported {
                target,
                records,
                layers,
                sent,
                bytes,
                duration,
            } => format!(
                "exported cache to {target}: {records} record(s), {layers} layer(s), {sent} sent ({}) in {:.1}s\n",
                human_size(*bytes),
                duration.as_secs_f64()
            ),
            _ => return,
        };
        emit(&self.out, &text);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_builder::exec::Stream;
    use strata_builder::progress::StepInfo;

    use super::super::testing::{buffer, text};
    use super::*;

    fn info(id: usize, stage: &str, k: usize, n: usize, instruction: &str) -> StepInfo {
        StepInfo {
            id: StepId(id),
            stage: stage.into(),
            index: k,
            total: n,
            instruction: instruction.into(),
        }
    }

    #[test]
    fn renders_buildkits_plain_format() {
        let (out, data) = buffer();
        let plain = Plain::new(out);
        let events = [
            Event::Warning {
                step: None,
                message: "FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)"
                    .into(),
            },
            Event::StepStarted(info(1, "", 1, 12, "FROM docker.io/library/busybox:latest")),
            Event::Cached {
                step: StepId(1),
                key: "sha256:x".into(),
            },
            Event::StepDone {
                step: StepId(1),
                duration: Duration::from_millis(1),
            },
            Event::StepStarted(info(2, "build", 10, 12, "RUN make")),
            Event::CacheMiss {
                step: StepId(2),
                key: "sha256:y".into(),
                reason: Some("build arg V changed from \"1\" to \"2\"".into()),
            },
            Event::Output {
                step: StepId(2),
                stream: Stream::Stdout,
                line: b"cc -o app".to_vec(),
            },
            Event::StepDone {
                step: StepId(2),
                duration: Duration::from_millis(1250),
            },
            Event::StepStarted(info(3, "build", 11, 12, "RUN false")),
            Event::StepFailed {
                step: StepId(3),
                message: "RUN false returned exit code 1".into(),
                duration: Duration::from_millis(40),
            },
        ];
        for e in &events {
            plain.report(e);
        }
        let got = text(&data);
        let got = regex_lite_replace(&got);
        insta::assert_snapshot!(got, @r###"
        WARN: FromAsCasing: 'as' and 'FROM' keywords' casing do not match (line 1)

        #1 [ 1/12] FROM docker.io/library/busybox:latest
        #1 CACHED

        #2 [build 10/12] RUN make
        #2 cache miss: build arg V changed from "1" to "2"
        #2 [T] cc -o app
        #2 DONE 1.2s

        #3 [build 11/12] RUN false
        #3 ERROR: RUN false returned exit code 1
        #3 FAILED 0.0s
        "###);
    }

    #[test]
    fn explain_names_the_first_miss_then_the_others() {
        use strata_builder::progress::{CacheMissSummary, CacheSummary};
        let outcome = |id: usize, label: &str, cached: bool, reason: Option<&str>| StepOutcome {
            id: StepId(id),
            label: label.into(),
            cached,
            reason: reason.map(str::to_string),
        };
        let steps = [
            outcome(
                1,
                "[base 1/3] FROM docker.io/library/busybox:latest",
                true,
                None,
            ),
            outcome(2, "[base 2/3] WORKDIR /app", true, None),
            outcome(
                3,
                "[base 3/3] COPY app/ /app",
                false,
                Some("file app/main.rs changed"),
            ),
            outcome(
                4,
                "[2/2] RUN make",
                false,
                Some("the previous step changed"),
            ),
        ];
        let mut summary = BuildSummary {
            image_id: None,
            steps: 4,
            cached: 2,
            warnings: 0,
            cache: CacheSummary {
                cached: 1,
                run: 2,
                first_miss: Some(CacheMissSummary {
                    step: StepId(3),
                    label: "[base 3/3] COPY app/ /app".into(),
                    reason: "file app/main.rs changed".into(),
                }),
            },
            duration: Duration::from_secs(1),
        };
        insta::assert_snapshot!(explain_lines(&summary, &steps), @r###"

        cache: 1 cached, 2 run; first miss: #3 [base 3/3] COPY app/ /app: file app/main.rs changed
          #4 [2/2] RUN make: the previous step changed
        "###);
        summary.cache = CacheSummary {
            cached: 3,
            run: 0,
            first_miss: None,
        };
        assert_eq!(
            explain_lines(&summary, &steps[..2]),
            "\ncache: 3 cached, 0 run\n"
        );
    }

    #[test]
    fn renders_pulls_and_the_shared_cache() {
        let (out, data) = buffer();
        let plain = Plain::new(out);
        let id = format!("sha256:{}", "ab".repeat(32));
        let events = [
            Event::PullStarted {
                image: "127.0.0.1:5000/base:1".into(),
            },
            Event::PullDone {
                image: "127.0.0.1:5000/base:1".into(),
                id: id.clone(),
                downloaded: 2,
                bytes: 1_500_000,
                duration: Duration::from_millis(300),
            },
            Event::PullDone {
                image: "127.0.0.1:5000/base:1".into(),
                id: id.clone(),
                downloaded: 0,
                bytes: 0,
                duration: Duration::from_millis(5),
            },
            Event::CacheImported {
                source: "127.0.0.1:5000/app:cache".into(),
                found: true,
                records: 7,
                duration: Duration::from_millis(40),
            },
            Event::CacheImported {
                source: "/var/cache/app".into(),
                found: false,
                records: 0,
                duration: Duration::from_millis(1),
            },
            Event::CacheLayerFetched {
                source: "127.0.0.1:5000/app:cache".into(),
                digest: id.clone(),
                size: 2048,
                duration: Duration::from_millis(20),
            },
            Event::CacheExported {
                target: "127.0.0.1:5000/app:cache".into(),
                records: 7,
                layers: 5,
                sent: 2,
                bytes: 3_000_000,
                duration: Duration::from_millis(900),
            },
        ];
        for e in &events {
            plain.report(e);
        }
        insta::assert_snapshot!(text(&data), @r###"
        pulling 127.0.0.1:5000/base:1
        pulled 127.0.0.1:5000/base:1 (sha256:abababababab): 2 blob(s), 1.5MB in 0.3s
        127.0.0.1:5000/base:1 is up to date (sha256:abababababab)
        importing cache from 127.0.0.1:5000/app:cache: 7 record(s) in 0.0s
        importing cache from /var/cache/app: nothing there yet
        fetched layer sha256:abababababab (2.048kB) from 127.0.0.1:5000/app:cache in 0.0s
        exported cache to 127.0.0.1:5000/app:cache: 7 record(s), 5 layer(s), 2 sent (3MB) in 0.9s
        "###);
    }

    /// Output lines carry the seconds since their step started: mask them.
    fn regex_lite_replace(text: &str) -> String {
        text.lines()
            .map(|l| {
                let mut parts = l.splitn(3, ' ');
                match (parts.next(), parts.next(), parts.next()) {
                    (Some(id), Some(t), Some(rest))
                        if id.starts_with('#') && t.contains('.') && t.parse::<f64>().is_ok() =>
                    {
                        format!("{id} [T] {rest}")
                    }
                    _ => l.to_string(),
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}
