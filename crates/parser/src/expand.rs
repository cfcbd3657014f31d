//! Which fields of an instruction expand, and expanding them.
//!
//! Expanded (as BuildKit does): FROM's base and `--platform` (with the global ARGs),
//! ENV and LABEL keys and values, ARG defaults, COPY/ADD sources, destination,
//! `--chown`, `--chmod`, `--from`, `--checksum`, `--exclude` and heredoc bodies whose
//! terminator was not quoted, WORKDIR, USER, VOLUME, EXPOSE (split into words),
//! STOPSIGNAL and the values of RUN `--mount` options. Not expanded: RUN/CMD/ENTRYPOINT/
//! HEALTHCHECK commands (the shell does that at run time), SHELL, MAINTAINER, ONBUILD.

use crate::error::ParseError;
use crate::instructions::*;
use crate::mount::parse_mount;
use crate::shell::{Expansion, Lexer, Lookup};

/// A value with its variables expanded, and what the expansion looked at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expanded<T> {
    /// The expanded value.
    pub value: T,
    /// Every variable name referenced, in order of first use.
    pub referenced: Vec<String>,
    /// The referenced names that were unset.
    pub unset: Vec<String>,
}

struct Expander<'a> {
    lex: Lexer,
    env: &'a dyn Lookup,
    referenced: Vec<String>,
    unset: Vec<String>,
}

impl<'a> Expander<'a> {
    fn new(env: &'a dyn Lookup, escape: char) -> Self {
        Expander {
            lex: Lexer::new(escape),
            env,
            referenced: Vec::new(),
            unset: Vec::new(),
        }
    }

    fn note(&mut self, e: &Expansion) {
        for n in &e.referenced {
            if !self.referenced.contains(n) {
                self.referenced.push(n.clone());
            }
        }
        for n in &e.unset {
            if !self.unset.contains(n) {
                self.unset.push(n.clone());
            }
        }
    }

    fn word(&mut self, text: &str) -> Result<String, ParseError> {
        let e = self.lex.expand(text, self.env)?;
        self.note(&e);
        Ok(e.value)
    }

    fn opt(&mut self, text: &Option<String>) -> Result<Option<String>, ParseError> {
        text.as_deref().map(|t| self.word(t)).transpose()
    }

    fn words(&mut self, text: &str) -> Result<Vec<String>, ParseError> {
        let e = self.lex.expand_words(text, self.env)?;
        self.note(&e);
        Ok(e.words)
    }

    /// Heredoc bodies are scripts and files: only variables are substituted; quotes and
    /// escapes stay as written.
    fn body(&mut self, text: &str) -> Result<String, ParseError> {
        let lex = Lexer {
            skip_quotes: true,
            raw_escapes: true,
            ..self.lex
        };
        let e = lex.expand(text, self.env)?;
        self.note(&e);
        Ok(e.value)
    }

    fn sources(&mut self, sources: &[Source]) -> Result<Vec<Source>, ParseError> {
        sources
            .iter()
            .map(|s| match s {
                Source::Path(p) => Ok(Source::Path(self.word(p)?)),
                Source::Inline(f) => Ok(Source::Inline(InlineFile {
                    name: f.name.clone(),
                    content: if f.expand {
                        self.body(&f.content)?
                    } else {
                        f.content.clone()
                    },
                    expand: f.expand,
                })),
            })
            .collect()
    }

    fn key_values(&mut self, kvs: &[KeyValue]) -> Result<Vec<KeyValue>, ParseError> {
        kvs.iter()
            .map(|kv| {
                Ok(KeyValue {
                    key: self.word(&kv.key)?,
                    value: self.word(&kv.value)?,
                    legacy: kv.legacy,
                })
            })
            .collect()
    }

    fn finish<T>(self, value: T) -> Expanded<T> {
        Expanded {
            value,
            referenced: self.referenced,
            unset: self.unset,
        }
    }
}

fn invalid(instruction: &Instruction, problem: String, found: &str, expected: &str) -> ParseError {
    ParseError::Invalid {
        line: instruction.span.start_line,
        column: instruction.span.start_col,
        instruction: instruction.kind.name().into(),
        problem,
        found: found.into(),
        expected: expected.into(),
    }
}

impl FromCommand {
    /// Expand the base and `--platform` with `env` (the global ARGs, see
    /// [`crate::scope::global_scope`]).
    pub fn expand(
        &self,
        env: &dyn Lookup,
        escape: char,
    ) -> Result<Expanded<FromCommand>, ParseError> {
        let mut x = Expander::new(env, escape);
        let value = FromCommand {
            image: x.word(&self.image)?,
            platform: x.opt(&self.platform)?,
            ..self.clone()
        };
        Ok(x.finish(value))
    }
}

