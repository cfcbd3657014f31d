//! Lints as data.
//!
//! The rules are BuildKit's checks that can be decided from the file alone (same names,
//! so `# check=skip=...` written for BuildKit works here) plus a few of ours about layers
//! and caching. Every finding carries its rule, severity, span, a message and a one-line
//! fix. `# check=skip=<rules>|all` drops rules, `# check=error=true` makes every finding
//! an error, and a comment `# strata:ignore <Rule>[,<Rule>...]` directly above an
//! instruction silences those rules (all rules when none is named) for that instruction.
//!
//! Base images are not known here, so variables an image's config defines look
//! undefined; `PATH` is always considered defined (BuildKit supplies a default).

use std::collections::HashMap;
use std::fmt;

use crate::error::ParseError;
use crate::instructions::*;
use crate::scope::{global_scope, StageScope, PLATFORM_ARGS};
use crate::shell::{expand_word, Env, Lookup, NoEnv};
use crate::span::Span;
use crate::stages::{build_with, Dockerfile, Stage};
use crate::suggest::suggest;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth fixing; the build still works.
    Warning,
    /// The build fails or is broken (or `# check=error=true` is set).
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        })
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lint {
    /// The rule's name (`UndefinedVar`, `TooManyLayers`, ...).
    pub rule: &'static str,
    /// Its severity after `# check=error=true` was applied.
    pub severity: Severity,
    /// Where.
    pub span: Span,
    /// What is wrong, naming the offending text.
    pub message: String,
    /// How to fix it, in one line.
    pub fix: String,
}

/// A rule's description.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    /// The name used in findings and in `# check=skip=`.
    pub name: &'static str,
    /// The default severity.
    pub severity: Severity,
    /// What the rule checks.
    pub description: &'static str,
}

const fn rule(name: &'static str, severity: Severity, description: &'static str) -> Rule {
    Rule {
        name,
        severity,
        description,
    }
}

/// Every rule, BuildKit's first and ours after.
pub const RULES: &[Rule] = &[
    rule("StageNameCasing", Severity::Warning, "Stage names should be lowercase"),
    rule("FromAsCasing", Severity::Warning, "The 'as' keyword should match the case of the 'from' keyword"),
    rule("NoEmptyContinuation", Severity::Warning, "Empty continuation lines will become errors in a future release"),
    rule("ConsistentInstructionCasing", Severity::Warning, "All commands within the Dockerfile should use the same casing (either upper or lower)"),
    rule("DuplicateStageName", Severity::Error, "Stage names should be unique"),
    rule("ReservedStageName", Severity::Warning, "Reserved words should not be used as stage names"),
    rule("JSONArgsRecommended", Severity::Warning, "JSON arguments recommended for ENTRYPOINT/CMD to prevent unintended behavior related to OS signals"),
    rule("MaintainerDeprecated", Severity::Warning, "The MAINTAINER instruction is deprecated, use a label instead to define an image author"),
    rule("UndefinedArgInFrom", Severity::Warning, "FROM command must use declared ARGs"),
    rule("WorkdirRelativePath", Severity::Warning, "Relative workdir without an absolute workdir declared within the build can have unexpected results if the base image changes"),
    rule("UndefinedVar", Severity::Warning, "Variables should be defined before their use"),
    rule("MultipleInstructionsDisallowed", Severity::Warning, "Multiple instructions of the same type should not be used in the same stage"),
    rule("LegacyKeyValueFormat", Severity::Warning, "Legacy key/value format with whitespace separator should not be used"),
    rule("RedundantTargetPlatform", Severity::Warning, "Setting platform to predefined $TARGETPLATFORM in FROM is redundant as this is the default behavior"),
    rule("SecretsUsedInArgOrEnv", Severity::Warning, "Sensitive data should not be used in the ARG or ENV commands"),
    rule("InvalidDefaultArgInFrom", Severity::Warning, "Default value for global ARG results in an empty or invalid base image name"),
    rule("FromPlatformFlagConstDisallowed", Severity::Warning, "FROM --platform flag should not use a constant value"),
    rule("ExposeProtoCasing", Severity::Warning, "Protocol in EXPOSE instruction should be lowercase"),
    rule("ExposeInvalidFormat", Severity::Warning, "IP address and host-port mapping should not be used in EXPOSE instruction"),
    rule("UpdateWithoutInstall", Severity::Warning, "A package index update in a RUN that installs nothing goes stale in the cache"),
    rule("TooManyLayers", Severity::Error, "More than 128 filesystem layers in a stage chain cannot be mounted (over 100 is a warning)"),
    rule("ConsecutiveRunInstructions", Severity::Warning, "Consecutive RUN instructions with the same options could be one layer"),
];

