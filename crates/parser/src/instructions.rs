//! The typed instructions (the second level, like BuildKit's `instructions` package).
//!
//! Text fields hold what the Dockerfile says, variables unexpanded (ENV/LABEL/ARG values
//! even keep their quotes: quote removal is part of expansion). Typed readings of fields
//! that may contain variables (ports, signals, users, mount options) are filled at parse
//! time when the text is literal and again by [`Instruction::expand`].

use std::time::Duration;

use crate::error::ParseError;
use crate::heredoc::Heredoc;
use crate::mount::Mount;
use crate::span::Span;

/// One instruction with its position and source text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// What it is, with its typed fields.
    pub kind: InstructionKind,
    /// The keyword as written (`RUN`, `run`).
    pub keyword: String,
    /// Where it is; heredoc bodies and continuation lines included.
    pub span: Span,
    /// The logical line: continuations joined, comments dropped, trimmed. This is what
    /// BuildKit records as the instruction's source (history `created_by`).
    pub original: String,
    /// The comment lines directly above it, without `#`.
    pub comments: Vec<String>,
}

/// The instruction variants, one per Dockerfile keyword.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    /// `FROM [--platform=<p>] <image> [AS <name>]`.
    From(FromCommand),
    /// `RUN [--mount=...] [--network=...] [--security=...] <command>`.
    Run(RunCommand),
    /// `CMD <command>`.
    Cmd(CmdCommand),
    /// `ENTRYPOINT <command>`.
    Entrypoint(EntrypointCommand),
    /// `SHELL ["executable", "args"...]`.
    Shell(ShellCommand),
    /// `LABEL <key>=<value> ...`.
    Label(LabelCommand),
    /// `EXPOSE <port>[/<proto>] ...`.
    Expose(ExposeCommand),
    /// `ENV <key>=<value> ...` or `ENV <key> <value>`.
    Env(EnvCommand),
    /// `ARG <name>[=<default>] ...`.
    Arg(ArgCommand),
    /// `ADD [flags] <src>... <dest>`.
    Add(AddCommand),
    /// `COPY [flags] <src>... <dest>`.
    Copy(CopyCommand),
    /// `VOLUME <path>...`.
    Volume(VolumeCommand),
    /// `USER <user>[:<group>]`.
    User(UserCommand),
    /// `WORKDIR <path>`.
    Workdir(WorkdirCommand),
    /// `ONBUILD <instruction>`.
    Onbuild(OnbuildCommand),
    /// `STOPSIGNAL <signal>`.
    Stopsignal(StopsignalCommand),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD <command>`.
    Healthcheck(HealthcheckCommand),
    /// `MAINTAINER <name>` (deprecated).
    Maintainer(MaintainerCommand),
}

impl InstructionKind {
    /// The canonical upper-case keyword.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::User(_) => "USER",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::Onbuild(_) => "ONBUILD",
            InstructionKind::Stopsignal(_) => "STOPSIGNAL",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Maintainer(_) => "MAINTAINER",
        }
    }

    /// Whether the instruction adds a filesystem layer (RUN, COPY, ADD).
    pub fn creates_layer(&self) -> bool {
        matches!(
            self,
            InstructionKind::Run(_) | InstructionKind::Copy(_) | InstructionKind::Add(_)
        )
    }
}

/// Every instruction keyword, upper-case.
pub const INSTRUCTION_NAMES: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromCommand {
    /// The base: an image reference, `scratch`, or an earlier stage's name (unexpanded).
    pub image: String,
    /// `--platform`, unexpanded.
    pub platform: Option<String>,
    /// The stage name after `AS`, lower-cased.
    pub alias: Option<String>,
    /// The stage name as written.
    pub alias_as_written: Option<String>,
    /// The `AS` keyword as written (for casing checks).
    pub as_keyword: Option<String>,
}

/// The command of RUN, CMD, ENTRYPOINT and HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// Shell form: the text is run by the stage's shell (`/bin/sh -c`).
    Shell(String),
    /// Exec (JSON) form: run as is, no shell.
    Exec(Vec<String>),
}

impl CommandLine {
    /// Whether this is the shell form.
    pub fn is_shell(&self) -> bool {
        matches!(self, CommandLine::Shell(_))
    }

    /// The arguments as BuildKit records them: one string in shell form, the array in
    /// exec form.
    pub fn args(&self) -> Vec<String> {
        match self {
            CommandLine::Shell(s) => vec![s.clone()],
            CommandLine::Exec(v) => v.clone(),
        }
    }
}

/// `RUN --network=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkMode {
    /// The default network.
    Default,
    /// No network at all.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security=` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SecurityMode {
    /// The default sandbox.
    Sandbox,
    /// Privileged (needs the `security.insecure` entitlement).
    Insecure,
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCommand {
    /// The command.
    pub command: CommandLine,
    /// Heredoc bodies (files the command can read, or the script itself).
    pub heredocs: Vec<Heredoc>,
    /// `--mount` options.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<NetworkMode>,
    /// `--security`.
    pub security: Option<SecurityMode>,
}

/// `CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdCommand {
    /// The default command (`Shell("")` for a bare `CMD`).
    pub command: CommandLine,
}