impl Instruction {
    /// This instruction with its expandable fields expanded in `env` (one snapshot for
    /// the whole instruction: `ENV a=1 b=$a` sees the old `a`, as in BuildKit), plus the
    /// variables it referenced and which of them were unset. Typed readings (ports,
    /// signal numbers, user/group, mount options) are recomputed and validated.
    pub fn expand(
        &self,
        env: &dyn Lookup,
        escape: char,
    ) -> Result<Expanded<Instruction>, ParseError> {
        self.expand_inner(env, escape).map_err(|e| match e {
            ParseError::Expansion {
                line: None,
                text,
                message,
                ..
            } => ParseError::Expansion {
                line: Some(self.span.start_line),
                column: Some(self.span.start_col),
                text,
                message,
            },
            other => other,
        })
    }

    fn expand_inner(
        &self,
        env: &dyn Lookup,
        escape: char,
    ) -> Result<Expanded<Instruction>, ParseError> {
        let mut x = Expander::new(env, escape);
        let kind = match &self.kind {
            InstructionKind::From(f) => InstructionKind::From(FromCommand {
                image: x.word(&f.image)?,
                platform: x.opt(&f.platform)?,
                ..f.clone()
            }),
            InstructionKind::Run(r) => {
                let mut mounts = Vec::with_capacity(r.mounts.len());
                for m in &r.mounts {
                    let mut f = |v: &str| x.word(v).map_err(|e| e.to_string());
                    let m = parse_mount(&m.raw, Some(&mut f)).map_err(
                        |(problem, found, expected)| invalid(self, problem, &found, &expected),
                    )?;
                    mounts.push(m);
                }
                InstructionKind::Run(RunCommand {
                    mounts,
                    ..r.clone()
                })
            }
            InstructionKind::Label(l) => InstructionKind::Label(LabelCommand {
                labels: x.key_values(&l.labels)?,
            }),
            InstructionKind::Env(e) => InstructionKind::Env(EnvCommand {
                vars: x.key_values(&e.vars)?,
            }),
            InstructionKind::Expose(e) => {
                let mut ports = Vec::new();
                for p in &e.ports {
                    for w in x.words(&p.raw)? {
                        let spec = PortSpec::parse(&w).map_err(|msg| {
                            let found = format!("{} (expanded: {w})", p.raw);
                            invalid(
                                self,
                                format!("invalid port: {msg}"),
                                &found,
                                "a port such as 80, 80/udp or 7000-7010",
                            )
                        })?;
                        ports.push(ExposePort {
                            raw: w,
                            spec: Some(spec),
                        });
                    }
                }
                InstructionKind::Expose(ExposeCommand { ports })
            }
            InstructionKind::Arg(a) => InstructionKind::Arg(ArgCommand {
                args: a
                    .args
                    .iter()
                    .map(|d| {
                        Ok(ArgDef {
                            name: d.name.clone(),
                            default: x.opt(&d.default)?,
                        })
                    })
                    .collect::<Result<_, ParseError>>()?,
            }),
            InstructionKind::Copy(c) => InstructionKind::Copy(CopyCommand {
                sources: x.sources(&c.sources)?,
                dest: x.word(&c.dest)?,
                from: x.opt(&c.from)?,
                chown: x.opt(&c.chown)?,
                chmod: x.opt(&c.chmod)?,
                excludes: c
                    .excludes
                    .iter()
                    .map(|e| x.word(e))
                    .collect::<Result<_, _>>()?,
                ..c.clone()
            }),
            InstructionKind::Add(a) => InstructionKind::Add(AddCommand {
                sources: x.sources(&a.sources)?,
                dest: x.word(&a.dest)?,
                chown: x.opt(&a.chown)?,
                chmod: x.opt(&a.chmod)?,
                checksum: x.opt(&a.checksum)?,
                excludes: a
                    .excludes
                    .iter()
                    .map(|e| x.word(e))
                    .collect::<Result<_, _>>()?,
                ..a.clone()
            }),
            InstructionKind::Volume(v) => InstructionKind::Volume(VolumeCommand {
                paths: v
                    .paths
                    .iter()
                    .map(|p| x.word(p))
                    .collect::<Result<_, _>>()?,
            }),
            InstructionKind::User(u) => {
                InstructionKind::User(UserCommand::from_raw(&x.word(&u.raw)?))
            }
            InstructionKind::Workdir(w) => InstructionKind::Workdir(WorkdirCommand {
                path: x.word(&w.path)?,
            }),
            InstructionKind::Stopsignal(s) => {
                let signal = x.word(&s.signal)?;
                let number = signal_number(&signal).ok_or_else(|| {
                    invalid(
                        self,
                        "invalid signal".into(),
                        &format!("{} (expanded: {signal:?})", s.signal),
                        "a signal name such as SIGTERM or a number",
                    )
                })?;
                InstructionKind::Stopsignal(StopsignalCommand {
                    signal,
                    number: Some(number),
                })
            }
            other @ (InstructionKind::Cmd(_)
            | InstructionKind::Entrypoint(_)
            | InstructionKind::Shell(_)
            | InstructionKind::Healthcheck(_)
            | InstructionKind::Maintainer(_)
            | InstructionKind::Onbuild(_)) => other.clone(),
        };
        let value = Instruction {
            kind,
            ..self.clone()
        };
        Ok(x.finish(value))
    }
}

