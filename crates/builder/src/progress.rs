//! Structured build events and the [`Reporter`] trait through which the builder reports them.
//!
//! The builder never prints. Everything a user sees about a build (which step runs, its output
//! lines, whether it was a cache hit, how long it took, warnings, the final summary) is an
//! [`Event`] handed to a caller-supplied [`Reporter`]. The CLI renders events as BuildKit does
//! (`plain`, `tty`, `quiet`, `json`); tests collect them to check ordering and overlap.
//!
//! Stages run in parallel, so a reporter is shared between threads (`Send + Sync`) and events
//! of different steps interleave; every event names its step.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Serialize, Serializer};

use crate::exec::{OutputSink, Stream};

/// Number of a step in the whole build, as BuildKit's `#N` (1-based, unique per build).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StepId(pub usize);

/// What a step is: where it sits in its stage and the instruction it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepInfo {
    /// The step's build-wide number.
    pub id: StepId,
    /// The stage's name (`AS name`), or its index as text when it has none.
    pub stage: String,
    /// 1-based position of the step in its stage (the `k` of `[stage k/n]`).
    pub index: usize,
    /// Number of steps in the stage (the `n` of `[stage k/n]`).
    pub total: usize,
    /// The instruction as written (after expansion where the builder expands it).
    pub instruction: String,
}

/// The final numbers of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildSummary {
    /// Image ID (`sha256:<hex>`) of the result, when the build produced one.
    pub image_id: Option<String>,
    /// Steps that were part of the build.
    pub steps: usize,
    /// Of those, steps answered from the cache.
    pub cached: usize,
    /// Warnings reported during the build.
    pub warnings: usize,
    /// How the cache answered the steps with a cache key (what `--explain` summarises).
    pub cache: CacheSummary,
    /// Wall-clock time of the whole build.
    #[serde(serialize_with = "seconds")]
    pub duration: Duration,
}

/// How the cache answered a build's steps with a cache key (RUN, COPY, ADD, WORKDIR; FROM
/// lines are not counted).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CacheSummary {
    /// Steps answered from the cache.
    pub cached: usize,
    /// Steps that ran.
    pub run: usize,
    /// The first step (in step order) that missed the cache, and why: every later step of
    /// its stage missed because of it, unless it says otherwise.
    pub first_miss: Option<CacheMissSummary>,
}

