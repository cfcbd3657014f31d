//! Findings: what in the layers costs bytes for nothing, which instruction did it, and the
//! one-line change that avoids it.
//!
//! Rules look at the final accounting only (which bytes are visible, which were hidden by
//! which layer, which are copies), and at paths:
//! - caches of package managers and `/tmp` left in the final image;
//! - files deleted by a later layer than the one that created them (by a RUN, or copied in by
//!   COPY/ADD);
//! - build tools (compilers, make, headers, toolchains) a multi-stage build would leave behind;
//! - the same bytes stored twice: rewritten at the same path (chmod/chown), or copied to
//!   another path in a later layer.

use std::collections::BTreeMap;

use serde::Serialize;

use super::paths::{shown, How, Object, PathBytes, PathMap};
use super::source::SourceLine;
use super::{AnalyzeOptions, LayerReport};

/// What a finding is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// A package manager's cache or downloaded lists left in the image.
    PackageCache,
    /// Files left in `/tmp` or `/var/tmp`.
    TmpLeftovers,
    /// Files a RUN created and a later layer deleted: the bytes stay in the first layer.
    DeletedLater,
    /// Files COPY/ADD brought in and a later layer deleted.
    CopiedThenRemoved,
    /// Compilers, build systems, headers or toolchains in the final image.
    BuildTools,
    /// Files a later layer stored again with the same contents at the same path (chmod,
    /// chown, touch copy the whole file up).
    MetadataRewrite,
    /// Files whose exact bytes an earlier layer already holds at another path.
    DuplicateFiles,
}

impl Rule {
    /// The rule's id, as printed and in JSON (`deleted-later`).
    pub fn id(self) -> &'static str {
        match self {
            Rule::PackageCache => "package-cache",
            Rule::TmpLeftovers => "tmp-leftovers",
            Rule::DeletedLater => "deleted-later",
            Rule::CopiedThenRemoved => "copied-then-removed",
            Rule::BuildTools => "build-tools",
            Rule::MetadataRewrite => "metadata-rewrite",
            Rule::DuplicateFiles => "duplicate-files",
        }
    }
}

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth fixing: the image is bigger than it needs to be for a known reason.
    Warning,
    /// Small or a matter of taste.
    Info,
}

impl Severity {
    /// `warning` or `info`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One finding, tied to the layer that holds the bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The rule.
    pub rule: Rule,
    /// How much it matters.
    pub severity: Severity,
    /// The layer (1-based) that holds the bytes.
    pub layer: usize,
    /// The other layer involved: the one that deleted or rewrote the files, or (duplicates)
    /// the one that already held them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_layer: Option<usize>,
    /// The Dockerfile line of `layer`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceLine>,
    /// The Dockerfile line of `related_layer`, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub related_source: Option<SourceLine>,
    /// Bytes involved.
    pub bytes: u64,
    /// How many paths.
    pub path_count: usize,
    /// The largest of them (at most 5), absolute.
    pub paths: Vec<String>,
    /// What is wrong, naming the instructions.
    pub message: String,
    /// The one-line fix.
    pub fix: String,
}

/// Paths shown per finding.
const PATHS_SHOWN: usize = 5;

/// A cache or scratch folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Cache {
    AptLists,
    AptArchives,
    Apk,
    Dnf,
    Pip,
    Npm,
    Home,
    Tmp,
}

