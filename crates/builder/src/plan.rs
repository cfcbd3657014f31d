//! The build plan: which stages the target needs, in which order, with which base, and how
//! many layers each would stack. Everything here is decided before anything runs.
//!
//! - Every `FROM` is resolved: `scratch`, an earlier stage (by name), or an image (the
//!   caller's resolver finds it in the store or pulls it; a missing image is an error that
//!   says how to get one).
//! - Dependencies: a stage depends on its base stage and on every stage named by
//!   `COPY --from` or `RUN --mount=...,from=` (a stage name, a stage index, or else an image).
//!   `--from` values are expanded with the global scope (the ARGs before the first FROM and
//!   the build args), as BuildKit does when it builds its graph.
//! - Only the stages reachable from the target are planned (BuildKit's `allReachableStages`);
//!   their order is topological, ties broken by position in the file, and step numbers
//!   (`#N`) are given in that order.
//! - ONBUILD triggers of a base run right after FROM and are part of the stage's steps.
//! - Layer count: base layers + ONBUILD triggers that make layers + RUN/COPY/ADD; above 128
//!   the build is refused before anything runs, naming the stage and the lines to merge.

use std::collections::{BTreeMap, BTreeSet};

use strata_parser::lint::MAX_LAYERS;
use strata_parser::shell::{expand_word, Env};
use strata_parser::{Dockerfile, Instruction, InstructionKind, MountType};
use strata_store::Image;

use crate::imageconfig::onbuild_triggers;
use crate::platform::Platform;
use crate::progress::StepId;
use crate::Error;

/// What a stage starts from.
#[derive(Debug, Clone)]
pub enum Base {
    /// An empty filesystem and config.
    Scratch,
    /// An image from the store.
    Image {
        /// The name as written in FROM (after expansion).
        name: String,
        /// The image.
        image: Box<Image>,
    },
    /// An earlier stage of the same Dockerfile.
    Stage(usize),
}

/// Where a `COPY --from` or `RUN --mount from=` takes its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromRef {
    /// A stage of this Dockerfile, by index.
    Stage(usize),
    /// An image from the store, by the name written (after expansion).
    Image(String),
}

/// One stage as it will be built.
#[derive(Debug, Clone)]
pub struct StagePlan {
    /// Its position in the Dockerfile.
    pub index: usize,
    /// Its label in progress lines: the stage's name, `stage-N` when it has none, or empty
    /// when the Dockerfile has a single stage (BuildKit's `[name k/n]`).
    pub label: String,
    /// How errors name it: its name, or its index.
    pub display: String,
    /// The FROM line's base after expansion.
    pub from_text: String,
    /// The base.
    pub base: Base,
    /// Stages that must be built before this one starts.
    pub deps: BTreeSet<usize>,
    /// What the stage runs after FROM: the base's ONBUILD triggers, then its instructions.
    pub instructions: Vec<Instruction>,
    /// How many of `instructions` are ONBUILD triggers (they come first).
    pub triggers: usize,
    /// The step number of the FROM line.
    pub from_step: StepId,
    /// The step number of each instruction that is a step (RUN, COPY, ADD, WORKDIR).
    pub step_ids: Vec<Option<StepId>>,
    /// Steps in the stage, FROM included (the `n` of `[stage k/n]`).
    pub total: usize,
    /// Filesystem layers the stage may stack (base + RUN/COPY/ADD).
    pub layer_count: usize,
}

/// The whole plan.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The global scope: platform args, global ARGs, build args (what FROM lines and
    /// `--from` values expand in).
    pub globals: Env,
    /// Planned stages by Dockerfile index (`None` for stages the target does not need).
    pub stages: Vec<Option<StagePlan>>,
    /// Indexes of the planned stages in build order.
    pub order: Vec<usize>,
    /// The target stage's index.
    pub target: usize,
    /// Images named by `--from`, by name.
    pub images: BTreeMap<String, Image>,
    /// Number of steps over all planned stages.
    pub steps: usize,
}

impl Plan {
    /// The planned stage `index`.
    pub fn stage(&self, index: usize) -> Option<&StagePlan> {
        self.stages.get(index).and_then(Option::as_ref)
    }

    /// Stages that depend on `index`.
    pub fn dependents(&self, index: usize) -> Vec<usize> {
        self.order
            .iter()
            .copied()
            .filter(|i| self.stage(*i).is_some_and(|s| s.deps.contains(&index)))
            .collect()
    }
}