/// A step that missed the cache, for [`CacheSummary`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheMissSummary {
    /// The step.
    pub step: StepId,
    /// As progress shows it: `[build 2/5] RUN make`.
    pub label: String,
    /// Why it missed.
    pub reason: String,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// The build plan is known.
    BuildStarted {
        /// Stages that will be built (only those the target needs).
        stages: usize,
        /// Steps over all those stages.
        steps: usize,
    },
    /// A step began (its cache key is being computed or it is running).
    StepStarted(StepInfo),
    /// One line of a running step's output, without its line terminator. Lines longer than
    /// the executor's limit arrive in several pieces.
    Output {
        /// The step that printed it.
        step: StepId,
        /// Which stream it came from.
        stream: Stream,
        /// The raw bytes of the line.
        #[serde(serialize_with = "lossy")]
        line: Vec<u8>,
    },
    /// The step's result was found in the cache (a HIT); it will not run.
    Cached {
        /// The step.
        step: StepId,
        /// Its cache key (`sha256:<hex>`).
        key: String,
    },
    /// The step missed the cache and will run.
    CacheMiss {
        /// The step.
        step: StepId,
        /// Its cache key (`sha256:<hex>`).
        key: String,
        /// Why it missed, when an earlier build of the same step is known.
        reason: Option<String>,
    },
    /// The step finished successfully.
    StepDone {
        /// The step.
        step: StepId,
        /// Time from start to end.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// The step failed; the build stops.
    StepFailed {
        /// The step.
        step: StepId,
        /// What went wrong, e.g. `RUN false returned exit code 1`.
        message: String,
        /// Time from start to failure.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// Something worth telling that does not stop the build.
    Warning {
        /// The step it concerns, if any.
        step: Option<StepId>,
        /// The warning text.
        message: String,
    },
    /// An image named by `FROM` (or `--from`) is being pulled: it is missing from the store,
    /// or `--pull` asks to check its tag.
    PullStarted {
        /// The reference pulled.
        image: String,
    },
    /// A pull ended.
    PullDone {
        /// The reference pulled.
        image: String,
        /// The image ID it resolved to.
        id: String,
        /// Blobs downloaded (0: the store had everything, the tag had not moved).
        downloaded: usize,
        /// Bytes downloaded.
        bytes: u64,
        /// How long it took.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// A `--cache-from` was read (its manifest and config; layers come later, when needed).
    CacheImported {
        /// The cache's reference or folder.
        source: String,
        /// Whether a cache was there at all.
        found: bool,
        /// Records it offers.
        records: usize,
        /// How long reading took.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// A layer of a remote cache hit was fetched, because a step needs its files or the
    /// result image holds it.
    CacheLayerFetched {
        /// Where it came from.
        source: String,
        /// The blob's digest.
        digest: String,
        /// Its size.
        size: u64,
        /// How long the fetch took.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// The build's cache records were written to a `--cache-to`.
    CacheExported {
        /// The cache's reference or folder.
        target: String,
        /// Records written.
        records: usize,
        /// Layer blobs the cache names.
        layers: usize,
        /// Blobs sent (the rest were there already).
        sent: usize,
        /// Bytes sent.
        bytes: u64,
        /// How long the export took.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
    /// The build ended successfully.
    BuildFinished(BuildSummary),
    /// The build failed (after a [`Event::StepFailed`], or before any step ran, e.g. an
    /// unknown `--target`); nothing was tagged.
    BuildFailed {
        /// The error, as the user should read it.
        message: String,
        /// Wall-clock time until the failure.
        #[serde(serialize_with = "seconds")]
        duration: Duration,
    },
}

impl Event {
    /// The step this event concerns, if it concerns one.
    pub fn step(&self) -> Option<StepId> {
        match self {
            Event::StepStarted(info) => Some(info.id),
            Event::Output { step, .. }
            | Event::Cached { step, .. }
            | Event::CacheMiss { step, .. }
            | Event::StepDone { step, .. }
            | Event::StepFailed { step, .. } => Some(*step),
            Event::Warning { step, .. } => *step,
            Event::BuildStarted { .. }
            | Event::BuildFinished(_)
            | Event::BuildFailed { .. }
            | Event::PullStarted { .. }
            | Event::PullDone { .. }
            | Event::CacheImported { .. }
            | Event::CacheLayerFetched { .. }
            | Event::CacheExported { .. } => None,
        }
    }
}

/// Receives build events. Implemented by the CLI (rendering) and by tests (collecting).
///
/// Called from the threads that run the steps: implementations must be cheap and must not
/// block for long, or they slow the build down.
pub trait Reporter: Send + Sync {
    /// Handles one event.
    fn report(&self, event: &Event);
}

/// A reporter that drops every event, for callers that want no progress.
#[derive(Debug, Default, Clone, Copy)]
pub struct NullReporter;

impl Reporter for NullReporter {
    fn report(&self, _event: &Event) {}
}

/// A reporter that keeps every event in memory, in arrival order.
#[derive(Debug, Default)]
pub struct CollectingReporter {
    events: Mutex<Vec<Event>>,
}

impl CollectingReporter {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of the events received so far.
    pub fn events(&self) -> Vec<Event> {
        match self.events.lock() {
            Ok(events) => events.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

impl Reporter for CollectingReporter {
    fn report(&self, event: &Event) {
        match self.events.lock() {
            Ok(mut events) => events.push(event.clone()),
            Err(poisoned) => poisoned.into_inner().push(event.clone()),
        }
    }
}

/// Forwards a running step's output lines to a [`Reporter`] as [`Event::Output`].
pub struct StepOutput<'a> {
    reporter: &'a dyn Reporter,
    step: StepId,
}

impl<'a> StepOutput<'a> {
    /// Output of `step` goes to `reporter`.
    pub fn new(reporter: &'a dyn Reporter, step: StepId) -> Self {
        StepOutput { reporter, step }
    }
}

impl OutputSink for StepOutput<'_> {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        self.reporter.report(&Event::Output {
            step: self.step,
            stream,
            line: line.to_vec(),
        });
    }
}

fn seconds<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn lossy<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_tagged_json_lines() {
        let events = [
            Event::StepStarted(StepInfo {
                id: StepId(3),
                stage: "build".into(),
                index: 2,
                total: 5,
                instruction: "RUN make".into(),
            }),
            Event::Output {
                step: StepId(3),
                stream: Stream::Stderr,
                line: b"warning: \xff".to_vec(),
            },
            Event::StepDone {
                step: StepId(3),
                duration: Duration::from_millis(1500),
            },
            Event::BuildFailed {
                message: "RUN make returned exit code 2".into(),
                duration: Duration::from_millis(2250),
            },
        ];
        let lines: Vec<String> = events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap())
            .collect();
        assert_eq!(
            lines,
            [
                r#"{"event":"step_started","id":3,"stage":"build","index":2,"total":5,"instruction":"RUN make"}"#,
                r#"{"event":"output","step":3,"stream":"stderr","line":"warning: �"}"#,
                r#"{"event":"step_done","step":3,"duration":1.5}"#,
                r#"{"event":"build_failed","message":"RUN make returned exit code 2","duration":2.25}"#,
            ]
        );
    }

    #[test]
    fn step_output_forwards_lines_with_the_step() {
        let collector = CollectingReporter::new();
        let mut sink = StepOutput::new(&collector, StepId(7));
        sink.line(Stream::Stdout, b"hello");
        sink.line(Stream::Stderr, b"oops");
        let events = collector.events();
        assert_eq!(events.len(), 2);
        assert!(events.iter().all(|e| e.step() == Some(StepId(7))));
        assert_eq!(
            events[1],
            Event::Output {
                step: StepId(7),
                stream: Stream::Stderr,
                line: b"oops".to_vec()
            }
        );
    }
}
