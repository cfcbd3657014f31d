//! Raw node -> typed instruction: flag validation, arity checks and typed readings.

use std::time::Duration;

use crate::ast::{locate, KeywordBuf, Node};
use crate::duration::parse_go_duration;
use crate::error::ParseError;
use crate::heredoc::{chomp_tabs, parse_heredoc_word, Heredoc};
use crate::instructions::*;
use crate::mount::parse_mount;
use crate::suggest::suggest;

/// Convert one node, moving its text into the instruction. `src` is the whole file (to
/// point errors at the offending text).
pub(crate) fn convert(mut node: Node, src: &str) -> Result<Instruction, ParseError> {
    let heredocs = std::mem::take(&mut node.heredocs);
    convert_with_heredocs(node, src, heredocs)
}

fn convert_with_heredocs(
    mut node: Node,
    src: &str,
    heredocs: Vec<Heredoc>,
) -> Result<Instruction, ParseError> {
    let args = std::mem::take(&mut node.args);
    let child = node.child.take();
    let kind = convert_kind(&node, src, args, child, heredocs)?;
    Ok(Instruction {
        kind,
        keyword: node.keyword,
        span: node.span,
        original: node.original,
        comments: node.comments,
    })
}

fn convert_kind(
    node: &Node,
    src: &str,
    args: Vec<String>,
    child: Option<Box<Node>>,
    heredocs: Vec<Heredoc>,
) -> Result<InstructionKind, ParseError> {
    let mut cx = Cx {
        node,
        src,
        args,
        child,
        heredocs,
    };
    let key = KeywordBuf::new(&node.keyword);
    let kw = key.as_str();
    let kind = match kw {
        "from" => InstructionKind::From(cx.from()?),
        "run" => InstructionKind::Run(cx.run()?),
        "cmd" => {
            cx.flags(&[])?;
            InstructionKind::Cmd(CmdCommand {
                command: cx.command_line(),
            })
        }
        "entrypoint" => {
            cx.flags(&[])?;
            InstructionKind::Entrypoint(EntrypointCommand {
                command: cx.command_line(),
            })
        }
        "shell" => {
            cx.flags(&[])?;
            if cx.args.is_empty() {
                return Err(cx.invalid(
                    "SHELL requires at least one argument",
                    &node.original,
                    "SHELL [\"executable\", \"parameters\"]",
                ));
            }
            if !node.json {
                return Err(cx.invalid(
                    "SHELL requires the arguments to be in JSON form",
                    &node.original,
                    "SHELL [\"executable\", \"parameters\"]",
                ));
            }
            InstructionKind::Shell(ShellCommand {
                shell: std::mem::take(&mut cx.args),
            })
        }
        "label" => InstructionKind::Label(LabelCommand {
            labels: cx.key_values()?,
        }),
        "env" => InstructionKind::Env(EnvCommand {
            vars: cx.key_values()?,
        }),
        "expose" => InstructionKind::Expose(cx.expose()?),
        "arg" => InstructionKind::Arg(cx.arg()?),
        "add" => InstructionKind::Add(cx.add()?),
        "copy" => InstructionKind::Copy(cx.copy()?),
        "volume" => {
            cx.flags(&[])?;
            cx.at_least_one("VOLUME <path>...")?;
            let mut paths = Vec::new();
            for v in &cx.args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(cx.invalid(
                        "VOLUME specified can not be an empty string",
                        &node.original,
                        "a non-empty path",
                    ));
                }
                paths.push(v.to_string());
            }
            InstructionKind::Volume(VolumeCommand { paths })
        }
        "user" => {
            let raw = cx.exactly_one("USER <user>[:<group>]")?;
            cx.flags(&[])?;
            InstructionKind::User(UserCommand::from_raw(raw))
        }
        "workdir" => {
            let path = cx.exactly_one("WORKDIR <path>")?;
            cx.flags(&[])?;
            InstructionKind::Workdir(WorkdirCommand {
                path: path.to_string(),
            })
        }
        "stopsignal" => {
            let signal = cx.exactly_one("STOPSIGNAL <signal>")?;
            cx.flags(&[])?;
            let number = signal_number(signal);
            if number.is_none() && !signal.contains('$') {
                return Err(cx.invalid(
                    "invalid signal",
                    signal,
                    "a signal name such as SIGTERM or a number",
                ));
            }
            InstructionKind::Stopsignal(StopsignalCommand {
                signal: signal.to_string(),
                number,
            })
        }
        "maintainer" => {
            let name = cx.exactly_one("MAINTAINER <name>")?;
            cx.flags(&[])?;
            InstructionKind::Maintainer(MaintainerCommand {
                name: name.to_string(),
            })
        }
        "healthcheck" => InstructionKind::Healthcheck(cx.healthcheck()?),
        "onbuild" => InstructionKind::Onbuild(cx.onbuild()?),
        _ => {
            return Err(ParseError::UnknownInstruction {
                line: node.span.start_line,
                column: node.span.start_col,
                instruction: node.keyword.clone(),
                suggestion: suggest(&node.keyword.to_uppercase(), &INSTRUCTION_NAMES),
            })
        }
    };
    Ok(kind)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum FlagKind {
    Bool,
    String,
    Strings,
}