/// Whether an instruction is a build step of its own (shown as `[stage k/n]`).
pub fn is_step(kind: &InstructionKind) -> bool {
    matches!(
        kind,
        InstructionKind::Run(_)
            | InstructionKind::Copy(_)
            | InstructionKind::Add(_)
            | InstructionKind::Workdir(_)
    )
}

/// Resolves a `--from` value (as written) among the Dockerfile's stages, else as an image.
pub fn resolve_from(df: &Dockerfile, globals: &Env, raw: &str) -> Result<FromRef, Error> {
    let text = expand_word(raw, globals, df.escape())?.value;
    if let Ok(i) = text.parse::<usize>() {
        if i < df.stages.len() {
            return Ok(FromRef::Stage(i));
        }
        return Err(Error::InvalidOption {
            option: "--from",
            value: text,
            reason: format!(
                "there is no stage with that index (the Dockerfile has {})",
                df.stages.len()
            ),
        });
    }
    match df.stage(&text) {
        Some(s) => Ok(FromRef::Stage(s.index)),
        None => Ok(FromRef::Image(text)),
    }
}

/// The `--from` values an instruction names (COPY --from, RUN mounts with from=), as
/// written.
pub(crate) fn from_values(i: &Instruction) -> Vec<String> {
    match &i.kind {
        InstructionKind::Copy(c) => c.from.iter().cloned().collect(),
        InstructionKind::Run(r) => r
            .mounts
            .iter()
            .filter(|m| m.kind != MountType::Secret && m.kind != MountType::Ssh)
            .filter_map(|m| m.from.clone())
            .collect(),
        _ => Vec::new(),
    }
}