/// The cache `path` is inside, with that cache's folder (`root/.cache/pip`).
fn cache_of(path: &[u8]) -> Option<(Cache, &[u8])> {
    const FIXED: [(&[u8], Cache); 8] = [
        (b"var/lib/apt/lists", Cache::AptLists),
        (b"var/cache/apt", Cache::AptArchives),
        (b"var/cache/apk", Cache::Apk),
        (b"etc/apk/cache", Cache::Apk),
        (b"var/cache/dnf", Cache::Dnf),
        (b"var/cache/yum", Cache::Dnf),
        (b"tmp", Cache::Tmp),
        (b"var/tmp", Cache::Tmp),
    ];
    let under =
        |dir: &[u8]| path.len() > dir.len() + 1 && path.starts_with(dir) && path[dir.len()] == b'/';
    for (dir, cache) in FIXED {
        if under(dir) {
            return Some((cache, &path[..dir.len()]));
        }
    }
    // Home folders: /root and /home/<user>.
    let home_len = if path.starts_with(b"root/") {
        4
    } else if let Some(rest) = path.strip_prefix(b"home/") {
        5 + rest.iter().position(|b| *b == b'/')?
    } else {
        return None;
    };
    let rest = &path[home_len + 1..];
    const IN_HOME: [(&[u8], Cache); 3] = [
        (b".cache/pip", Cache::Pip),
        (b".npm", Cache::Npm),
        (b".cache", Cache::Home),
    ];
    for (dir, cache) in IN_HOME {
        if rest.len() > dir.len() + 1 && rest.starts_with(dir) && rest[dir.len()] == b'/' {
            return Some((cache, &path[..home_len + 1 + dir.len()]));
        }
    }
    None
}

impl Cache {
    fn what(self) -> &'static str {
        match self {
            Cache::AptLists => "apt package lists",
            Cache::AptArchives => "apt's package cache",
            Cache::Apk => "apk's package cache",
            Cache::Dnf => "dnf/yum's package cache",
            Cache::Pip => "pip's download cache",
            Cache::Npm => "npm's cache",
            Cache::Home => "a user cache",
            Cache::Tmp => "temporary files",
        }
    }

    /// The fix when the cache is still in the image, made by a RUN.
    fn fix_left(self, dir: &str) -> String {
        match self {
            Cache::AptLists => "end this RUN with `&& rm -rf /var/lib/apt/lists/*` (in the same RUN as `apt-get update`)".into(),
            Cache::AptArchives => "end this RUN with `&& apt-get clean`, or use `RUN --mount=type=cache,target=/var/cache/apt`".into(),
            Cache::Apk => "use `apk add --no-cache` (or end this RUN with `&& rm -rf /var/cache/apk/*`)".into(),
            Cache::Dnf => "end this RUN with `&& dnf clean all` (`yum clean all`)".into(),
            Cache::Pip => "use `pip install --no-cache-dir`, or `RUN --mount=type=cache,target=/root/.cache/pip`".into(),
            Cache::Npm => "end this RUN with `&& npm cache clean --force`, or use `RUN --mount=type=cache,target=/root/.npm`".into(),
            Cache::Home => format!("keep the cache out of the layer with `RUN --mount=type=cache,target={dir}`, or end this RUN with `&& rm -rf {dir}`"),
            Cache::Tmp => format!("delete them in the RUN that creates them (`&& rm -rf {dir}/*`), or use `RUN --mount=type=tmpfs,target={dir}`"),
        }
    }

    /// The fix when a later layer deletes what a RUN left.
    fn fix_deleted(self, dir: &str) -> String {
        match self {
            Cache::AptLists => "delete them in the same RUN: `RUN apt-get update && apt-get install -y ... && rm -rf /var/lib/apt/lists/*`".into(),
            Cache::AptArchives => "clean in the same RUN: `RUN apt-get install -y ... && apt-get clean`".into(),
            Cache::Apk => "use `apk add --no-cache` in the RUN that installs, instead of deleting the cache later".into(),
            Cache::Dnf => "clean in the same RUN: `RUN dnf install -y ... && dnf clean all`".into(),
            Cache::Pip => "use `pip install --no-cache-dir` in the RUN that installs, instead of deleting the cache later".into(),
            Cache::Npm => "delete it in the same RUN: `RUN npm ci && npm cache clean --force`".into(),
            Cache::Home => format!("delete it in the same RUN that creates it (`... && rm -rf {dir}`), or use `RUN --mount=type=cache,target={dir}`"),
            Cache::Tmp => format!("delete them in the same RUN that creates them (`... && rm -rf {dir}/*`), or use `RUN --mount=type=tmpfs,target={dir}`"),
        }
    }
}