/// The layer count at which overlay mounts fail.
pub const MAX_LAYERS: usize = 128;
/// The layer count above which we warn.
pub const WARN_LAYERS: usize = 100;

fn default_severity(name: &str) -> Severity {
    RULES
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.severity)
        .unwrap_or(Severity::Warning)
}

/// Parse `src` and lint it. A repeated stage name, which [`crate::parse`] refuses, is
/// reported as a `DuplicateStageName` error here so the other findings still show.
pub fn lint_source(src: &str) -> Result<Vec<Lint>, ParseError> {
    let ast = crate::ast::parse(src)?;
    let df = build_with(src, ast, true)?;
    Ok(lint(&df))
}

/// Lint a parsed Dockerfile. Findings come sorted by position; the check directive and
/// `strata:ignore` comments are applied.
pub fn lint(df: &Dockerfile) -> Vec<Lint> {
    let globals = global_scope(df, &NoEnv, &platform_defaults()).unwrap_or_default();
    let parents = df
        .stages
        .iter()
        .map(|s| {
            let base = expand_word(&s.from.image, &globals, df.escape())
                .map(|e| e.value)
                .unwrap_or_else(|_| s.from.image.clone());
            df.stage_before(&base, s.index)
        })
        .collect();
    let mut cx = Cx {
        df,
        out: Vec::new(),
        globals,
        parents,
    };
    cx.run();
    let check = &df.directives.check;
    let ignores = ignore_map(df);
    let mut lints: Vec<Lint> = cx
        .out
        .into_iter()
        .filter(|l| !check.skips(l.rule))
        .filter(|l| match ignores.get(&l.span.start_line) {
            Some(Ignore::All) => false,
            Some(Ignore::Rules(rules)) => !rules.iter().any(|r| r == l.rule),
            None => true,
        })
        .map(|mut l| {
            if check.error {
                l.severity = Severity::Error;
            }
            l
        })
        .collect();
    lints.sort_by(|a, b| {
        (a.span.start_line, a.span.start_col, a.rule).cmp(&(
            b.span.start_line,
            b.span.start_col,
            b.rule,
        ))
    });
    lints.dedup();
    lints
}

/// Whether a finding of `rule` on `line` is silenced by the Dockerfile: `# check=skip=`
/// names the rule (or `all`), or a `# strata:ignore` comment above the instruction starting
/// on `line` names it (or no rule). For checks made outside this crate (the builder's
/// checks that need the store) so that they honour the same comments as [`lint`].
pub fn is_silenced(df: &Dockerfile, rule: &str, line: usize) -> bool {
    if df.directives.check.skips(rule) {
        return true;
    }
    match ignore_map(df).get(&line) {
        Some(Ignore::All) => true,
        Some(Ignore::Rules(rules)) => rules.iter().any(|r| r == rule),
        None => false,
    }
}

/// What a `# strata:ignore` comment silences.
enum Ignore {
    All,
    Rules(Vec<String>),
}

/// `# strata:ignore Rule,...` comments, keyed by the line of the instruction below them.
fn ignore_map(df: &Dockerfile) -> HashMap<usize, Ignore> {
    let mut map: HashMap<usize, Ignore> = HashMap::new();
    let mut add = |line: usize, comments: &[String]| {
        for c in comments {
            let Some(rest) = c.strip_prefix("strata:ignore") else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with([' ', '\t', '='])) {
                continue;
            }
            let rules: Vec<String> = rest
                .trim_start_matches('=')
                .split([',', ' ', '\t'])
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            let entry = map.entry(line).or_insert(Ignore::Rules(Vec::new()));
            match entry {
                Ignore::All => {}
                Ignore::Rules(_) if rules.is_empty() => *entry = Ignore::All,
                Ignore::Rules(r) => r.extend(rules),
            }
        }
    };
    for i in &df.meta_args {
        add(i.span.start_line, &i.comments);
    }
    for s in &df.stages {
        add(s.span.start_line, &s.comments);
        for i in &s.instructions {
            add(i.span.start_line, &i.comments);
        }
    }
    map
}

struct Cx<'a> {
    df: &'a Dockerfile,
    out: Vec<Lint>,
    /// The global scope with defaults only and a linux/amd64 platform.
    globals: Env,
    /// Each stage's base stage, if it is built on an earlier stage.
    parents: Vec<Option<usize>>,
}