/// Plans a build of `target` (`None`: the last stage). `resolve_image` finds an image in
/// the store by name (`Ok(None)` when it is not there).
pub fn plan(
    df: &Dockerfile,
    globals: Env,
    target: Option<&str>,
    host: &Platform,
    resolve_image: &dyn Fn(&str) -> Result<Option<Image>, Error>,
) -> Result<Plan, Error> {
    let target = df.target(target)?.index;
    let single = df.stages.len() == 1;
    let mut images: BTreeMap<String, Image> = BTreeMap::new();
    let mut bases: Vec<Option<(String, Base)>> = vec![None; df.stages.len()];
    let mut deps: Vec<Option<BTreeSet<usize>>> = vec![None; df.stages.len()];
    let mut instructions: Vec<Vec<Instruction>> = vec![Vec::new(); df.stages.len()];
    let mut trigger_counts = vec![0usize; df.stages.len()];

    // Walk from the target through dependencies, resolving what each stage needs.
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if deps[i].is_some() {
            continue;
        }
        let stage = &df.stages[i];
        let from = stage.from.expand(&globals, df.escape())?.value;
        if let Some(p) = &from.platform {
            let wanted = Platform::parse(p)?;
            if wanted != *host {
                return Err(Error::Unsupported {
                    what: format!(
                        "building for {wanted} on {host} (FROM --platform={p} on line {})",
                        stage.span.start_line
                    ),
                    hint: ": strata builds for the host platform only".into(),
                });
            }
        }
        let mut d = BTreeSet::new();
        let base = if from.image.eq_ignore_ascii_case("scratch") {
            Base::Scratch
        } else if let Some(p) = df.stage_before(&from.image, i) {
            d.insert(p);
            Base::Stage(p)
        } else {
            match resolve_image(&from.image)
                .map_err(|e| e.named_at("FROM", stage.span.start_line))?
            {
                Some(image) => Base::Image {
                    name: from.image.clone(),
                    image: Box::new(image),
                },
                None => {
                    return Err(Error::ImageNotFound {
                        what: "FROM",
                        name: from.image.clone(),
                        line: stage.span.start_line,
                    })
                }
            }
        };
        // ONBUILD triggers of the base run first.
        let triggers: Vec<Instruction> = match &base {
            Base::Scratch => Vec::new(),
            Base::Image { image, .. } => onbuild_triggers(image)?,
            Base::Stage(p) => df.stages[*p]
                .instructions
                .iter()
                .filter_map(|i| match &i.kind {
                    InstructionKind::Onbuild(o) => Some(o),
                    _ => None,
                })
                .map(|o| match &o.trigger {
                    Ok(t) => Ok((**t).clone()),
                    Err(e) => Err(Error::Parse((**e).clone())),
                })
                .collect::<Result<_, _>>()?,
        };
        trigger_counts[i] = triggers.len();
        let all: Vec<Instruction> = triggers
            .into_iter()
            .chain(stage.instructions.iter().cloned())
            .collect();
        for instr in &all {
            for raw in from_values(instr) {
                match resolve_from(df, &globals, &raw)? {
                    FromRef::Stage(s) if s == i => {
                        return Err(Error::CircularDependency {
                            cycle: format!("{} -> {}", stage.display_name(), stage.display_name()),
                        })
                    }
                    FromRef::Stage(s) => {
                        d.insert(s);
                    }
                    FromRef::Image(name) => {
                        if let std::collections::btree_map::Entry::Vacant(slot) = images.entry(name)
                        {
                            let what = match instr.kind {
                                InstructionKind::Copy(_) => "COPY --from",
                                _ => "RUN --mount from",
                            };
                            let found = resolve_image(slot.key())
                                .map_err(|e| e.named_at(what, instr.span.start_line))?;
                            let image = found.ok_or_else(|| Error::ImageNotFound {
                                what,
                                name: slot.key().clone(),
                                line: instr.span.start_line,
                            })?;
                            slot.insert(image);
                        }
                    }
                }
            }
        }
        todo.extend(d.iter().copied());
        bases[i] = Some((from.image.clone(), base));
        deps[i] = Some(d);
        instructions[i] = all;
    }

    let order = topological(df, &deps)?;

    // Step numbers and layer counts, in build order.
    let mut stages: Vec<Option<StagePlan>> = vec![None; df.stages.len()];
    let mut next_step = 1;
    for &i in &order {
        let stage = &df.stages[i];
        let (from_text, base) = bases[i]
            .clone()
            .unwrap_or_else(|| (String::new(), Base::Scratch));
        let instrs = std::mem::take(&mut instructions[i]);
        let from_step = StepId(next_step);
        next_step += 1;
        let mut step_ids = Vec::with_capacity(instrs.len());
        for instr in &instrs {
            if is_step(&instr.kind) {
                step_ids.push(Some(StepId(next_step)));
                next_step += 1;
            } else {
                step_ids.push(None);
            }
        }
        let total = 1 + step_ids.iter().flatten().count();
        let base_layers = match &base {
            Base::Scratch => 0,
            Base::Image { image, .. } => image.diff_ids.len(),
            Base::Stage(p) => stages[*p].as_ref().map_or(0, |s| s.layer_count),
        };
        let own: Vec<&Instruction> = instrs.iter().filter(|x| x.kind.creates_layer()).collect();
        let layer_count = base_layers + own.len();
        let display = stage.display_name();
        if layer_count > MAX_LAYERS {
            return Err(Error::TooManyLayers {
                stage: display,
                count: layer_count,
                base: base_layers,
                own: own.len(),
                max: MAX_LAYERS,
                lines: summarize_lines(&own),
            });
        }
        let label = if single {
            String::new()
        } else {
            stage
                .name
                .clone()
                .unwrap_or_else(|| format!("stage-{}", stage.index))
        };
        stages[i] = Some(StagePlan {
            index: i,
            label,
            display,
            from_text,
            base,
            deps: deps[i].clone().unwrap_or_default(),
            instructions: instrs,
            triggers: trigger_counts[i],
            from_step,
            step_ids,
            total,
            layer_count,
        });
    }
    Ok(Plan {
        globals,
        stages,
        order,
        target,
        images,
        steps: next_step - 1,
    })
}

/// `lines 3, 4, 5, ... 130 (128 instructions)`, short enough for an error message.
fn summarize_lines(instrs: &[&Instruction]) -> String {
    let lines: Vec<String> = instrs
        .iter()
        .map(|i| i.span.start_line.to_string())
        .collect();
    if lines.len() <= 8 {
        return format!("lines {}", lines.join(", "));
    }
    format!(
        "lines {}, ... {} ({} instructions)",
        lines[..5].join(", "),
        lines[lines.len() - 1],
        lines.len()
    )
}