/// Validated flags of one instruction.
struct Flags {
    values: Vec<(&'static str, String)>,
}

impl Flags {
    fn string(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
    }

    fn strings(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.string(name).map(|v| v == "true")
    }
}

struct Cx<'a> {
    node: &'a Node,
    src: &'a str,
    /// The node's arguments, taken out of it so the typed fields can own them.
    args: Vec<String>,
    child: Option<Box<Node>>,
    heredocs: Vec<Heredoc>,
}

impl<'a> Cx<'a> {
    fn name(&self) -> String {
        self.node.keyword.to_uppercase()
    }

    /// An error pointing at `found` in the instruction's source text.
    fn invalid(&self, problem: &str, found: &str, expected: &str) -> ParseError {
        self.invalid_from(0, problem, found, expected)
    }

    /// Like [`Cx::invalid`], searching for `found` only from `skip` bytes into the
    /// instruction (past its keyword, say).
    fn invalid_from(&self, skip: usize, problem: &str, found: &str, expected: &str) -> ParseError {
        let start = (self.node.source_range.start + skip).min(self.node.source_range.end);
        let (line, column) = locate(self.src, start, self.node.source_range.end, found)
            .unwrap_or((self.node.span.start_line, self.node.span.start_col));
        ParseError::Invalid {
            line,
            column,
            instruction: self.name(),
            problem: problem.to_string(),
            found: found.to_string(),
            expected: expected.to_string(),
        }
    }