/// A kind of build tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Tool {
    CCompiler,
    Make,
    Linker,
    Headers,
    Go,
    Rust,
    Jdk,
}

impl Tool {
    fn what(self) -> &'static str {
        match self {
            Tool::CCompiler => "C/C++ compiler",
            Tool::Make => "build system (make/cmake)",
            Tool::Linker => "assembler/linker",
            Tool::Headers => "headers and static libraries (-dev packages)",
            Tool::Go => "Go toolchain",
            Tool::Rust => "Rust toolchain",
            Tool::Jdk => "JDK compiler (javac)",
        }
    }
}

fn tool_of(path: &[u8]) -> Option<Tool> {
    let starts = |dir: &[u8]| path.starts_with(dir);
    if starts(b"usr/include/") || starts(b"usr/local/include/") {
        return Some(Tool::Headers);
    }
    // Static libraries and pkg-config files come with -dev packages, not with programs.
    if (starts(b"usr/lib/") || starts(b"usr/local/lib/") || starts(b"lib/"))
        && (path.ends_with(b".a") || path.ends_with(b".pc"))
    {
        return Some(Tool::Headers);
    }
    if starts(b"usr/lib/gcc/") || starts(b"usr/libexec/gcc/") {
        return Some(Tool::CCompiler);
    }
    if let Some(rest) = path.strip_prefix(b"usr/lib/llvm") {
        if rest.first().is_some_and(|b| *b == b'-' || *b == b'/') {
            return Some(Tool::CCompiler);
        }
    }
    if starts(b"usr/local/go/") || starts(b"usr/lib/go/") {
        return Some(Tool::Go);
    }
    if let Some(rest) = path.strip_prefix(b"usr/lib/go-") {
        if rest.contains(&b'/') {
            return Some(Tool::Go);
        }
    }
    if starts(b"usr/local/rustup/")
        || starts(b"usr/local/cargo/")
        || starts(b"root/.rustup/")
        || starts(b"root/.cargo/")
    {
        return Some(Tool::Rust);
    }
    let (dir, name) = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => return None,
    };
    if name == b"javac" && dir.ends_with(b"/bin") {
        return Some(Tool::Jdk);
    }
    if dir != b"usr/bin" && dir != b"usr/local/bin" && dir != b"bin" {
        return None;
    }
    let name = std::str::from_utf8(name).ok()?;
    // `x86_64-linux-gnu-gcc-12` -> `gcc-12`: a target triple prefix has three parts.
    let tool = match name.splitn(4, '-').collect::<Vec<_>>().as_slice() {
        [_, _, "gnu" | "musl" | "gnueabihf" | "linux", rest] => *rest,
        _ => name,
    };
    let base = tool.split('-').next().unwrap_or(tool);
    match base {
        "gcc" | "g++" | "cc" | "c++" | "clang" | "clang++" | "cc1" | "cc1plus" => {
            Some(Tool::CCompiler)
        }
        "make" | "cmake" | "ninja" | "automake" | "autoconf" | "gmake" => Some(Tool::Make),
        "ld" | "ld.bfd" | "ld.gold" | "ld.lld" | "as" => Some(Tool::Linker),
        _ => None,
    }
}

/// Sizes in messages, as `docker images` prints them (`5.5MB`).
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 999.5 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    let decimals = if value >= 99.95 {
        0
    } else if value >= 9.995 {
        1
    } else {
        2
    };
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text}{}", UNITS[unit])
}

/// At most `max` characters, with `…` when cut.
pub(crate) fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// `layer 2 `RUN apt-get update` (Dockerfile:3)`.
pub(crate) fn name_layer(l: &LayerReport) -> String {
    let mut s = format!("layer {}", l.index);
    if let Some(i) = &l.instruction {
        let text = i.display();
        if !text.is_empty() {
            s.push_str(&format!(" `{}`", shorten(&text, 60)));
        }
    }
    if let Some(src) = &l.source {
        s.push_str(&format!(" ({src})"));
    }
    s
}