/// `ENTRYPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrypointCommand {
    /// The entrypoint (`Exec([])` for `ENTRYPOINT []`, which clears it).
    pub command: CommandLine,
}

/// `SHELL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShellCommand {
    /// The shell and its arguments, e.g. `["/bin/bash", "-c"]`.
    pub shell: Vec<String>,
}

/// One `key=value` of ENV or LABEL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    /// The key as written.
    pub key: String,
    /// The value as written: quotes and escapes are still in it.
    pub value: String,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// `LABEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelCommand {
    /// The labels in order.
    pub labels: Vec<KeyValue>,
}

/// `ENV`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvCommand {
    /// The variables in order.
    pub vars: Vec<KeyValue>,
}

/// A transport protocol of EXPOSE.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// TCP (the default).
    Tcp,
    /// UDP.
    Udp,
    /// SCTP.
    Sctp,
}

impl Protocol {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
}

/// A port or port range with its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortSpec {
    /// First port.
    pub start: u16,
    /// Last port (equal to `start` for a single port).
    pub end: u16,
    /// The protocol.
    pub protocol: Protocol,
}

impl PortSpec {
    /// Parse `80`, `80/tcp`, `7000-7010/udp` (and, as Docker's port parser allows,
    /// `[ip:]hostPort:containerPort[/proto]`, of which only the container side counts).
    pub(crate) fn parse(text: &str) -> Result<PortSpec, String> {
        let (ports, proto) = match text.rsplit_once('/') {
            Some((p, proto)) => (p, proto),
            None => (text, "tcp"),
        };
        let protocol = match proto.to_ascii_lowercase().as_str() {
            "tcp" => Protocol::Tcp,
            "udp" => Protocol::Udp,
            "sctp" => Protocol::Sctp,
            _ => return Err(format!("unknown protocol `{proto}`")),
        };
        let container = ports.rsplit(':').next().unwrap_or(ports);
        let (start, end) = match container.split_once('-') {
            Some((a, b)) => (a, b),
            None => (container, container),
        };
        let parse = |s: &str| -> Result<u16, String> {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("`{s}` is not a port number"));
            }
            s.parse::<u16>()
                .map_err(|_| format!("`{s}` is not a port number"))
        };
        let (start, end) = (parse(start)?, parse(end)?);
        if end < start {
            return Err(format!("the range `{container}` ends below its start"));
        }
        Ok(PortSpec {
            start,
            end,
            protocol,
        })
    }
}

/// One EXPOSE argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposePort {
    /// As written.
    pub raw: String,
    /// The port, when `raw` holds no variable (always after expansion).
    pub spec: Option<PortSpec>,
}

/// `EXPOSE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExposeCommand {
    /// The ports in order.
    pub ports: Vec<ExposePort>,
}

/// One `name[=default]` of ARG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDef {
    /// The name.
    pub name: String,
    /// The default as written (quotes kept), if any.
    pub default: Option<String>,
}

/// `ARG`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgCommand {
    /// The declared arguments in order.
    pub args: Vec<ArgDef>,
}

/// A COPY/ADD source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A path (or URL for ADD), as written.
    Path(String),
    /// A file whose content is a heredoc (`COPY <<EOF /dest`).
    Inline(InlineFile),
}

/// A file written from a heredoc by COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InlineFile {
    /// The heredoc name, which is also the file name.
    pub name: String,
    /// The content, leading tabs removed for `<<-`.
    pub content: String,
    /// Whether variables in the content are expanded.
    pub expand: bool,
}

/// `COPY`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyCommand {
    /// The sources in order.
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: String,
    /// `--from`: a stage name or index, an image, or a named context.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` (octal, or symbolic such as `u+x`).
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Written in the JSON form.
    pub json: bool,
}

/// `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCommand {
    /// The sources in order (paths, URLs, git references, heredocs).
    pub sources: Vec<Source>,
    /// The destination.
    pub dest: String,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=`.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// `--checksum=` of a remote source.
    pub checksum: Option<String>,
    /// `--unpack` (None: the default, unpack local archives only).
    pub unpack: Option<bool>,
    /// `--exclude` patterns.
    pub excludes: Vec<String>,
    /// Written in the JSON form.
    pub json: bool,
}

/// `VOLUME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeCommand {
    /// The mount points.
    pub paths: Vec<String>,
}

/// `USER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserCommand {
    /// The whole argument as written.
    pub raw: String,
    /// The user part (before the first `:`).
    pub user: String,
    /// The group part (after the first `:`), if any.
    pub group: Option<String>,
}