impl Cx<'_> {
    fn push(&mut self, rule: &'static str, span: Span, message: String, fix: impl Into<String>) {
        self.out.push(Lint {
            rule,
            severity: default_severity(rule),
            span,
            message,
            fix: fix.into(),
        });
    }

    fn run(&mut self) {
        for w in &self.df.warnings {
            self.push(
                "NoEmptyContinuation",
                w.span,
                "Empty continuation line".into(),
                "delete the empty line inside the continuation, or end the instruction before it",
            );
        }
        self.instruction_casing();
        self.stage_names();
        for i in &self.df.meta_args {
            self.secrets(i);
        }
        for stage in &self.df.stages {
            self.per_stage(stage);
        }
        self.layers();
        self.scopes();
    }

    fn instruction_casing(&mut self) {
        let consistent = |s: &str| s == s.to_lowercase() || s == s.to_uppercase();
        let mut lower = 0;
        let mut upper = 0;
        let keywords: Vec<(&str, Span)> = self
            .df
            .stages
            .iter()
            .flat_map(|s| {
                std::iter::once((s.keyword.as_str(), s.span))
                    .chain(s.instructions.iter().map(|i| (i.keyword.as_str(), i.span)))
            })
            .collect();
        for (k, _) in &keywords {
            if consistent(k) {
                if *k == k.to_lowercase() {
                    lower += 1;
                } else {
                    upper += 1;
                }
            }
        }
        let majority_lower = lower > upper;
        for (k, span) in keywords {
            let (wrong, casing, want) = if majority_lower {
                (k != k.to_lowercase(), "lowercase", k.to_lowercase())
            } else {
                (k != k.to_uppercase(), "uppercase", k.to_uppercase())
            };
            if wrong {
                self.push(
                    "ConsistentInstructionCasing",
                    span,
                    format!(
                        "Command '{k}' should match the case of the command majority ({casing})"
                    ),
                    format!("write `{want}`"),
                );
            }
        }
    }

    fn stage_names(&mut self) {
        let mut seen: Vec<(&str, usize)> = Vec::new();
        for s in &self.df.stages {
            let f = &s.from;
            if let (Some(name), Some(written)) = (&f.alias, &f.alias_as_written) {
                if written != name {
                    self.push(
                        "StageNameCasing",
                        s.span,
                        format!("Stage name '{written}' should be lowercase"),
                        format!("name the stage `{name}`"),
                    );
                }
                if name == "context" || name == "scratch" {
                    self.push(
                        "ReservedStageName",
                        s.span,
                        format!(
                            "Stage name should not use the same name as reserved stage \"{name}\""
                        ),
                        "pick another stage name",
                    );
                }
                if let Some((_, line)) = seen.iter().find(|(n, _)| n == name) {
                    self.push(
                        "DuplicateStageName",
                        s.span,
                        format!("Duplicate stage name \"{name}\", stage names should be unique (first used on line {line})"),
                        "rename one of the stages",
                    );
                }
                seen.push((name, s.span.start_line));
            }
            if let Some(as_kw) = &f.as_keyword {
                let kw = &s.keyword;
                let consistent = *kw == kw.to_lowercase() || *kw == kw.to_uppercase();
                if consistent {
                    let ok = if *kw == kw.to_lowercase() {
                        *as_kw == as_kw.to_lowercase()
                    } else {
                        *as_kw == as_kw.to_uppercase()
                    };
                    if !ok {
                        let want = if *kw == kw.to_lowercase() { "as" } else { "AS" };
                        self.push(
                            "FromAsCasing",
                            s.span,
                            format!("'{as_kw}' and '{kw}' keywords' casing do not match"),
                            format!("write `{want}`"),
                        );
                    }
                }
            }
        }
    }

    fn secrets(&mut self, i: &Instruction) {
        let keys: Vec<(&str, &str)> = match &i.kind {
            InstructionKind::Arg(a) => a.args.iter().map(|d| ("ARG", d.name.as_str())).collect(),
            InstructionKind::Env(e) => e.vars.iter().map(|kv| ("ENV", kv.key.as_str())).collect(),
            _ => return,
        };
        for (instr, key) in keys {
            if is_secret_key(key) {
                self.push(
                    "SecretsUsedInArgOrEnv",
                    i.span,
                    format!(
                        "Do not use ARG or ENV instructions for sensitive data ({instr} \"{key}\")"
                    ),
                    "pass the value with RUN --mount=type=secret instead",
                );
            }
        }
    }

    fn per_stage(&mut self, stage: &Stage) {
        let mut last: HashMap<&'static str, Span> = HashMap::new();
        let mut shell_set = self.chain(stage.index).iter().any(|s| {
            s.instructions
                .iter()
                .any(|i| matches!(i.kind, InstructionKind::Shell(_)))
        });
        let mut prev_run: Option<&Instruction> = None;
        for i in &stage.instructions {
            self.secrets(i);
            match &i.kind {
                InstructionKind::Maintainer(_) => self.push(
                    "MaintainerDeprecated",
                    i.span,
                    "Maintainer instruction is deprecated in favor of using label".into(),
                    "use LABEL org.opencontainers.image.authors=\"...\"",
                ),
                InstructionKind::Env(e) if e.vars.iter().any(|kv| kv.legacy) => self.push(
                    "LegacyKeyValueFormat",
                    i.span,
                    "\"ENV key=value\" should be used instead of legacy \"ENV key value\" format".into(),
                    "write ENV key=value",
                ),
                InstructionKind::Label(l) if l.labels.iter().any(|kv| kv.legacy) => self.push(
                    "LegacyKeyValueFormat",
                    i.span,
                    "\"LABEL key=value\" should be used instead of legacy \"LABEL key value\" format".into(),
                    "write LABEL key=value",
                ),
                InstructionKind::Shell(_) => shell_set = true,
                InstructionKind::Expose(e) => {
                    for p in &e.ports {
                        if p.raw.contains(':') {
                            self.push(
                                "ExposeInvalidFormat",
                                i.span,
                                format!("EXPOSE instruction should not define an IP address or host-port mapping, found '{}'", p.raw),
                                "expose only the container port; map host ports when running",
                            );
                        }
                        if let Some((_, proto)) = p.raw.rsplit_once('/') {
                            if proto != proto.to_lowercase() && !proto.contains('$') {
                                self.push(
                                    "ExposeProtoCasing",
                                    i.span,
                                    format!("Defined protocol '{}' in EXPOSE instruction should be lowercase", p.raw),
                                    format!("write `{}`", p.raw.to_lowercase()),
                                );
                            }
                        }
                    }
                }
                InstructionKind::Run(r) => {
                    if let Some(pkg) = update_without_install(r) {
                        self.push(
                            "UpdateWithoutInstall",
                            i.span,
                            format!("`{pkg}` runs in a RUN that installs nothing: its cached layer keeps the old package index, so later installs use stale lists"),
                            format!("run `{pkg}` in the same RUN as the install, e.g. `{pkg} && ... install ...`"),
                        );
                    }
                    if let Some(prev) = prev_run {
                        if can_join(prev, i) {
                            self.push(
                                "ConsecutiveRunInstructions",
                                i.span,
                                format!(
                                    "RUN directly follows the RUN on line {} with the same options; each RUN adds a layer",
                                    prev.span.start_line
                                ),
                                "join the two commands with && in one RUN",
                            );
                        }
                    }
                }
                _ => {}
            }
            if let InstructionKind::Cmd(CmdCommand { command })
            | InstructionKind::Entrypoint(EntrypointCommand { command }) = &i.kind
            {
                if command.is_shell() && !shell_set {
                    let name = i.kind.name();
                    self.push(
                        "JSONArgsRecommended",
                        i.span,
                        format!("JSON arguments recommended for {name} to prevent unintended behavior related to OS signals"),
                        format!("write {name} [\"executable\", \"arg\"]"),
                    );
                }
            }
            let once = match &i.kind {
                InstructionKind::Cmd(_) => Some("CMD"),
                InstructionKind::Entrypoint(_) => Some("ENTRYPOINT"),
                InstructionKind::Healthcheck(_) => Some("HEALTHCHECK"),
                _ => None,
            };
            if let Some(name) = once {
                if let Some(prev) = last.insert(name, i.span) {
                    self.push(
                        "MultipleInstructionsDisallowed",
                        prev,
                        format!("Multiple {name} instructions should not be used in the same stage because only the last one will be used"),
                        format!("delete this {name}; the one on line {} replaces it", i.span.start_line),
                    );
                }
            }
            prev_run = matches!(i.kind, InstructionKind::Run(_)).then_some(i);
        }
    }

    /// The stage and the earlier stages it is built on, nearest first.
    fn chain(&self, index: usize) -> Vec<&Stage> {
        let mut out: Vec<&Stage> = Vec::new();
        let mut cur = Some(index);
        while let Some(i) = cur {
            let Some(stage) = self.df.stages.get(i) else {
                break;
            };
            if out.iter().any(|s| s.index == i) {
                break;
            }
            out.push(stage);
            cur = self.parents.get(i).copied().flatten();
        }
        out
    }

    fn layers(&mut self) {
        for stage in &self.df.stages {
            let chain = self.chain(stage.index);
            let below: usize = chain.iter().skip(1).map(|s| s.layer_count()).sum();
            let mut count = below;
            for i in stage.instructions.iter().filter(|i| i.kind.creates_layer()) {
                count += 1;
                let (limit, what) = if count == MAX_LAYERS + 1 {
                    (MAX_LAYERS, Severity::Error)
                } else if count == WARN_LAYERS + 1 {
                    (WARN_LAYERS, Severity::Warning)
                } else {
                    continue;
                };
                self.push(
                    "TooManyLayers",
                    i.span,
                    format!(
                        "this {} makes layer {count} of stage {} (counting the stages it builds on, not the base image); more than {limit} layers {}",
                        i.kind.name(),
                        stage.display_name(),
                        if what == Severity::Error { "cannot be mounted by overlayfs" } else { "slows every mount and lookup" },
                    ),
                    "merge RUN instructions, or copy the result into a fresh stage to flatten",
                );
                if let Some(l) = self.out.last_mut() {
                    l.severity = what;
                }
            }
        }
    }

    fn scopes(&mut self) {
        let escape = self.df.escape();
        let builtins = platform_defaults();
        let globals = self.globals.clone();
        let declared_meta: Vec<String> = self.df.meta_arg_defs().map(|d| d.name.clone()).collect();
        let mut arg_keys: Vec<String> = declared_meta.clone();
        arg_keys.extend(PLATFORM_ARGS.iter().map(|s| s.to_string()));

        // Meta ARG defaults see the meta ARGs before them.
        let mut meta_env = Env::new();
        for name in PLATFORM_ARGS {
            if let Some(v) = builtins.lookup(name) {
                meta_env.set(name, v);
            }
        }
        let mut meta_declared: Vec<String> = Vec::new();
        for i in &self.df.meta_args {
            let InstructionKind::Arg(a) = &i.kind else {
                continue;
            };
            for def in &a.args {
                if let Some(d) = &def.default {
                    if let Ok(e) = expand_word(d, &meta_env, escape) {
                        for name in e.unset {
                            if is_identifier(&name) && !meta_declared.contains(&name) {
                                let hint = suggest(&name, &meta_declared)
                                    .map(|s| format!(" (did you mean ${s}?)"))
                                    .unwrap_or_default();
                                self.push(
                                    "UndefinedVar",
                                    i.span,
                                    format!("Usage of undefined variable '${name}'{hint}"),
                                    format!("declare `ARG {name}` before using it"),
                                );
                            }
                        }
                        meta_env.set(&def.name, &e.value);
                    }
                }
                meta_declared.push(def.name.clone());
            }
        }

        let mut finals: Vec<(StageScope, bool, bool)> = Vec::new();
        for stage in &self.df.stages {
            let f = &stage.from;
            // FROM sees only the global scope.
            for text in std::iter::once(&f.image).chain(f.platform.iter()) {
                if let Ok(e) = expand_word(text, &globals, escape) {
                    for name in &e.unset {
                        if !arg_keys.contains(name) && is_identifier(name) {
                            let hint = suggest(name, &arg_keys)
                                .map(|s| format!(" (did you mean {s}?)"))
                                .unwrap_or_default();
                            self.push(
                                "UndefinedArgInFrom",
                                stage.span,
                                format!("FROM argument '{name}' is not declared{hint}"),
                                format!("declare `ARG {name}` before the first FROM"),
                            );
                        }
                    }
                }
            }
            if let Ok(e) = expand_word(&f.image, &globals, escape) {
                if !e.referenced.is_empty() && !valid_reference(&e.value) {
                    self.push(
                        "InvalidDefaultArgInFrom",
                        stage.span,
                        format!(
                            "Default value for ARG {} results in empty or invalid base image name",
                            f.image
                        ),
                        "give the global ARG a default that makes a valid image reference",
                    );
                }
            }
            if let Some(p) = &f.platform {
                if let Ok(e) = expand_word(p, &globals, escape) {
                    if e.referenced == ["TARGETPLATFORM"] && e.unset.is_empty() {
                        self.push(
                            "RedundantTargetPlatform",
                            stage.span,
                            format!("Setting platform to predefined {p} in FROM is redundant as this is the default behavior"),
                            "drop the --platform flag",
                        );
                    }
                    if e.referenced.is_empty() {
                        let mut parts = e.value.split('/');
                        let os = parts.next().unwrap_or("");
                        let arch = parts.next().unwrap_or("");
                        let name = stage.name.as_deref().unwrap_or("");
                        let named_for_it = !name.is_empty()
                            && ((!os.is_empty() && name.contains(os))
                                || (!arch.is_empty() && name.contains(arch)));
                        if !named_for_it {
                            self.push(
                                "FromPlatformFlagConstDisallowed",
                                stage.span,
                                format!(
                                    "FROM --platform flag should not use constant value \"{}\"",
                                    e.value
                                ),
                                "use --platform=$BUILDPLATFORM or a build argument",
                            );
                        }
                    }
                }
            }

            let base = expand_word(&f.image, &globals, escape)
                .map(|e| e.value)
                .unwrap_or_default();
            let parent = self.df.stage_before(&base, stage.index);
            // Whether the chain of stages ends in an image (whose env is unknown here).
            let (mut scope, mut workdir_set, from_image) = match parent.and_then(|p| finals.get(p))
            {
                Some((s, w, img)) => (s.clone(), *w, *img),
                None => {
                    let mut env = Env::new();
                    env.set(
                        "PATH",
                        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    );
                    let image = !base.eq_ignore_ascii_case("scratch");
                    (StageScope::from_image(env), false, image)
                }
            };
            for i in &stage.instructions {
                let mut unset: Vec<String> = Vec::new();
                if let InstructionKind::Arg(a) = &i.kind {
                    for def in &a.args {
                        if let Ok(u) = scope.declare_arg(def, &NoEnv, &globals, escape) {
                            unset.extend(u);
                        }
                    }
                } else {
                    if let Ok(e) = i.expand(scope.env(), escape) {
                        unset = e.unset;
                        if let InstructionKind::Workdir(w) = &e.value.kind {
                            if is_absolute(&w.path) {
                                workdir_set = true;
                            } else if !workdir_set {
                                self.push(
                                    "WorkdirRelativePath",
                                    i.span,
                                    format!("Relative workdir \"{}\" can have unexpected results if the base image changes", w.path),
                                    "use an absolute path, or set an absolute WORKDIR first",
                                );
                            }
                        }
                    }
                    let _ = scope.apply(i, &NoEnv, &globals, escape);
                }
                for name in unset {
                    if !is_identifier(&name) || scope.is_declared_arg(&name) {
                        continue;
                    }
                    let options: Vec<&str> = scope.env().keys().collect();
                    let hint = suggest(&name, &options)
                        .map(|s| format!(" (did you mean ${s}?)"))
                        .unwrap_or_default();
                    let fix = if declared_meta.contains(&name) {
                        format!("redeclare `ARG {name}` inside the stage to use the global value")
                    } else if from_image {
                        format!("declare it with `ARG {name}` or `ENV {name}=...` before this line (if the base image sets it, add `# strata:ignore UndefinedVar`)")
                    } else {
                        format!("declare it with `ARG {name}` or `ENV {name}=...` before this line")
                    };
                    self.push(
                        "UndefinedVar",
                        i.span,
                        format!("Usage of undefined variable '${name}'{hint}"),
                        fix,
                    );
                }
            }
            finals.push((scope, workdir_set, from_image));
        }
    }
}