/// The deepest folder holding all `paths` (`/var/lib/apt/lists/`), or the one path itself.
fn common_dir(paths: &[&[u8]]) -> String {
    let Some((first, rest)) = paths.split_first() else {
        return "/".into();
    };
    if rest.is_empty() {
        return shown(first);
    }
    let mut common: Vec<&[u8]> = first.split(|b| *b == b'/').collect();
    common.pop(); // the file name
    for p in rest {
        let parts: Vec<&[u8]> = p.split(|b| *b == b'/').collect();
        let same = common
            .iter()
            .zip(&parts[..parts.len().saturating_sub(1)])
            .take_while(|(a, b)| a == b)
            .count();
        common.truncate(same);
    }
    if common.is_empty() {
        return "/".into();
    }
    format!("{}/", shown(&common.join(&b'/')))
}

/// `/var/lib/apt/lists/ (3 files, 5.5MB)`.
fn what_files(paths: &[&[u8]], bytes: u64) -> String {
    let n = paths.len();
    let files = if n == 1 {
        "1 file".to_string()
    } else {
        format!("{n} files")
    };
    format!("{} ({files}, {})", common_dir(paths), size(bytes))
}

/// A group of objects and the paths to show.
struct Group<'a> {
    objects: Vec<&'a Object>,
    bytes: u64,
}

impl<'a> Group<'a> {
    fn new() -> Group<'a> {
        Group {
            objects: Vec::new(),
            bytes: 0,
        }
    }

    fn add(&mut self, o: &'a Object) {
        self.bytes += o.size;
        self.objects.push(o);
    }

    fn paths(&self) -> Vec<&'a [u8]> {
        self.objects.iter().map(|o| &o.path[..]).collect()
    }

    fn largest(&self) -> Vec<String> {
        let mut v: Vec<&&Object> = self.objects.iter().collect();
        v.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
        v.iter().take(PATHS_SHOWN).map(|o| shown(&o.path)).collect()
    }

    /// The single cache every path is in, if there is one.
    fn one_cache(&self) -> Option<(Cache, PathBytes)> {
        let mut found: Option<(Cache, &[u8])> = None;
        for o in &self.objects {
            let c = cache_of(&o.path)?;
            match found {
                None => found = Some(c),
                Some(f) if f == c => {}
                Some(_) => return None,
            }
        }
        found.map(|(c, d)| (c, d.into()))
    }
}

/// Everything the rules read.
pub(crate) struct Context<'a> {
    pub map: &'a PathMap,
    pub layers: &'a [LayerReport],
    pub duplicates: &'a [(usize, usize)],
    pub options: &'a AnalyzeOptions<'a>,
}

impl Context<'_> {
    fn finding(
        &self,
        rule: Rule,
        severity: Severity,
        (layer, related): (usize, Option<usize>),
        group: &Group<'_>,
        message: String,
        fix: String,
    ) -> Finding {
        Finding {
            rule,
            severity,
            layer: layer + 1,
            related_layer: related.map(|r| r + 1),
            source: self.layers[layer].source.clone(),
            related_source: related.and_then(|r| self.layers[r].source.clone()),
            bytes: group.bytes,
            path_count: group.objects.len(),
            paths: group.largest(),
            message,
            fix,
        }
    }

    fn by_size(&self, bytes: u64) -> Severity {
        if bytes >= self.options.large_bytes {
            Severity::Warning
        } else {
            Severity::Info
        }
    }

    fn is_copy(&self, layer: usize) -> bool {
        self.layers[layer]
            .instruction
            .as_ref()
            .is_some_and(|i| i.is_copy())
    }
}

/// Every finding, most important first.
pub(crate) fn findings(cx: &Context<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    left_caches(cx, &mut out);
    deleted_later(cx, &mut out);
    build_tools(cx, &mut out);
    rewrites(cx, &mut out);
    duplicates(cx, &mut out);
    out.sort_by(|a, b| {
        a.severity
            .cmp(&b.severity)
            .then(b.bytes.cmp(&a.bytes))
            .then(a.layer.cmp(&b.layer))
            .then(a.rule.cmp(&b.rule))
            .then(a.paths.cmp(&b.paths))
    });
    out
}

