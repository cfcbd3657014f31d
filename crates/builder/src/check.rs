//! `strata build --check`: everything that can be said about a build without running it.
//!
//! [`check`] runs the parser's lints ([`strata_parser::lint`]) and adds the checks that need
//! the store and the build's options:
//!
//! - `BaseImageNotFound` (warning): a `FROM`, `COPY --from` or `RUN --mount from=` image the
//!   target needs is not in the store (the build would stop there);
//! - `TooManyLayers`: the layer count of a stage *with its base image's layers*, which the
//!   parser cannot know (over [`WARN_LAYERS`] a warning, over [`MAX_LAYERS`] an error, as
//!   the build refuses it); it replaces the parser's count for stages whose base image is in
//!   the store;
//! - `UnusedBuildArg` (warning): a `--build-arg` no stage the target needs declares (Docker's
//!   "build-args were not consumed", known before the build);
//! - `UnreachableStage` (info): a stage the target does not need, which will not be built.
//!
//! They honour the Dockerfile's `# check=skip=...` and `# strata:ignore` comments like the
//! lints, and `# check=error=true` makes their warnings errors. Nothing is built, unpacked
//! or written.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use strata_parser::lint::{
    is_silenced, lint, lint_source, Lint, Severity, MAX_LAYERS, WARN_LAYERS,
};
use strata_parser::scope::global_scope;
use strata_parser::{ArgCommand, Dockerfile, InstructionKind, Span};
use strata_store::Store;

use crate::imageconfig::onbuild_triggers;
use crate::plan::{from_values, resolve_from, FromRef};
use crate::platform::{is_proxy_arg, platform_args, Platform};
use crate::{BuildOptions, Error};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Worth knowing; nothing is wrong.
    Info,
    /// Worth fixing; the build still works.
    Warning,
    /// The build fails (or `# check=error=true` is set).
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        })
    }
}

impl From<Severity> for Level {
    fn from(s: Severity) -> Level {
        match s {
            Severity::Warning => Level::Warning,
            Severity::Error => Level::Error,
        }
    }
}

/// One finding of [`check`]: a parser lint or a builder check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The rule (`UndefinedVar`, `BaseImageNotFound`, ...), as `# check=skip=` names it.
    pub rule: &'static str,
    /// How serious it is, after `# check=error=true`.
    pub level: Level,
    /// Where, when it concerns a place in the Dockerfile (`UnusedBuildArg` does not).
    pub span: Option<Span>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in one line.
    pub fix: String,
}

impl From<Lint> for Finding {
    fn from(l: Lint) -> Finding {
        Finding {
            rule: l.rule,
            level: l.severity.into(),
            span: Some(l.span),
            message: l.message,
            fix: l.fix,
        }
    }
}

/// A rule of the builder's own checks (the parser's are [`strata_parser::lint::RULES`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckRule {
    /// The name used in findings and in `# check=skip=`.
    pub name: &'static str,
    /// The default level.
    pub level: Level,
    /// What the rule checks.
    pub description: &'static str,
}

/// The builder's checks.
pub const CHECK_RULES: &[CheckRule] = &[
    CheckRule {
        name: "BaseImageNotFound",
        level: Level::Warning,
        description:
            "An image the target needs (FROM, COPY --from, RUN --mount from=) is not in the store",
    },
    CheckRule {
        name: "TooManyLayers",
        level: Level::Error,
        description:
            "More than 128 layers, base image included, cannot be mounted (over 100 is a warning)",
    },
    CheckRule {
        name: "UnusedBuildArg",
        level: Level::Warning,
        description: "A --build-arg that no stage the target needs declares",
    },
    CheckRule {
        name: "UnreachableStage",
        level: Level::Info,
        description: "A stage the target does not need; it is not built",
    },
];