/// The platform arguments as a linux/amd64 build would set them.
fn platform_defaults() -> Env {
    let mut env = Env::new();
    for (k, v) in [
        ("TARGETPLATFORM", "linux/amd64"),
        ("TARGETOS", "linux"),
        ("TARGETARCH", "amd64"),
        ("TARGETVARIANT", ""),
        ("BUILDPLATFORM", "linux/amd64"),
        ("BUILDOS", "linux"),
        ("BUILDARCH", "amd64"),
        ("BUILDVARIANT", ""),
    ] {
        env.set(k, v);
    }
    env
}

/// A name a user could have meant as a variable (not `$1` or `$@`).
fn is_identifier(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

fn is_absolute(path: &str) -> bool {
    let b = path.as_bytes();
    path.starts_with('/')
        || path.starts_with('\\')
        || (b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':')
}

/// BuildKit's secret-name check: a token of `apikey auth credential(s) key password pword
/// passwd secret token`, separated by `_` or at either end, unless a `public`, `file` or
/// `version` token is also there.
fn is_secret_key(key: &str) -> bool {
    let lower = key.to_lowercase();
    // BuildKit's `(?:_|^)token(?:_|$)`: the token is one whole `_`-separated part.
    let has = |tokens: &[&str]| lower.split('_').any(|part| tokens.contains(&part));
    has(&[
        "apikey",
        "auth",
        "credential",
        "credentials",
        "key",
        "password",
        "pword",
        "passwd",
        "secret",
        "token",
    ]) && !has(&["public", "file", "version"])
}

/// A loose check of an image reference as `reference.ParseNormalizedNamed` accepts it.
fn valid_reference(r: &str) -> bool {
    if r.is_empty() {
        return false;
    }
    let (name, digest) = match r.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (r, None),
    };
    if let Some(d) = digest {
        let Some((alg, hex)) = d.split_once(':') else {
            return false;
        };
        if alg.is_empty()
            || hex.len() < 32
            || !hex
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "=_-".contains(c))
        {
            return false;
        }
    }
    // A tag follows the last ':' after the last '/'.
    let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    if let Some(t) = tag {
        let mut cs = t.chars();
        let first_ok = cs
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        if !first_ok || t.len() > 128 || !cs.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        {
            return false;
        }
    }
    let mut parts: Vec<&str> = repo.split('/').collect();
    if parts.len() > 1 {
        let first = parts[0];
        if first.contains('.')
            || first.contains(':')
            || first == "localhost"
            || first != first.to_lowercase()
        {
            let (host, port) = first.split_once(':').unwrap_or((first, ""));
            if host.is_empty()
                || !host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                || !port.chars().all(|c| c.is_ascii_digit())
            {
                return false;
            }
            parts.remove(0);
        }
    }
    parts.iter().all(|p| {
        !p.is_empty()
            && p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .last()
                .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
            && p.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    })
}