fn left_caches(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(usize, Cache, PathBytes), Group<'_>> = BTreeMap::new();
    for (_, o) in cx.map.live_objects() {
        if o.size == 0 {
            continue;
        }
        if let Some((cache, dir)) = cache_of(&o.path) {
            groups
                .entry((o.layer, cache, dir.into()))
                .or_insert_with(Group::new)
                .add(o);
        }
    }
    for ((layer, cache, dir), g) in groups {
        let dir = shown(&dir);
        let made = name_layer(&cx.layers[layer]);
        let message = format!(
            "{} of {} left in the image by {made}",
            cache.what(),
            what_files(&g.paths(), g.bytes)
        );
        let (rule, severity) = match cache {
            Cache::Tmp => (Rule::TmpLeftovers, Severity::Info),
            _ => (Rule::PackageCache, Severity::Warning),
        };
        let fix = if cx.is_copy(layer) {
            format!(
                "keep {dir} out of what is copied (a .dockerignore entry, or a narrower source)"
            )
        } else {
            cache.fix_left(&dir)
        };
        out.push(cx.finding(rule, severity, (layer, None), &g, capitalise(message), fix));
    }
}

fn deleted_later(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(usize, usize), Group<'_>> = BTreeMap::new();
    for o in &cx.map.objects {
        if let Some(f) = o.fate {
            if f.how == How::Deleted && o.size > 0 && f.by != o.layer {
                groups
                    .entry((o.layer, f.by))
                    .or_insert_with(Group::new)
                    .add(o);
            }
        }
    }
    for ((layer, by), g) in groups {
        let what = what_files(&g.paths(), g.bytes);
        let made = name_layer(&cx.layers[layer]);
        let removed = name_layer(&cx.layers[by]);
        let stays = format!(
            "deleting in a later layer frees nothing: the bytes stay in layer {}",
            layer + 1
        );
        if cx.is_copy(layer) {
            let message = format!("{what} copied in by {made} and deleted by {removed}; {stays}");
            let fix = "don't copy them: exclude them in .dockerignore or copy only what is needed; to use files without keeping them, `RUN --mount=type=bind,source=...` or a build stage".to_string();
            let severity = cx.by_size(g.bytes);
            out.push(cx.finding(
                Rule::CopiedThenRemoved,
                severity,
                (layer, Some(by)),
                &g,
                capitalise(message),
                fix,
            ));
        } else {
            let message = format!("{what} created by {made} and deleted by {removed}; {stays}");
            let common = common_dir(&g.paths());
            let fix = match g.one_cache() {
                Some((cache, dir)) => cache.fix_deleted(&shown(&dir)),
                None => format!(
                    "delete it in the same RUN that creates it (`... && rm -rf {}`), or create it in a build stage and copy only the results",
                    common.trim_end_matches('/')
                ),
            };
            out.push(cx.finding(
                Rule::DeletedLater,
                Severity::Warning,
                (layer, Some(by)),
                &g,
                capitalise(message),
                fix,
            ));
        }
    }
}