/// Checks the build `opts` describes without building: the parser's lints and the
/// builder's checks against `store`, sorted by position (findings without one first).
///
/// A Dockerfile that does not parse is an error, except a repeated stage name, which is
/// reported as the lint `DuplicateStageName` with the other lints.
pub fn check(store: &Store, opts: &BuildOptions) -> Result<Vec<Finding>, Error> {
    let df = match strata_parser::parse(&opts.dockerfile) {
        Ok(df) => df,
        Err(e) => {
            // Findings that explain the failure (a duplicate stage name) beat the bare error.
            return match lint_source(&opts.dockerfile) {
                Ok(lints) if lints.iter().any(|l| l.severity == Severity::Error) => {
                    Ok(lints.into_iter().map(Finding::from).collect())
                }
                _ => Err(e.into()),
            };
        }
    };
    let mut findings: Vec<Finding> = lint(&df).into_iter().map(Finding::from).collect();
    let host = Platform::host();
    let builtins = platform_args(&host, &host);
    let globals = global_scope(&df, &opts.build_args, &builtins)?;
    let target = df.target(opts.target.as_deref())?.index;

    // Walk the stages the target needs, noting the images they name.
    let mut walk = Walk::default();
    let mut todo = vec![target];
    while let Some(i) = todo.pop() {
        if walk.needed.contains_key(&i) {
            continue;
        }
        let stage = &df.stages[i];
        let base = stage.from.expand(&globals, df.escape())?.value.image;
        let mut deps = Vec::new();
        let from = if base.eq_ignore_ascii_case("scratch") {
            StageBase::Scratch
        } else if let Some(p) = df.stage_before(&base, i) {
            deps.push(p);
            StageBase::Stage(p)
        } else {
            let image = resolve(store, &base)?;
            if image.is_none() {
                walk.missing.push(Missing {
                    what: "FROM",
                    name: base.clone(),
                    span: stage.span,
                });
            }
            StageBase::Image(base, image.map(Box::new))
        };
        for instr in &stage.instructions {
            for raw in from_values(instr) {
                match resolve_from(&df, &globals, &raw)? {
                    FromRef::Stage(s) => deps.push(s),
                    FromRef::Image(name) => {
                        if resolve(store, &name)?.is_none() {
                            walk.missing.push(Missing {
                                what: match instr.kind {
                                    InstructionKind::Copy(_) => "COPY --from",
                                    _ => "RUN --mount from",
                                },
                                name,
                                span: instr.span,
                            });
                        }
                    }
                }
            }
        }
        todo.extend(deps);
        walk.needed.insert(i, from);
    }

    for m in &walk.missing {
        findings.push(Finding {
            rule: "BaseImageNotFound",
            level: Level::Warning,
            span: Some(m.span),
            message: format!(
                "{} image {} is not in the store; the build would stop here",
                m.what, m.name
            ),
            fix: format!(
                "`strata pull {}`, or `strata load -i FILE` with an archive of it",
                m.name
            ),
        });
    }
    layer_counts(&df, &walk.needed, &mut findings)?;
    if let Some(f) = unused_build_args(&df, &walk.needed, opts) {
        findings.push(f);
    }
    let target_name = df.stages[target].display_name();
    for stage in df
        .stages
        .iter()
        .filter(|s| !walk.needed.contains_key(&s.index))
    {
        let name = stage.display_name();
        findings.push(Finding {
            rule: "UnreachableStage",
            level: Level::Info,
            span: Some(stage.span),
            message: format!(
                "stage {name} is not needed to build {target_name} and will not be built"
            ),
            fix: format!("build it with `--target {name}`, or delete it if nothing uses it"),
        });
    }

    // The Dockerfile's comments apply to the builder's checks as to the lints ([`lint`]
    // already dropped the silenced lints, so asking again changes nothing for them).
    let error = df.directives.check.error;
    let mut out: Vec<Finding> = Vec::with_capacity(findings.len());
    for mut f in findings {
        if is_silenced(&df, f.rule, f.span.map_or(0, |s| s.start_line)) {
            continue;
        }
        if error && f.level == Level::Warning {
            f.level = Level::Error;
        }
        out.push(f);
    }
    out.sort_by(|a, b| {
        let pos = |f: &Finding| f.span.map(|s| (s.start_line, s.start_col));
        (pos(a), a.rule).cmp(&(pos(b), b.rule))
    });
    out.dedup();
    Ok(out)
}