/// The package-index update a RUN performs without installing anything, if any.
fn update_without_install(run: &RunCommand) -> Option<String> {
    let mut text = match &run.command {
        CommandLine::Shell(s) => s.clone(),
        CommandLine::Exec(v) => v.join(" "),
    };
    for h in &run.heredocs {
        text.push('\n');
        text.push_str(&h.content);
    }
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')' | '`'))
        .filter(|w| !w.is_empty())
        .collect();
    let mut update: Option<String> = None;
    let mut install = false;
    for (idx, w) in words.iter().enumerate() {
        let path_tail = w.rsplit('/').next().unwrap_or(w);
        // Wrappers such as xx-apt-get (cross-compilation helpers) behave like the tool.
        let tool = [
            "apt-get", "apt", "aptitude", "apk", "yum", "dnf", "microdnf", "tdnf", "zypper",
        ]
        .into_iter()
        .find(|t| {
            path_tail
                .strip_suffix(t)
                .is_some_and(|p| p.is_empty() || p.ends_with('-'))
        })
        .unwrap_or(path_tail);
        let (updates, installs): (&[&str], &[&str]) = match tool {
            "apt-get" | "apt" | "aptitude" => (
                &["update"],
                &[
                    "install",
                    "upgrade",
                    "dist-upgrade",
                    "full-upgrade",
                    "build-dep",
                    "reinstall",
                ],
            ),
            "apk" => (&["update"], &["add", "upgrade", "fix"]),
            "yum" | "dnf" | "microdnf" | "tdnf" => (
                &["makecache", "check-update"],
                &[
                    "install",
                    "update",
                    "upgrade",
                    "groupinstall",
                    "reinstall",
                    "distro-sync",
                ],
            ),
            "zypper" => (
                &["refresh", "ref"],
                &[
                    "install",
                    "in",
                    "update",
                    "up",
                    "dist-upgrade",
                    "dup",
                    "patch",
                ],
            ),
            _ => continue,
        };
        // The subcommand is the first word after the tool that is not an option.
        let Some(sub) = words[idx + 1..].iter().find(|w| !w.starts_with('-')) else {
            continue;
        };
        if updates.contains(sub) && update.is_none() {
            update = Some(format!("{tool} {sub}"));
        }
        if installs.contains(sub) {
            install = true;
        }
    }
    if install {
        None
    } else {
        update
    }
}