fn build_tools(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<usize, (Group<'_>, BTreeMap<Tool, u64>)> = BTreeMap::new();
    for (_, o) in cx.map.live_objects() {
        if let Some(tool) = tool_of(&o.path) {
            let (g, tools) = groups
                .entry(o.layer)
                .or_insert_with(|| (Group::new(), BTreeMap::new()));
            g.add(o);
            *tools.entry(tool).or_default() += o.size;
        }
    }
    for (layer, (g, tools)) in groups {
        if g.bytes == 0 {
            continue;
        }
        let list: Vec<String> = tools
            .iter()
            .map(|(t, b)| format!("{} {}", t.what(), size(*b)))
            .collect();
        let message = format!(
            "{} leaves build tools in the final image: {} ({} files, {})",
            name_layer(&cx.layers[layer]),
            list.join(", "),
            g.objects.len(),
            size(g.bytes)
        );
        let fix = "use a multi-stage build: compile in a `FROM ... AS build` stage and `COPY --from=build` only the results into a final stage without build tools".to_string();
        out.push(cx.finding(
            Rule::BuildTools,
            Severity::Warning,
            (layer, None),
            &g,
            capitalise(message),
            fix,
        ));
    }
}

fn rewrites(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut groups: BTreeMap<(usize, usize), Group<'_>> = BTreeMap::new();
    for o in &cx.map.objects {
        if let Some(f) = o.fate {
            if f.how == How::Rewritten && o.size > 0 && f.by != o.layer {
                groups
                    .entry((o.layer, f.by))
                    .or_insert_with(Group::new)
                    .add(o);
            }
        }
    }
    for ((layer, by), g) in groups {
        let message = format!(
            "{} stores {} of {} again with the same contents (changing owner, mode or time copies the whole file into the new layer)",
            name_layer(&cx.layers[by]),
            what_files(&g.paths(), g.bytes),
            name_layer(&cx.layers[layer]),
        );
        let fix = if cx.is_copy(layer) {
            "set owner and mode while copying (`COPY --chown=... --chmod=...`) instead of a later chown/chmod".to_string()
        } else {
            "change owner and mode in the RUN that creates the files, not in a later one"
                .to_string()
        };
        let severity = cx.by_size(g.bytes);
        out.push(cx.finding(
            Rule::MetadataRewrite,
            severity,
            (layer, Some(by)),
            &g,
            capitalise(message),
            fix,
        ));
    }
}

/// (duplicating layer, original layer) -> the copies, with (copy, original) object pairs.
type DuplicateGroups<'a> = BTreeMap<(usize, usize), (Group<'a>, Vec<(usize, usize)>)>;

fn duplicates(cx: &Context<'_>, out: &mut Vec<Finding>) {
    let mut groups: DuplicateGroups<'_> = BTreeMap::new();
    for &(dup, orig) in cx.duplicates {
        let (d, o) = (&cx.map.objects[dup], &cx.map.objects[orig]);
        let (g, pairs) = groups
            .entry((d.layer, o.layer))
            .or_insert_with(|| (Group::new(), Vec::new()));
        g.add(d);
        pairs.push((dup, orig));
    }
    for ((layer, first), (g, pairs)) in groups {
        let example = pairs
            .iter()
            .max_by_key(|(d, _)| cx.map.objects[*d].size)
            .map(|(d, o)| {
                format!(
                    " (e.g. {} = {})",
                    shown(&cx.map.objects[*d].path),
                    shown(&cx.map.objects[*o].path)
                )
            })
            .unwrap_or_default();
        let message = format!(
            "{} in {} are byte-for-byte copies of files {} already holds{example}",
            what_files(&g.paths(), g.bytes),
            name_layer(&cx.layers[layer]),
            name_layer(&cx.layers[first]),
        );
        let fix = "store the bytes once: copy the files to one place (or link them) instead of copying them again in a later step".to_string();
        let severity = cx.by_size(g.bytes);
        out.push(cx.finding(
            Rule::DuplicateFiles,
            severity,
            (layer, Some(first)),
            &g,
            capitalise(message),
            fix,
        ));
    }
}

