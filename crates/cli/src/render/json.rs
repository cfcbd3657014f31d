//! `--progress=json`: every build event as one line of JSON (the builder's own
//! serialisation: `{"event":"step_started","id":2,...}`), for tools and CI logs.

use strata_builder::progress::{Event, Reporter};

use super::{emit, Out};

/// The JSON-lines renderer.
pub struct Json {
    out: Out,
}

impl Json {
    /// A renderer writing to `out`.
    pub fn new(out: Out) -> Json {
        Json { out }
    }
}

impl Reporter for Json {
    fn report(&self, event: &Event) {
        if let Ok(mut line) = serde_json::to_string(event) {
            line.push('\n');
            emit(&self.out, &line);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use strata_builder::progress::StepId;

    use super::super::testing::{buffer, text};
    use super::*;

    #[test]
    fn one_event_per_line() {
        let (out, data) = buffer();
        let json = Json::new(out);
        json.report(&Event::Cached {
            step: StepId(2),
            key: "sha256:ab".into(),
        });
        json.report(&Event::StepDone {
            step: StepId(2),
            duration: Duration::from_millis(500),
        });
        assert_eq!(
            text(&data),
            "{\"event\":\"cached\",\"step\":2,\"key\":\"sha256:ab\"}\n{\"event\":\"step_done\",\"step\":2,\"duration\":0.5}\n"
        );
    }

    #[test]
    fn the_finished_event_carries_the_explain_summary() {
        use strata_builder::progress::{BuildSummary, CacheMissSummary, CacheSummary};
        let (out, data) = buffer();
        Json::new(out).report(&Event::BuildFinished(BuildSummary {
            image_id: None,
            steps: 3,
            cached: 1,
            warnings: 0,
            cache: CacheSummary {
                cached: 1,
                run: 1,
                first_miss: Some(CacheMissSummary {
                    step: StepId(3),
                    label: "[2/2] RUN make".into(),
                    reason: "the previous step changed".into(),
                }),
            },
            duration: Duration::from_secs(2),
        }));
        let v: serde_json::Value = serde_json::from_str(text(&data).trim()).unwrap();
        assert_eq!(v["event"], "build_finished");
        assert_eq!(v["cache"]["cached"], 1);
        assert_eq!(v["cache"]["run"], 1);
        assert_eq!(v["cache"]["first_miss"]["step"], 3);
        assert_eq!(
            v["cache"]["first_miss"]["reason"],
            "the previous step changed"
        );
    }
}