/// Two adjacent RUNs that one RUN could replace: both shell form, no heredocs, and the
/// same mounts, network and security options.
fn can_join(a: &Instruction, b: &Instruction) -> bool {
    let (InstructionKind::Run(x), InstructionKind::Run(y)) = (&a.kind, &b.kind) else {
        return false;
    };
    let raws = |r: &RunCommand| r.mounts.iter().map(|m| m.raw.clone()).collect::<Vec<_>>();
    x.command.is_shell()
        && y.command.is_shell()
        && x.heredocs.is_empty()
        && y.heredocs.is_empty()
        && raws(x) == raws(y)
        && x.network == y.network
        && x.security == y.security
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(src: &str) -> Vec<(&'static str, usize)> {
        lint_source(src)
            .unwrap()
            .into_iter()
            .map(|l| (l.rule, l.span.start_line))
            .collect()
    }

    #[test]
    fn secret_names() {
        for k in [
            "API_KEY",
            "password",
            "GITHUB_TOKEN",
            "secret_message",
            "AUTH",
            "db_passwd",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "KEYBOARD",
            "PUBLIC_KEY",
            "TOKEN_FILE",
            "MONKEY",
            "GPG_KEYS",
            "VERSION_KEY",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn references() {
        for r in [
            "alpine",
            "alpine:3.19",
            "docker.io/library/alpine:3",
            "localhost:5000/x/y:z",
            "golang@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "scratch",
            "builder",
        ] {
            assert!(valid_reference(r), "{r}");
        }
        for r in ["", "alpine:", "Alpine", "a b", ":tag", "x//y"] {
            assert!(!valid_reference(r), "{r}");
        }
    }

    #[test]
    fn update_detection() {
        let run = |s: &str| {
            let df = crate::parse(&format!("FROM x\nRUN {s}")).unwrap();
            match &df.stages[0].instructions[0].kind {
                InstructionKind::Run(r) => update_without_install(r),
                _ => None,
            }
        };
        assert_eq!(run("apt-get update").as_deref(), Some("apt-get update"));
        assert_eq!(
            run("apt-get -q update && rm -rf /var/lib/apt/lists/*").as_deref(),
            Some("apt-get update")
        );
        assert_eq!(run("apt-get update && apt-get install -y curl"), None);
        assert_eq!(run("apk update"), Some("apk update".into()));
        assert_eq!(run("apk add --no-cache curl"), None);
        assert_eq!(run("yum makecache").as_deref(), Some("yum makecache"));
        assert_eq!(run("echo update"), None);
        assert_eq!(run("apt-get update && xx-apt-get install -y gcc"), None);
    }

    #[test]
    fn ignore_comments_and_check_directive() {
        assert!(rules("FROM x\nMAINTAINER me").contains(&("MaintainerDeprecated", 2)));
        assert!(
            !rules("FROM x\n# strata:ignore MaintainerDeprecated\nMAINTAINER me")
                .contains(&("MaintainerDeprecated", 3))
        );
        assert!(rules("FROM x\n# strata:ignore\nMAINTAINER me").is_empty());
        assert!(rules("# check=skip=MaintainerDeprecated\nFROM x\nMAINTAINER me").is_empty());
        assert!(rules("# check=skip=all\nFROM x\nMAINTAINER me").is_empty());
        let l = lint_source("# check=error=true\nFROM x\nMAINTAINER me").unwrap();
        assert_eq!(l[0].severity, Severity::Error);
        // A blank line between the comment and the instruction breaks the link.
        assert!(rules("FROM x\n# strata:ignore\n\nMAINTAINER me")
            .contains(&("MaintainerDeprecated", 4)));
    }

    #[test]
    fn outside_checks_ask_whether_they_are_silenced() {
        let df = crate::parse(
            "# check=skip=UnusedBuildArg\nFROM x\n# strata:ignore BaseImageNotFound\nFROM y\nRUN a\n",
        )
        .unwrap();
        assert!(is_silenced(&df, "UnusedBuildArg", 0));
        assert!(is_silenced(&df, "BaseImageNotFound", 4));
        assert!(!is_silenced(&df, "BaseImageNotFound", 2));
        assert!(!is_silenced(&df, "TooManyLayers", 4));
        let all = crate::parse("FROM x\n# strata:ignore\nRUN a\n").unwrap();
        assert!(is_silenced(&all, "Anything", 3));
        assert!(!is_silenced(&all, "Anything", 1));
    }

    #[test]
    fn layer_limits() {
        let mut src = String::from("FROM scratch AS a\n");
        for i in 0..90 {
            src.push_str(&format!("COPY f{i} /\n"));
        }
        src.push_str("FROM a\n");
        for i in 0..40 {
            src.push_str(&format!("COPY g{i} /\n"));
        }
        let l = lint_source(&src).unwrap();
        let layers: Vec<(Severity, usize)> = l
            .iter()
            .filter(|l| l.rule == "TooManyLayers")
            .map(|l| (l.severity, l.span.start_line))
            .collect();
        // Layer 101 is the 11th COPY of stage 2 (line 92 + 11), layer 129 the 39th.
        assert_eq!(
            layers,
            vec![(Severity::Warning, 103), (Severity::Error, 131)]
        );
    }
}