impl UserCommand {
    pub(crate) fn from_raw(raw: &str) -> UserCommand {
        let (user, group) = match raw.split_once(':') {
            Some((u, g)) => (u.to_string(), Some(g.to_string())),
            None => (raw.to_string(), None),
        };
        UserCommand {
            raw: raw.to_string(),
            user,
            group,
        }
    }
}

/// `WORKDIR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkdirCommand {
    /// The path (relative paths are relative to the previous WORKDIR).
    pub path: String,
}

/// `ONBUILD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnbuildCommand {
    /// The trigger text as recorded in the image config (heredocs appended).
    pub expression: String,
    /// The trigger parsed as an instruction. Like BuildKit, a trigger that does not
    /// parse is only an error when a downstream build runs it, so the error is kept.
    pub trigger: Result<Box<Instruction>, Box<ParseError>>,
}

/// `STOPSIGNAL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopsignalCommand {
    /// The signal as written (`SIGTERM`, `TERM`, `15`, `$SIG`).
    pub signal: String,
    /// Its number, when the text is literal.
    pub number: Option<u32>,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthcheckCommand {
    /// `HEALTHCHECK NONE`: disable any inherited check.
    None,
    /// `HEALTHCHECK [flags] CMD ...`.
    Cmd(Healthcheck),
}

/// A health check command and its timing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Healthcheck {
    /// The command (`CMD-SHELL` for the shell form, `CMD` for exec form).
    pub command: CommandLine,
    /// `--interval`.
    pub interval: Option<Duration>,
    /// `--timeout`.
    pub timeout: Option<Duration>,
    /// `--start-period`.
    pub start_period: Option<Duration>,
    /// `--start-interval`.
    pub start_interval: Option<Duration>,
    /// `--retries`.
    pub retries: Option<u32>,
}

impl Healthcheck {
    /// The `Test` array of an image config: `["CMD-SHELL", cmd]` or `["CMD", args...]`.
    pub fn test(&self) -> Vec<String> {
        match &self.command {
            CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            CommandLine::Exec(v) => {
                let mut t = vec!["CMD".to_string()];
                t.extend(v.iter().cloned());
                t
            }
        }
    }
}

/// `MAINTAINER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintainerCommand {
    /// The author.
    pub name: String,
}

/// The number of a signal name (`SIGKILL`, `kill`, `RTMIN+3`) or number (`9`), using the
/// Linux signal table.
pub fn signal_number(text: &str) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return (n != 0).then_some(n);
    }
    let upper = text.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let n = match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "TRAP" => 5,
        "ABRT" | "IOT" => 6,
        "BUS" => 7,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        "STKFLT" => 16,
        "CHLD" | "CLD" => 17,
        "CONT" => 18,
        "STOP" => 19,
        "TSTP" => 20,
        "TTIN" => 21,
        "TTOU" => 22,
        "URG" => 23,
        "XCPU" => 24,
        "XFSZ" => 25,
        "VTALRM" => 26,
        "PROF" => 27,
        "WINCH" => 28,
        "IO" | "POLL" => 29,
        "PWR" => 30,
        "SYS" | "UNUSED" => 31,
        "RTMIN" => 34,
        "RTMAX" => 64,
        other => {
            if let Some(k) = other.strip_prefix("RTMIN+") {
                let k: u32 = k.parse().ok()?;
                return (1..=15).contains(&k).then_some(34 + k);
            }
            if let Some(k) = other.strip_prefix("RTMAX-") {
                let k: u32 = k.parse().ok()?;
                return (1..=14).contains(&k).then_some(64 - k);
            }
            return None;
        }
    };
    Some(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        let p = PortSpec::parse("80").unwrap();
        assert_eq!((p.start, p.end, p.protocol), (80, 80, Protocol::Tcp));
        let p = PortSpec::parse("7000-7010/udp").unwrap();
        assert_eq!((p.start, p.end, p.protocol), (7000, 7010, Protocol::Udp));
        let p = PortSpec::parse("53/UDP").unwrap();
        assert_eq!(p.protocol, Protocol::Udp);
        let p = PortSpec::parse("127.0.0.1:8080:80/tcp").unwrap();
        assert_eq!(p.start, 80);
        for bad in ["", "http", "80/icmp", "70000", "10-5", "-1", "80-"] {
            assert!(PortSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signals() {
        assert_eq!(signal_number("SIGTERM"), Some(15));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(37));
        assert_eq!(signal_number("RTMAX-1"), Some(63));
        assert_eq!(signal_number("0"), None);
        assert_eq!(signal_number("SIGFOO"), None);
    }

    #[test]
    fn user_split() {
        let u = UserCommand::from_raw("app:staff");
        assert_eq!(
            (u.user.as_str(), u.group.as_deref()),
            ("app", Some("staff"))
        );
        assert_eq!(UserCommand::from_raw("1000").group, None);
    }
}