    fn flags(&self, allowed: &[(&'static str, FlagKind)]) -> Result<Flags, ParseError> {
        let mut values: Vec<(&'static str, String)> = Vec::new();
        for raw in &self.node.flags {
            let body = raw.strip_prefix("--").unwrap_or(raw);
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (body, None),
            };
            let Some(&(known, kind)) = allowed.iter().find(|(n, _)| *n == name) else {
                let names: Vec<String> = allowed.iter().map(|(n, _)| format!("--{n}")).collect();
                let expected = if names.is_empty() {
                    format!("no flags on {}", self.name())
                } else {
                    format!("one of {}", names.join(", "))
                };
                let hint = suggest(&format!("--{name}"), &names)
                    .map(|s| format!(" (did you mean `{s}`?)"))
                    .unwrap_or_default();
                return Err(self.invalid(&format!("unknown flag{hint}"), raw, &expected));
            };
            if kind != FlagKind::Strings && values.iter().any(|(n, _)| *n == known) {
                return Err(self.invalid("duplicate flag", raw, "each flag at most once"));
            }
            let value = match (kind, value) {
                (FlagKind::Bool, None) => "true".to_string(),
                (FlagKind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                    "true" => "true".to_string(),
                    "false" => "false".to_string(),
                    "" => {
                        return Err(self.invalid(
                            "missing a value on flag",
                            raw,
                            &format!("--{known}=true or --{known}=false"),
                        ))
                    }
                    _ => {
                        return Err(self.invalid(
                            "expecting a boolean value for flag",
                            raw,
                            &format!("--{known}=true or --{known}=false"),
                        ))
                    }
                },
                (_, None) => {
                    return Err(self.invalid(
                        "missing a value on flag",
                        raw,
                        &format!("--{known}=<value>"),
                    ))
                }
                (_, Some(v)) => v.to_string(),
            };
            values.push((known, value));
        }
        Ok(Flags { values })
    }

    fn at_least_one(&self, usage: &str) -> Result<(), ParseError> {
        if self.args.is_empty() {
            return Err(self.invalid(
                &format!("{} requires at least one argument", self.name()),
                &self.node.original,
                usage,
            ));
        }
        Ok(())
    }

    fn exactly_one(&self, usage: &str) -> Result<&str, ParseError> {
        match self.args.as_slice() {
            [one] => Ok(one),
            _ => Err(self.invalid(
                &format!("{} requires exactly one argument", self.name()),
                &self.node.original,
                usage,
            )),
        }
    }

    fn command_line(&mut self) -> CommandLine {
        let mut args = std::mem::take(&mut self.args);
        if self.node.json {
            CommandLine::Exec(args)
        } else {
            CommandLine::Shell(args.pop().unwrap_or_default())
        }
    }

    fn from(&mut self) -> Result<FromCommand, ParseError> {
        let args = &self.args;
        let (alias, alias_as_written, as_keyword) = match args.as_slice() {
            [_] => (None, None, None),
            [_, kw, name] if kw.eq_ignore_ascii_case("as") => {
                let lower = name.to_lowercase();
                if !valid_stage_name(&lower) {
                    return Err(self.invalid(
                        "invalid name for build stage, name can't start with a number or contain symbols",
                        name,
                        "a name matching [a-z][a-z0-9-_.]*",
                    ));
                }
                (Some(lower), Some(name.clone()), Some(kw.clone()))
            }
            _ => {
                return Err(self.invalid(
                    "FROM requires either one or three arguments",
                    &self.node.original,
                    "FROM [--platform=<platform>] <image> [AS <name>]",
                ))
            }
        };
        let flags = self.flags(&[("platform", FlagKind::String)])?;
        Ok(FromCommand {
            image: std::mem::take(&mut self.args[0]),
            platform: flags.string("platform"),
            alias,
            alias_as_written,
            as_keyword,
        })
    }

    fn run(&mut self) -> Result<RunCommand, ParseError> {
        let flags = self.flags(&[
            ("mount", FlagKind::Strings),
            ("network", FlagKind::String),
            ("security", FlagKind::String),
        ])?;
        let mut mounts = Vec::new();
        for m in flags.strings("mount") {
            mounts.push(
                parse_mount(&m, None).map_err(|(problem, found, expected)| {
                    self.invalid(&problem, &found, &expected)
                })?,
            );
        }
        let network = match flags.string("network").as_deref() {
            None => None,
            Some("default") => Some(NetworkMode::Default),
            Some("none") => Some(NetworkMode::None),
            Some("host") => Some(NetworkMode::Host),
            Some(other) => {
                return Err(self.invalid(
                    "unsupported network mode",
                    other,
                    "one of default, none, host",
                ))
            }
        };
        let security = match flags.string("security").as_deref() {
            None => None,
            Some("sandbox") => Some(SecurityMode::Sandbox),
            Some("insecure") => Some(SecurityMode::Insecure),
            Some(other) => {
                return Err(self.invalid(
                    "unsupported security mode",
                    other,
                    "one of sandbox, insecure",
                ))
            }
        };
        Ok(RunCommand {
            command: self.command_line(),
            heredocs: std::mem::take(&mut self.heredocs),
            mounts,
            network,
            security,
        })
    }

    fn key_values(&mut self) -> Result<Vec<KeyValue>, ParseError> {
        self.flags(&[])?;
        let usage = if self.node.is("env") {
            "ENV <key>=<value> ..."
        } else {
            "LABEL <key>=<value> ..."
        };
        self.at_least_one(usage)?;
        if self.args.len() % 3 != 0 {
            return Err(self.invalid("too many arguments", &self.node.original, usage));
        }
        let mut out = Vec::with_capacity(self.args.len() / 3);
        let mut it = std::mem::take(&mut self.args).into_iter();
        while let (Some(key), Some(value), Some(sep)) = (it.next(), it.next(), it.next()) {
            if key.is_empty() {
                return Err(self.invalid(
                    &format!("{} names can not be blank", self.name()),
                    &format!("={value}"),
                    usage,
                ));
            }
            out.push(KeyValue {
                key,
                value,
                legacy: sep.is_empty(),
            });
        }
        Ok(out)
    }

    fn expose(&mut self) -> Result<ExposeCommand, ParseError> {
        self.at_least_one("EXPOSE <port>[/<protocol>] ...")?;
        self.flags(&[])?;
        let mut ports = Vec::new();
        for raw in std::mem::take(&mut self.args) {
            let spec = if raw.contains('$') {
                None
            } else {
                Some(PortSpec::parse(&raw).map_err(|e| {
                    self.invalid(
                        &format!("invalid port: {e}"),
                        &raw,
                        "a port such as 80, 80/udp or 7000-7010",
                    )
                })?)
            };
            ports.push(ExposePort { raw, spec });
        }
        Ok(ExposeCommand { ports })
    }

    fn arg(&self) -> Result<ArgCommand, ParseError> {
        self.at_least_one("ARG <name>[=<default value>] ...")?;
        self.flags(&[])?;
        let mut args = Vec::new();
        for word in &self.args {
            let (name, default) = match word.split_once('=') {
                Some((n, d)) => (n, Some(d.to_string())),
                None => (word.as_str(), None),
            };
            if name.is_empty() {
                return Err(self.invalid(
                    "ARG names can not be blank",
                    word,
                    "ARG <name>[=<default value>]",
                ));
            }
            args.push(ArgDef {
                name: name.to_string(),
                default,
            });
        }
        Ok(ArgCommand { args })
    }

    /// Sources and destination of COPY/ADD; heredoc sources take their content from the
    /// bodies that followed the line.
    fn sources_and_dest(&mut self) -> Result<(Vec<Source>, String), ParseError> {
        let usage = if self.node.is("add") {
            "ADD [flags] <src>... <dest>"
        } else {
            "COPY [flags] <src>... <dest>"
        };
        if self.args.len() < 2 {
            return Err(self.invalid(
                &format!(
                    "{} requires at least two arguments, but only one was provided; the destination could not be determined",
                    self.name()
                ),
                &self.node.original,
                usage,
            ));
        }
        let mut args = std::mem::take(&mut self.args);
        let dest = args.pop().unwrap_or_default();
        if dest.contains("<<") {
            if let Ok(Some(_)) = parse_heredoc_word(&dest) {
                return Err(self.invalid(
                    &format!("{} cannot accept a heredoc as a destination", self.name()),
                    &dest,
                    usage,
                ));
            }
        }
        let mut sources = Vec::with_capacity(args.len());
        for src in args {
            let marker = if src.contains("<<") {
                parse_heredoc_word(&src).ok().flatten()
            } else {
                None
            };
            match marker {
                Some(marker) => {
                    let body = self
                        .heredocs
                        .iter()
                        .rev()
                        .find(|h| h.name == marker.name)
                        .map(|h| h.content.as_str())
                        .unwrap_or("");
                    let content = if marker.chomp {
                        chomp_tabs(body)
                    } else {
                        body.to_string()
                    };
                    sources.push(Source::Inline(InlineFile {
                        name: marker.name,
                        content,
                        expand: marker.expand,
                    }));
                }
                None => sources.push(Source::Path(src)),
            }
        }
        Ok((sources, dest))
    }

    fn copy(&mut self) -> Result<CopyCommand, ParseError> {
        let (sources, dest) = self.sources_and_dest()?;
        let flags = self.flags(&[
            ("from", FlagKind::String),
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("parents", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ])?;
        Ok(CopyCommand {
            sources,
            dest,
            from: flags.string("from"),
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link").unwrap_or(false),
            parents: flags.bool("parents").unwrap_or(false),
            excludes: flags.strings("exclude"),
            json: self.node.json,
        })
    }

    fn add(&mut self) -> Result<AddCommand, ParseError> {
        let (sources, dest) = self.sources_and_dest()?;
        let flags = self.flags(&[
            ("chown", FlagKind::String),
            ("chmod", FlagKind::String),
            ("link", FlagKind::Bool),
            ("keep-git-dir", FlagKind::Bool),
            ("checksum", FlagKind::String),
            ("unpack", FlagKind::Bool),
            ("exclude", FlagKind::Strings),
        ])?;
        Ok(AddCommand {
            sources,
            dest,
            chown: flags.string("chown"),
            chmod: flags.string("chmod"),
            link: flags.bool("link").unwrap_or(false),
            keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
            checksum: flags.string("checksum"),
            unpack: flags.bool("unpack"),
            excludes: flags.strings("exclude"),
            json: self.node.json,
        })
    }

    fn healthcheck(&mut self) -> Result<HealthcheckCommand, ParseError> {
        let usage = "HEALTHCHECK NONE or HEALTHCHECK [--interval=<d>] [--timeout=<d>] [--start-period=<d>] [--start-interval=<d>] [--retries=<n>] CMD <command>";
        let Some(typ) = self.args.first() else {
            return Err(self.invalid(
                "HEALTHCHECK requires at least one argument",
                &self.node.original,
                usage,
            ));
        };
        let rest = &self.args[1..];
        match typ.to_uppercase().as_str() {
            // Upstream does not look at flags for NONE.
            "NONE" => {
                if !rest.is_empty() {
                    return Err(self.invalid(
                        "HEALTHCHECK NONE takes no arguments",
                        &rest.join(" "),
                        "HEALTHCHECK NONE",
                    ));
                }
                Ok(HealthcheckCommand::None)
            }
            "CMD" => {
                let flags = self.flags(&[
                    ("interval", FlagKind::String),
                    ("timeout", FlagKind::String),
                    ("start-period", FlagKind::String),
                    ("start-interval", FlagKind::String),
                    ("retries", FlagKind::String),
                ])?;
                if rest.is_empty() {
                    return Err(self.invalid(
                        "missing command after HEALTHCHECK CMD",
                        &self.node.original,
                        usage,
                    ));
                }
                let command = if self.node.json {
                    CommandLine::Exec(rest.to_vec())
                } else {
                    CommandLine::Shell(rest.join(" "))
                };
                let duration = |name: &str| -> Result<Option<Duration>, ParseError> {
                    let Some(v) = flags.string(name) else {
                        return Ok(None);
                    };
                    if v.is_empty() {
                        return Ok(None);
                    }
                    let found = format!("--{name}={v}");
                    let nanos = parse_go_duration(&v)
                        .map_err(|e| self.invalid(&e, &found, "a duration such as 30s or 1m30s"))?;
                    if nanos == 0 {
                        return Ok(Some(Duration::ZERO));
                    }
                    if nanos < 1_000_000 {
                        return Err(self.invalid(
                            &format!("interval --{name} cannot be less than 1ms"),
                            &found,
                            "0 or a duration of at least 1ms",
                        ));
                    }
                    Ok(Some(Duration::from_nanos(nanos as u64)))
                };
                let retries = match flags.string("retries").filter(|v| !v.is_empty()) {
                    None => None,
                    Some(v) => {
                        let found = format!("--retries={v}");
                        let n: i32 = parse_go_int32(&v).ok_or_else(|| {
                            self.invalid("invalid --retries", &found, "a whole number")
                        })?;
                        if n < 0 {
                            return Err(self.invalid(
                                "--retries cannot be negative",
                                &found,
                                "0 or more",
                            ));
                        }
                        Some(n as u32)
                    }
                };
                Ok(HealthcheckCommand::Cmd(Healthcheck {
                    command,
                    interval: duration("interval")?,
                    timeout: duration("timeout")?,
                    start_period: duration("start-period")?,
                    start_interval: duration("start-interval")?,
                    retries,
                }))
            }
            _ => Err(self.invalid("unknown type in HEALTHCHECK", typ, "NONE or CMD")),
        }
    }

    fn onbuild(&mut self) -> Result<OnbuildCommand, ParseError> {
        let Some(child) = self.child.take() else {
            return Err(self.invalid(
                "ONBUILD requires at least one argument",
                &self.node.original,
                "ONBUILD <instruction>",
            ));
        };
        self.flags(&[])?;
        let trigger = child.keyword.trim().to_uppercase();
        // The trigger keyword sits after this node's own keyword.
        let skip = self
            .src
            .get(self.node.source_range.clone())
            .and_then(|t| t.find(&self.node.keyword))
            .map(|i| i + self.node.keyword.len())
            .unwrap_or(0);
        match trigger.as_str() {
            "ONBUILD" => {
                return Err(self.invalid_from(
                    skip,
                    "chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
                    &child.keyword,
                    "ONBUILD <instruction other than ONBUILD, FROM or MAINTAINER>",
                ))
            }
            "MAINTAINER" | "FROM" => {
                return Err(self.invalid_from(
                    skip,
                    &format!("{trigger} isn't allowed as an ONBUILD trigger"),
                    &child.keyword,
                    "ONBUILD <instruction other than ONBUILD, FROM or MAINTAINER>",
                ))
            }
            _ => {}
        }
        // Strip the ONBUILD keyword (case-insensitive) and the blanks after it.
        let original = &self.node.original;
        let kw_len = self.node.keyword.len();
        let mut expression = original
            .get(kw_len..)
            .unwrap_or("")
            .trim_start_matches(['\t', '\n', '\u{c}', '\r', ' '])
            .to_string();
        for h in &self.heredocs {
            expression.push('\n');
            expression.push_str(&h.content);
            expression.push_str(&h.name);
        }
        let heredocs = std::mem::take(&mut self.heredocs);
        let trigger = convert_with_heredocs(*child, self.src, heredocs)
            .map(Box::new)
            .map_err(Box::new);
        Ok(OnbuildCommand {
            expression,
            trigger,
        })
    }
}

/// BuildKit's `^[a-z][a-z0-9-_.]*$` for (lower-cased) stage names.
pub(crate) fn valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// Go's `strconv.ParseInt(s, 10, 32)`.
fn parse_go_int32(s: &str) -> Option<i32> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i32>().ok()
}