fn capitalise(s: String) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_are_recognised_with_their_folder() {
        let c = |p: &str| {
            cache_of(p.as_bytes()).map(|(c, d)| (c, String::from_utf8(d.to_vec()).unwrap()))
        };
        assert_eq!(
            c("var/lib/apt/lists/x_Packages"),
            Some((Cache::AptLists, "var/lib/apt/lists".into()))
        );
        assert_eq!(
            c("var/lib/apt/lists"),
            None,
            "the folder itself is no file of the cache"
        );
        assert_eq!(c("var/lib/apt/listsx/a"), None);
        assert_eq!(
            c("root/.cache/pip/http/a"),
            Some((Cache::Pip, "root/.cache/pip".into()))
        );
        assert_eq!(
            c("home/app/.cache/pip/x"),
            Some((Cache::Pip, "home/app/.cache/pip".into()))
        );
        assert_eq!(
            c("home/app/.cache/go-build/x"),
            Some((Cache::Home, "home/app/.cache".into()))
        );
        assert_eq!(
            c("root/.npm/_cacache/x"),
            Some((Cache::Npm, "root/.npm".into()))
        );
        assert_eq!(c("tmp/build.log"), Some((Cache::Tmp, "tmp".into())));
        assert_eq!(
            c("var/cache/apk/APKINDEX.tar.gz"),
            Some((Cache::Apk, "var/cache/apk".into()))
        );
        assert_eq!(c("home/app"), None);
        assert_eq!(c("home/app/.bashrc"), None);
        assert_eq!(c("usr/tmp/x"), None);
    }

    #[test]
    fn build_tools_are_recognised_by_path() {
        let t = |p: &str| tool_of(p.as_bytes());
        assert_eq!(t("usr/bin/gcc-12"), Some(Tool::CCompiler));
        assert_eq!(t("usr/bin/x86_64-linux-gnu-gcc-12"), Some(Tool::CCompiler));
        assert_eq!(t("usr/bin/x86_64-linux-gnu-ld.bfd"), Some(Tool::Linker));
        assert_eq!(t("usr/bin/make"), Some(Tool::Make));
        assert_eq!(
            t("usr/lib/gcc/x86_64-linux-gnu/12/cc1"),
            Some(Tool::CCompiler)
        );
        assert_eq!(t("usr/include/stdio.h"), Some(Tool::Headers));
        assert_eq!(t("usr/lib/x86_64-linux-gnu/libssl.a"), Some(Tool::Headers));
        assert_eq!(
            t("usr/lib/x86_64-linux-gnu/pkgconfig/zlib.pc"),
            Some(Tool::Headers)
        );
        assert_eq!(t("usr/lib/x86_64-linux-gnu/libssl.so.3"), None);
        assert_eq!(t("usr/share/doc/x.a"), None);
        assert_eq!(t("usr/local/go/bin/go"), Some(Tool::Go));
        assert_eq!(t("usr/lib/go-1.19/bin/go"), Some(Tool::Go));
        assert_eq!(t("usr/lib/jvm/java-17/bin/javac"), Some(Tool::Jdk));
        assert_eq!(t("usr/lib/llvm-15/bin/clang"), Some(Tool::CCompiler));
        assert_eq!(t("usr/bin/gcov-dump"), None);
        assert_eq!(t("usr/bin/makedepend-helper"), None);
        assert_eq!(t("usr/bin/ash"), None);
        assert_eq!(t("usr/lib/golang-doc"), None);
        assert_eq!(t("bin/sh"), None);
        assert_eq!(t("gcc"), None);
    }

    #[test]
    fn sizes_read_like_docker() {
        assert_eq!(size(0), "0B");
        assert_eq!(size(999), "999B");
        assert_eq!(size(1000), "1kB");
        assert_eq!(size(5_500_000), "5.5MB");
        assert_eq!(size(12_345_678), "12.3MB");
        assert_eq!(size(123_456_789), "123MB");
        assert_eq!(size(999_999), "1MB");
    }

    #[test]
    fn common_folders_and_shortening() {
        let p = |v: &[&str]| common_dir(&v.iter().map(|s| s.as_bytes()).collect::<Vec<_>>());
        assert_eq!(
            p(&["var/lib/apt/lists/a", "var/lib/apt/lists/b"]),
            "/var/lib/apt/lists/"
        );
        assert_eq!(
            p(&["var/lib/apt/lists/a", "var/lib/apt/lists/partial/b"]),
            "/var/lib/apt/lists/"
        );
        assert_eq!(p(&["etc/a", "usr/b"]), "/");
        assert_eq!(p(&["etc/a"]), "/etc/a");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