/// What a needed stage starts from.
enum StageBase {
    Scratch,
    Stage(usize),
    /// An image by name, with the image when it is in the store.
    Image(String, Option<Box<strata_store::Image>>),
}

/// An image the target needs that the store does not have.
struct Missing {
    what: &'static str,
    name: String,
    span: Span,
}

#[derive(Default)]
struct Walk {
    /// The stages the target needs, with their bases.
    needed: BTreeMap<usize, StageBase>,
    missing: Vec<Missing>,
}

fn resolve(store: &Store, name: &str) -> Result<Option<strata_store::Image>, Error> {
    match store.resolve(name) {
        Ok(i) => Ok(Some(i)),
        Err(strata_store::Error::ImageNotFound { .. }) => Ok(None),
        // A name that is not a valid reference cannot be in the store either.
        Err(strata_store::Error::InvalidReference { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The layers a stage stacks, base image included: replaces the parser's `TooManyLayers`
/// findings (which count from the first stage of the chain) for stages whose chain starts
/// at an image in the store.
fn layer_counts(
    df: &Dockerfile,
    needed: &BTreeMap<usize, StageBase>,
    findings: &mut Vec<Finding>,
) -> Result<(), Error> {
    // Layers below each needed stage's own instructions, and the image at the chain's root.
    let mut below: BTreeMap<usize, (usize, Option<String>)> = BTreeMap::new();
    for (&i, base) in needed {
        let mut chain = vec![i];
        let mut root = base;
        while let StageBase::Stage(p) = root {
            if chain.contains(p) {
                break;
            }
            chain.push(*p);
            match needed.get(p) {
                Some(b) => root = b,
                None => break,
            }
        }
        let (mut count, image) = match root {
            StageBase::Image(name, Some(image)) => {
                let triggers = onbuild_triggers(image)?;
                (
                    image.diff_ids.len()
                        + triggers.iter().filter(|t| t.kind.creates_layer()).count(),
                    Some(name.clone()),
                )
            }
            _ => (0, None),
        };
        // The stages below this one in the chain, nearest last.
        for s in chain.iter().skip(1) {
            count += df.stages[*s].layer_count();
        }
        below.insert(i, (count, image));
    }
    let with_image: BTreeSet<usize> = below
        .iter()
        .filter(|(_, (_, image))| image.is_some())
        .map(|(i, _)| *i)
        .collect();
    // The parser's counts are wrong by the base image's layers for those stages.
    findings.retain(|f| {
        f.rule != "TooManyLayers"
            || f.span
                .and_then(|s| stage_at_line(df, s.start_line))
                .is_none_or(|st| !with_image.contains(&st))
    });
    for i in with_image {
        let (mut count, image) = below[&i].clone();
        let image = image.unwrap_or_default();
        let base_layers = count;
        let stage = &df.stages[i];
        for instr in stage.instructions.iter().filter(|x| x.kind.creates_layer()) {
            count += 1;
            let (limit, level, what) = if count == MAX_LAYERS + 1 {
                (MAX_LAYERS, Level::Error, "cannot be mounted by overlayfs")
            } else if count == WARN_LAYERS + 1 {
                (WARN_LAYERS, Level::Warning, "slows every mount and lookup")
            } else {
                continue;
            };
            findings.push(Finding {
                rule: "TooManyLayers",
                level,
                span: Some(instr.span),
                message: format!(
                    "this {} makes layer {count} of stage {} ({base_layers} below its own instructions, from {image} and the stages it builds on); more than {limit} layers {what}",
                    instr.kind.name(),
                    stage.display_name()
                ),
                fix: "merge RUN instructions, or copy the result into a fresh stage to flatten"
                    .into(),
            });
        }
    }
    Ok(())
}

/// The stage whose lines include `line`.
fn stage_at_line(df: &Dockerfile, line: usize) -> Option<usize> {
    df.stages
        .iter()
        .take_while(|s| s.span.start_line <= line)
        .last()
        .map(|s| s.index)
}

/// `--build-arg`s that neither a global ARG nor an ARG of a needed stage declares.
fn unused_build_args(
    df: &Dockerfile,
    needed: &BTreeMap<usize, StageBase>,
    opts: &BuildOptions,
) -> Option<Finding> {
    let mut declared: BTreeSet<&str> = df.meta_arg_defs().map(|d| d.name.as_str()).collect();
    for i in needed.keys() {
        for instr in &df.stages[*i].instructions {
            if let InstructionKind::Arg(ArgCommand { args }) = &instr.kind {
                declared.extend(args.iter().map(|d| d.name.as_str()));
            }
        }
    }
    let unused: BTreeSet<&str> = opts
        .build_args
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| !declared.contains(k) && !is_proxy_arg(k) && *k != "SOURCE_DATE_EPOCH")
        .collect();
    if unused.is_empty() {
        return None;
    }
    let list: Vec<&str> = unused.into_iter().collect();
    Some(Finding {
        rule: "UnusedBuildArg",
        level: Level::Warning,
        span: None,
        message: format!(
            "build arg(s) {} are not declared by any stage the target needs; they change nothing",
            list.join(", ")
        ),
        fix: format!(
            "declare `ARG {}` where it is used, or drop the --build-arg",
            list[0]
        ),
    })
}

/// How many findings are errors.
pub fn errors(findings: &[Finding]) -> usize {
    findings.iter().filter(|f| f.level == Level::Error).count()
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use strata_store::{Compression, ImageConfig, Reference};

    use super::*;

    /// A store with `base:1`, an image of `layers` one-byte layers.
    fn store_with_base(layers: usize) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let infos: Vec<_> = (0..layers)
            .map(|i| {
                let mut w = store.layer_writer(Compression::None).unwrap();
                w.write_all(&(i as u32).to_le_bytes()).unwrap();
                w.finish().unwrap()
            })
            .collect();
        let image = store.write_image(&ImageConfig::default(), &infos).unwrap();
        store
            .tag(&Reference::parse("base:1").unwrap(), &image)
            .unwrap();
        (dir, store)
    }

    fn run(store: &Store, df: &str, args: &[(&str, &str)]) -> Vec<(&'static str, Level, usize)> {
        let mut opts = BuildOptions::new(df, "/nonexistent");
        opts.build_args = args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        check(store, &opts)
            .unwrap()
            .into_iter()
            .map(|f| (f.rule, f.level, f.span.map_or(0, |s| s.start_line)))
            .collect()
    }

    #[test]
    fn missing_images_are_warnings_where_they_are_named() {
        let (_d, store) = store_with_base(1);
        let got = run(
            &store,
            "FROM base:1 AS a\nCOPY --from=tools:2 /x /x\nFROM nothere:3\nCOPY --from=a /x /x\nRUN --mount=from=base:1,target=/b true\n",
            &[],
        );
        assert_eq!(
            got,
            [
                ("BaseImageNotFound", Level::Warning, 2),
                ("BaseImageNotFound", Level::Warning, 3),
            ]
        );
        let mut opts = BuildOptions::new("FROM nothere:3\n", "/x");
        opts.target = None;
        let f = check(&store, &opts).unwrap();
        assert_eq!(
            f[0].message,
            "FROM image nothere:3 is not in the store; the build would stop here"
        );
    }

    #[test]
    fn layer_counts_include_the_base_images_layers() {
        let (_d, store) = store_with_base(95);
        let mut df = String::from("FROM base:1 AS a\n");
        for i in 0..4 {
            df.push_str(&format!("RUN echo {i} > /f{i}\n"));
        }
        df.push_str("FROM a\n");
        for i in 0..30 {
            df.push_str(&format!("COPY f{i} /\n"));
        }
        let got = run(&store, &df, &[]);
        let layers: Vec<_> = got.iter().filter(|f| f.0 == "TooManyLayers").collect();
        // 95 + 4 = 99 below stage 1; its 2nd COPY is layer 101, its 30th layer 129.
        assert_eq!(
            layers,
            [
                &("TooManyLayers", Level::Warning, 8),
                &("TooManyLayers", Level::Error, 36)
            ]
        );
        // Without the image in the store, the parser's count (from the stages) stands.
        let dir = tempfile::tempdir().unwrap();
        let empty = Store::open(dir.path()).unwrap();
        let got = run(&empty, &df, &[]);
        assert!(!got.iter().any(|f| f.0 == "TooManyLayers"), "{got:?}");
        assert!(got.contains(&("BaseImageNotFound", Level::Warning, 1)));
    }

    #[test]
    fn unused_build_args_and_unreachable_stages() {
        let (_d, store) = store_with_base(1);
        let df = "ARG GLOBAL=1\nFROM base:1 AS test\nARG ONLY_IN_TEST\nRUN true\nFROM base:1\nARG USED\nRUN echo $USED\n";
        let got = run(
            &store,
            df,
            &[
                ("USED", "1"),
                ("GLOBAL", "2"),
                ("ONLY_IN_TEST", "3"),
                ("HTTP_PROXY", "x"),
                ("TYPO", "4"),
            ],
        );
        assert_eq!(
            got,
            [
                ("UnusedBuildArg", Level::Warning, 0),
                ("UnreachableStage", Level::Info, 2),
            ]
        );
        let mut opts = BuildOptions::new(df, "/nonexistent");
        opts.build_args = vec![
            ("ONLY_IN_TEST".into(), "3".into()),
            ("TYPO".into(), "4".into()),
        ];
        let f = check(&store, &opts).unwrap();
        assert_eq!(
            f[0].message,
            "build arg(s) ONLY_IN_TEST, TYPO are not declared by any stage the target needs; they change nothing"
        );
        opts.target = Some("test".into());
        let f = check(&store, &opts).unwrap();
        assert!(f[0].message.starts_with("build arg(s) TYPO "), "{f:?}");
        assert_eq!(f[1].rule, "UnreachableStage");
        assert_eq!(f[1].span.unwrap().start_line, 5);
    }

    #[test]
    fn comments_silence_or_harden_the_builders_checks() {
        let (_d, store) = store_with_base(1);
        let df = "FROM base:1 AS unused\nFROM nothere\nRUN true\n";
        assert_eq!(
            run(&store, df, &[("X", "1")]),
            [
                ("UnusedBuildArg", Level::Warning, 0),
                ("UnreachableStage", Level::Info, 1),
                ("BaseImageNotFound", Level::Warning, 2),
            ]
        );
        let skipped = format!("# check=skip=UnreachableStage,UnusedBuildArg\n{df}");
        assert_eq!(
            run(&store, &skipped, &[("X", "1")]),
            [("BaseImageNotFound", Level::Warning, 3)]
        );
        let ignored =
            "FROM base:1 AS unused\n# strata:ignore BaseImageNotFound\nFROM nothere\nRUN true\n";
        assert_eq!(
            run(&store, ignored, &[]),
            [("UnreachableStage", Level::Info, 1)]
        );
        let hard = format!("# check=error=true\n{df}");
        assert_eq!(
            run(&store, &hard, &[]),
            [
                ("UnreachableStage", Level::Info, 2),
                ("BaseImageNotFound", Level::Error, 3),
            ]
        );
    }

    #[test]
    fn a_repeated_stage_name_is_a_finding_and_other_parse_errors_are_errors() {
        let (_d, store) = store_with_base(1);
        let got = run(&store, "FROM base:1 AS a\nFROM base:1 AS a\n", &[]);
        assert_eq!(got, [("DuplicateStageName", Level::Error, 2)]);
        let opts = BuildOptions::new("FROM base:1\nCOPY --bogus=1 a b\n", "/x");
        assert!(check(&store, &opts).is_err());
        assert_eq!(errors(&[]), 0);
    }
}