/// Build order of the planned stages: dependencies first, otherwise file order.
fn topological(df: &Dockerfile, deps: &[Option<BTreeSet<usize>>]) -> Result<Vec<usize>, Error> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        None,
        Active,
        Done,
    }
    fn visit(
        i: usize,
        df: &Dockerfile,
        deps: &[Option<BTreeSet<usize>>],
        marks: &mut Vec<Mark>,
        path: &mut Vec<usize>,
        out: &mut Vec<usize>,
    ) -> Result<(), Error> {
        match marks[i] {
            Mark::Done => return Ok(()),
            Mark::Active => {
                let start = path.iter().position(|p| *p == i).unwrap_or(0);
                let mut names: Vec<String> = path[start..]
                    .iter()
                    .map(|p| df.stages[*p].display_name())
                    .collect();
                names.push(df.stages[i].display_name());
                return Err(Error::CircularDependency {
                    cycle: names.join(" -> "),
                });
            }
            Mark::None => {}
        }
        marks[i] = Mark::Active;
        path.push(i);
        for d in deps[i].iter().flatten() {
            visit(*d, df, deps, marks, path, out)?;
        }
        path.pop();
        marks[i] = Mark::Done;
        out.push(i);
        Ok(())
    }
    let mut marks = vec![Mark::None; deps.len()];
    let mut out = Vec::new();
    for i in 0..deps.len() {
        if deps[i].is_some() {
            visit(i, df, deps, &mut marks, &mut Vec::new(), &mut out)?;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_store::{Descriptor, Digest, ImageConfig};

    fn image(layers: usize, onbuild: &[&str]) -> Image {
        let diff_ids: Vec<Digest> = (0..layers)
            .map(|i| Digest::of(format!("layer {i}").as_bytes()))
            .collect();
        let mut config = ImageConfig::default();
        config.set_diff_ids(&diff_ids);
        if !onbuild.is_empty() {
            config.docker.on_build = Some(onbuild.iter().map(|s| s.to_string()).collect());
        }
        let d = |s: &str| Descriptor::new("x", Digest::of(s.as_bytes()), 1);
        Image {
            manifest: d("manifest"),
            config: d("config"),
            config_bytes: config.to_bytes(),
            config_parsed: config,
            layers: diff_ids.iter().map(|x| d(&x.hex())).collect(),
            diff_ids,
        }
    }

    fn store(name: &str) -> Result<Option<Image>, Error> {
        Ok(match name {
            "busybox" => Some(image(1, &[])),
            "deep" => Some(image(100, &[])),
            "triggers" => Some(image(1, &["RUN echo triggered", "COPY --from=tools /t /t"])),
            _ => None,
        })
    }

    fn plan_of(src: &str, target: Option<&str>) -> Result<Plan, Error> {
        let df = strata_parser::parse(src).unwrap();
        plan(&df, Env::new(), target, &Platform::host(), &store)
    }

    fn built(p: &Plan) -> Vec<String> {
        p.order
            .iter()
            .map(|i| p.stage(*i).unwrap().display.clone())
            .collect()
    }

    #[test]
    fn only_needed_stages_in_dependency_order() {
        let src = "FROM busybox AS a\nRUN a\n\
                   FROM busybox AS other\nRUN u\n\
                   FROM scratch AS b\nCOPY --from=c /x /x\n\
                   FROM a AS c\nRUN --mount=type=bind,from=a,target=/a true\n\
                   FROM b\nCOPY --from=1 /y /y\n";
        let p = plan_of(src, None).unwrap();
        assert_eq!(built(&p), ["a", "other", "c", "b", "4"]);
        let p = plan_of(src, Some("b")).unwrap();
        assert_eq!(built(&p), ["a", "c", "b"]);
        assert!(p.stage(1).is_none());
        let p = plan_of(src, Some("a")).unwrap();
        assert_eq!(built(&p), ["a"]);
        assert_eq!(p.stage(0).unwrap().label, "a");
        // Step numbers follow build order: a's FROM and RUN, then c's.
        assert_eq!(p.stage(0).unwrap().from_step, StepId(1));
        assert_eq!(p.steps, 2);
    }

    #[test]
    fn labels_and_step_numbers() {
        let p = plan_of("FROM busybox\nRUN a\nENV X=1\nWORKDIR /w\nCMD x\n", None).unwrap();
        let s = p.stage(0).unwrap();
        assert_eq!(s.label, "");
        assert_eq!(s.total, 3);
        assert_eq!(s.step_ids, [Some(StepId(2)), None, Some(StepId(3)), None]);
        let p = plan_of(
            "FROM busybox\nRUN a\nFROM scratch\nCOPY --from=0 / /\n",
            None,
        )
        .unwrap();
        assert_eq!(p.stage(0).unwrap().label, "stage-0");
        assert_eq!(p.stage(1).unwrap().label, "stage-1");
    }

    #[test]
    fn missing_images_say_how_to_get_them() {
        let err = plan_of("FROM nothere:1\n", None).unwrap_err();
        insta::assert_snapshot!(err.to_string(), @"FROM \"nothere:1\" on line 1: no such image in the store; get it with `strata pull nothere:1`, `strata load -i ARCHIVE` or `strata import TARBALL nothere:1`");
        let err = plan_of("FROM busybox\nCOPY --from=tools:2 /a /a\n", None).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("COPY --from \"tools:2\" on line 2"),
            "{err}"
        );
        let err = plan_of("FROM busybox\nCOPY --from=7 /a /a\n", None).unwrap_err();
        assert!(
            err.to_string().contains("no stage with that index"),
            "{err}"
        );
    }

    #[test]
    fn cycles_are_refused() {
        let err = plan_of(
            "FROM busybox AS a\nCOPY --from=b /x /x\nFROM busybox AS b\nCOPY --from=a /y /y\n",
            None,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "circular dependency between stages: a -> b -> a"
        );
        let err = plan_of("FROM busybox AS a\nCOPY --from=a /x /x\n", None).unwrap_err();
        assert!(err.to_string().contains("a -> a"), "{err}");
    }

    #[test]
    fn global_args_choose_bases_and_from_values() {
        let src = "ARG BASE=busybox\nARG SRC=one\nFROM $BASE AS one\nFROM scratch\nCOPY --from=$SRC / /\n";
        let df = strata_parser::parse(src).unwrap();
        let globals =
            strata_parser::scope::global_scope(&df, &[("SRC", "0")], &strata_parser::shell::NoEnv)
                .unwrap();
        let p = plan(&df, globals, None, &Platform::host(), &store).unwrap();
        assert_eq!(built(&p), ["one", "1"]);
        assert!(
            matches!(p.stage(0).unwrap().base, Base::Image { ref name, .. } if name == "busybox")
        );
    }

    #[test]
    fn layer_counts_include_the_base_and_refuse_above_128() {
        let runs = |n: usize| "RUN x\n".repeat(n);
        let ok = plan_of(&format!("FROM deep\n{}", runs(28)), None).unwrap();
        assert_eq!(ok.stage(0).unwrap().layer_count, 128);
        let err = plan_of(&format!("FROM deep AS app\n{}", runs(29)), None).unwrap_err();
        insta::assert_snapshot!(err.to_string(), @"stage app would stack 129 filesystem layers (100 from its base, 29 from RUN/COPY/ADD), more than the 128 overlayfs can mount; merge some of its RUN/COPY/ADD instructions into fewer (lines 2, 3, 4, 5, 6, ... 30 (29 instructions))");
        // A stage built on a stage counts that stage's layers.
        let err = plan_of(
            &format!("FROM deep AS a\n{}FROM a AS b\n{}", runs(20), runs(9)),
            Some("b"),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("stage b would stack 129"),
            "{err}"
        );
    }

    #[test]
    fn onbuild_triggers_run_first_and_add_dependencies() {
        let src = "FROM busybox AS tools\nRUN t\nFROM triggers\nRUN own\n";
        let p = plan_of(src, None).unwrap();
        let s = p.stage(1).unwrap();
        assert_eq!(s.triggers, 2);
        assert_eq!(s.instructions[0].original, "RUN echo triggered");
        assert!(s.deps.contains(&0));
        assert_eq!(s.layer_count, 1 + 3);
        let src = "FROM busybox AS base\nONBUILD RUN echo hi\nFROM base\nRUN own\n";
        let p = plan_of(src, None).unwrap();
        assert_eq!(p.stage(1).unwrap().instructions[0].original, "RUN echo hi");
    }

    #[test]
    fn other_platforms_are_refused() {
        let err = plan_of("FROM --platform=linux/s390x busybox\n", None).unwrap_err();
        assert!(err.to_string().contains("not supported"), "{err}");
        let host = Platform::host().to_string();
        plan_of(&format!("FROM --platform={host} busybox\n"), None).unwrap();
    }
}