#[cfg(test)]
mod tests {
    use crate::shell::NoEnv;

    fn first(src: &str) -> crate::Instruction {
        crate::parse(&format!("FROM x\n{src}")).unwrap().stages[0].instructions[0].clone()
    }

    #[test]
    fn env_values_lose_quotes_and_see_one_snapshot() {
        let i = first("ENV a=\"hello world\" b=$a c='$a'");
        let e = i.expand(&[("a", "old")], '\\').unwrap();
        let crate::InstructionKind::Env(env) = e.value.kind else {
            panic!()
        };
        let got: Vec<(String, String)> =
            env.vars.into_iter().map(|kv| (kv.key, kv.value)).collect();
        assert_eq!(
            got,
            vec![
                ("a".into(), "hello world".into()),
                ("b".into(), "old".into()),
                ("c".into(), "$a".into())
            ]
        );
        assert_eq!(e.referenced, vec!["a"]);
    }

    #[test]
    fn copy_fields_expand() {
        let i = first("COPY --chown=$U:$G --from=$S ${SRC}/a.txt <<EOF $D/\nhi $U\nEOF");
        let env = [
            ("U", "app"),
            ("G", "staff"),
            ("S", "build"),
            ("SRC", "src"),
            ("D", "/opt"),
        ];
        let e = i.expand(&env, '\\').unwrap();
        let crate::InstructionKind::Copy(c) = e.value.kind else {
            panic!()
        };
        assert_eq!(c.chown.as_deref(), Some("app:staff"));
        assert_eq!(c.from.as_deref(), Some("build"));
        assert_eq!(c.dest, "/opt/");
        assert_eq!(c.sources[0], crate::Source::Path("src/a.txt".into()));
        let crate::Source::Inline(f) = &c.sources[1] else {
            panic!()
        };
        assert_eq!(f.content, "hi app\n");
    }

    #[test]
    fn expose_splits_and_validates() {
        let i = first("EXPOSE $PORTS 443/udp");
        let e = i.expand(&[("PORTS", "80 8080-8090")], '\\').unwrap();
        let crate::InstructionKind::Expose(x) = e.value.kind else {
            panic!()
        };
        assert_eq!(x.ports.len(), 3);
        assert!(first("EXPOSE $P").expand(&[("P", "nope")], '\\').is_err());
    }

    #[test]
    fn run_command_is_not_expanded_but_mounts_are() {
        let i = first("RUN --mount=type=$T,target=$HOME/.cache echo $HOME");
        let e = i
            .expand(&[("T", "cache"), ("HOME", "/root")], '\\')
            .unwrap();
        let crate::InstructionKind::Run(r) = e.value.kind else {
            panic!()
        };
        assert_eq!(r.command, crate::CommandLine::Shell("echo $HOME".into()));
        assert_eq!(r.mounts[0].kind, crate::MountType::Cache);
        assert_eq!(r.mounts[0].target.as_deref(), Some("/root/.cache"));
        assert!(!r.mounts[0].deferred);
    }

    #[test]
    fn unset_variables_are_reported() {
        let e = first("WORKDIR /app/$DIR").expand(&NoEnv, '\\').unwrap();
        assert_eq!(e.unset, vec!["DIR"]);
        let crate::InstructionKind::Workdir(w) = e.value.kind else {
            panic!()
        };
        assert_eq!(w.path, "/app/");
    }
}
