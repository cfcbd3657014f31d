//! What an instruction does to an image config, and the history entry it leaves.
//!
//! [`apply_instruction`] is the one implementation of "instruction -> config change" for the
//! metadata instructions (ENV, ARG, LABEL, EXPOSE, VOLUME, USER, WORKDIR, CMD, ENTRYPOINT,
//! SHELL, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER). The build uses it for every such
//! step; `strata import --change 'CMD ...'` uses it through [`apply_changes`]. It returns the
//! `created_by` text BuildKit would record (`CMD ["cat" "/opt/env"]`, `ENV A=1`,
//! `EXPOSE map[80/tcp:{}]`), so history reads the same as Docker's.
//!
//! The instruction must already be expanded (see `strata_parser::Instruction::expand`):
//! this module never looks at variables.

use oci_spec::image::{Config, History};
use strata_parser::{
    CommandLine, HealthcheckCommand, Instruction, InstructionKind, KeyValue, Span,
};
use strata_store::{Healthcheck, ImageConfig};

use crate::gofmt;
use crate::Error;

/// The `comment` BuildKit writes on the history entries of a Dockerfile build.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The shell of shell-form RUN, CMD and ENTRYPOINT when the image sets none.
pub const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The `PATH` BuildKit puts into an image's `Env` when the base sets none.
pub const DEFAULT_PATH: &str = crate::exec::DEFAULT_PATH;

/// What [`apply_instruction`] needs to remember across the instructions of one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyState {
    /// A CMD was given in this stage: a later ENTRYPOINT keeps it (otherwise ENTRYPOINT
    /// clears the CMD inherited from the base image, as Docker does).
    pub cmd_set: bool,
}

/// The execution part of `config`, for reading (empty when the config has none).
pub fn exec_config(config: &ImageConfig) -> Config {
    config.oci.config().clone().unwrap_or_default()
}

/// Applies `edit` to the execution part of `config`, creating it when missing.
pub fn edit_exec_config(config: &mut ImageConfig, edit: impl FnOnce(&mut Config)) {
    let mut c = exec_config(config);
    edit(&mut c);
    config.oci.set_config(Some(c));
}

/// The image's `Env` as `(key, value)` pairs.
pub fn env_pairs(config: &ImageConfig) -> Vec<(String, String)> {
    exec_config(config)
        .env()
        .iter()
        .flatten()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (kv.clone(), String::new()),
        })
        .collect()
}

/// Sets `key` in `env` (`K=V` strings), replacing an existing entry in place (Docker's
/// `addEnv`: the order of first definition is kept).
pub fn set_env(env: &mut Vec<String>, key: &str, value: &str) {
    let entry = format!("{key}={value}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
    {
        Some(slot) => *slot = entry,
        None => env.push(entry),
    }
}

/// Adds BuildKit's default `PATH` to the config's `Env` when it has none.
pub fn ensure_default_path(config: &mut ImageConfig) {
    if env_pairs(config).iter().any(|(k, _)| k == "PATH") {
        return;
    }
    edit_exec_config(config, |c| {
        let mut env = c.env().clone().unwrap_or_default();
        set_env(&mut env, "PATH", DEFAULT_PATH);
        c.set_env(Some(env));
    });
}

/// The shell of shell-form commands: the image's `Shell`, else `/bin/sh -c`.
pub fn shell(config: &ImageConfig) -> Vec<String> {
    match &config.docker.shell {
        Some(s) if !s.is_empty() => s.clone(),
        _ => DEFAULT_SHELL.iter().map(|s| s.to_string()).collect(),
    }
}

/// BuildKit's `withShell`: the shell followed by the command words joined with spaces.
pub fn with_shell(config: &ImageConfig, args: &[String]) -> Vec<String> {
    let mut out = shell(config);
    out.push(args.join(" "));
    out
}

/// The argv of a CMD/ENTRYPOINT/RUN command line: exec form as is, shell form wrapped in
/// the image's shell.
pub fn command_argv(config: &ImageConfig, command: &CommandLine) -> Vec<String> {
    match command {
        CommandLine::Exec(v) => v.clone(),
        CommandLine::Shell(s) => with_shell(config, std::slice::from_ref(s)),
    }
}

/// The working directory after `WORKDIR path` when it was `current`: relative paths join
/// the current one; the result is absolute and clean (Go's `path.Join("/", ...)`).
pub fn normalize_workdir(current: Option<&str>, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!(
            "{}/{path}",
            current.filter(|c| !c.is_empty()).unwrap_or("/")
        )
    };
    let mut parts: Vec<&str> = Vec::new();
    for c in joined.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// A history entry as BuildKit writes it (comment `buildkit.dockerfile.v0`).
pub fn history_entry(created_by: &str, empty_layer: bool, created: Option<String>) -> History {
    let mut h = History::default();
    h.set_created_by(Some(created_by.to_string()));
    h.set_comment(Some(HISTORY_COMMENT.to_string()));
    h.set_created(created);
    if empty_layer {
        h.set_empty_layer(Some(true));
    }
    h
}

/// Appends `entry` to the config's history.
pub fn push_history(config: &mut ImageConfig, entry: History) {
    config
        .oci
        .history_mut()
        .get_or_insert_with(Vec::new)
        .push(entry);
}

/// Fills in the `created` times BuildKit's exporter fills in: an entry without one takes the
/// time of the entry before it (the first ones take the first known time), and the config's
/// `created` is the last entry's. So a fully cached rebuild makes the same config, hence the
/// same image ID.
pub fn normalize_created(config: &mut ImageConfig) {
    let mut history = config.oci.history().clone().unwrap_or_default();
    let first_known = history.iter().find_map(|h| h.created().clone());
    let mut last = first_known;
    for h in &mut history {
        match h.created() {
            Some(t) => last = Some(t.clone()),
            None => {
                h.set_created(last.clone());
            }
        }
    }
    let created = history.iter().rev().find_map(|h| h.created().clone());
    if !history.is_empty() {
        config.oci.set_history(Some(history));
    }
    config.oci.set_created(created);
}

fn not_config(instruction: &Instruction) -> Error {
    Error::NotAConfigInstruction {
        instruction: instruction.kind.name(),
        line: instruction.span.start_line,
    }
}

/// Applies one expanded metadata instruction to `config` and returns the `created_by` text
/// of its history entry (the caller adds the entry, with `empty_layer: true`).
///
/// `WORKDIR` only sets `WorkingDir` here: creating the directory is the build's job. RUN,
/// COPY, ADD and FROM are not config changes and are refused.
pub fn apply_instruction(
    config: &mut ImageConfig,
    instruction: &Instruction,
    state: &mut ApplyState,
) -> Result<String, Error> {
    let invalid = |problem: String| Error::InvalidInstruction {
        line: instruction.span.start_line,
        instruction: instruction.kind.name(),
        problem,
    };
    Ok(match &instruction.kind {
        InstructionKind::Env(e) => {
            edit_exec_config(config, |c| {
                let mut env = c.env().clone().unwrap_or_default();
                for kv in &e.vars {
                    set_env(&mut env, &kv.key, &kv.value);
                }
                c.set_env(Some(env));
            });
            format!("ENV {}", key_values(&e.vars))
        }
        InstructionKind::Label(l) => {
            edit_exec_config(config, |c| {
                let mut labels = c.labels().clone().unwrap_or_default();
                for kv in &l.labels {
                    labels.insert(kv.key.clone(), kv.value.clone());
                }
                c.set_labels(Some(labels));
            });
            format!("LABEL {}", key_values(&l.labels))
        }
        InstructionKind::Arg(a) => {
            let parts: Vec<String> = a
                .args
                .iter()
                .map(|d| match &d.default {
                    Some(v) => format!("{}={v}", d.name),
                    None => d.name.clone(),
                })
                .collect();
            format!("ARG {}", parts.join(" "))
        }
        InstructionKind::Expose(e) => {
            let mut ports = Vec::new();
            for p in &e.ports {
                let spec = p
                    .spec
                    .ok_or_else(|| invalid(format!("port {:?} was not expanded", p.raw)))?;
                for port in spec.start..=spec.end {
                    ports.push(format!("{port}/{}", spec.protocol.as_str()));
                }
            }
            edit_exec_config(config, |c| {
                let mut all = c.exposed_ports().clone().unwrap_or_default();
                for p in &ports {
                    if !all.contains(p) {
                        all.push(p.clone());
                    }
                }
                all.sort();
                c.set_exposed_ports(Some(all));
            });
            format!("EXPOSE {}", gofmt::set(&ports))
        }
        InstructionKind::Volume(v) => {
            if v.paths.iter().any(String::is_empty) {
                return Err(invalid(
                    "VOLUME specified can not be an empty string".into(),
                ));
            }
            edit_exec_config(config, |c| {
                let mut all = c.volumes().clone().unwrap_or_default();
                for p in &v.paths {
                    if !all.contains(p) {
                        all.push(p.clone());
                    }
                }
                all.sort();
                c.set_volumes(Some(all));
            });
            format!("VOLUME {}", gofmt::list(&v.paths))
        }
        InstructionKind::User(u) => {
            edit_exec_config(config, |c| {
                c.set_user(Some(u.raw.clone()));
            });
            format!("USER {}", u.raw)
        }
        InstructionKind::Workdir(w) => {
            let current = exec_config(config).working_dir().clone();
            let wd = normalize_workdir(current.as_deref(), &w.path);
            edit_exec_config(config, |c| {
                c.set_working_dir(Some(wd.clone()));
            });
            format!("WORKDIR {wd}")
        }
        InstructionKind::Cmd(c) => {
            let args = command_argv(config, &c.command);
            edit_exec_config(config, |cfg| {
                cfg.set_cmd(Some(args.clone()));
            });
            config.docker.args_escaped = Some(true);
            state.cmd_set = true;
            format!("CMD {}", gofmt::quote_list(&args))
        }
        InstructionKind::Entrypoint(e) => {
            let args = command_argv(config, &e.command);
            let keep_cmd = state.cmd_set;
            edit_exec_config(config, |cfg| {
                cfg.set_entrypoint(Some(args.clone()));
                if !keep_cmd {
                    cfg.set_cmd(None);
                }
            });
            format!("ENTRYPOINT {}", gofmt::quote_list(&args))
        }
        InstructionKind::Shell(s) => {
            config.docker.shell = Some(s.shell.clone());
            format!("SHELL {}", gofmt::list(&s.shell))
        }
        InstructionKind::Stopsignal(s) => {
            edit_exec_config(config, |c| {
                c.set_stop_signal(Some(s.signal.clone()));
            });
            format!("STOPSIGNAL {}", s.signal)
        }
        InstructionKind::Healthcheck(h) => {
            let hc = match h {
                HealthcheckCommand::None => Healthcheck {
                    test: Some(vec!["NONE".to_string()]),
                    ..Healthcheck::default()
                },
                HealthcheckCommand::Cmd(h) => {
                    let ns = |d: Option<std::time::Duration>| {
                        d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
                            .filter(|n| *n != 0)
                    };
                    Healthcheck {
                        test: Some(h.test()),
                        interval: ns(h.interval),
                        timeout: ns(h.timeout),
                        start_period: ns(h.start_period),
                        start_interval: ns(h.start_interval),
                        retries: h.retries.map(i64::from).filter(|r| *r != 0),
                    }
                }
            };
            let text = healthcheck_text(&hc);
            config.docker.healthcheck = Some(hc);
            format!("HEALTHCHECK {text}")
        }
        InstructionKind::Onbuild(o) => {
            config
                .docker
                .on_build
                .get_or_insert_with(Vec::new)
                .push(o.expression.clone());
            format!("ONBUILD {}", o.expression)
        }
        InstructionKind::Maintainer(m) => {
            config.oci.set_author(Some(m.name.clone()));
            format!("MAINTAINER {}", m.name)
        }
        InstructionKind::Run(_)
        | InstructionKind::Copy(_)
        | InstructionKind::Add(_)
        | InstructionKind::From(_) => return Err(not_config(instruction)),
    })
}

fn key_values(kvs: &[KeyValue]) -> String {
    let parts: Vec<String> = kvs
        .iter()
        .map(|kv| format!("{}={}", kv.key, kv.value))
        .collect();
    parts.join(" ")
}

/// Go's `%q` of BuildKit's health-check struct: `&{["CMD-SHELL" "x"] "30s" "0s" "0s" "0s" '\x03'}`.
fn healthcheck_text(h: &Healthcheck) -> String {
    let d = |v: Option<i64>| gofmt::quote(&gofmt::duration_nanos(i128::from(v.unwrap_or(0))));
    format!(
        "&{{{} {} {} {} {} {}}}",
        gofmt::quote_list(h.test.as_deref().unwrap_or(&[])),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        gofmt::quote_rune(h.retries.unwrap_or(0)),
    )
}

/// The ONBUILD triggers an image's config carries, parsed, in the order they run.
pub fn onbuild_triggers(image: &strata_store::Image) -> Result<Vec<Instruction>, Error> {
    image
        .config_parsed
        .docker
        .on_build
        .iter()
        .flatten()
        .map(|t| parse_change(t))
        .collect()
}

/// Parses one instruction written on its own (`CMD ["sh"]`), as `docker import --change`
/// and `docker commit --change` take them.
pub fn parse_change(text: &str) -> Result<Instruction, Error> {
    let invalid = |reason: String| Error::InvalidChange {
        change: text.to_string(),
        reason,
    };
    let df = strata_parser::parse(&format!("FROM scratch\n{text}\n"))
        .map_err(|e| invalid(without_line(&e.to_string())))?;
    let stage = df.stages.into_iter().next();
    let mut instructions = stage.map(|s| s.instructions).unwrap_or_default();
    if instructions.len() != 1 {
        return Err(invalid("it must be exactly one instruction".into()));
    }
    let mut instruction = instructions.remove(0);
    // Positions relative to the change text, not to the wrapper around it.
    let span = instruction.span;
    instruction.span = Span {
        start_line: span.start_line.saturating_sub(1).max(1),
        end_line: span.end_line.saturating_sub(1).max(1),
        ..span
    };
    Ok(instruction)
}

/// A parser message without its leading `line N, ` (the change is one line of its own).
fn without_line(message: &str) -> String {
    match message.strip_prefix("line ") {
        Some(rest) => match rest.split_once(", ") {
            Some((n, tail)) if n.bytes().all(|b| b.is_ascii_digit()) => tail.to_string(),
            _ => message.to_string(),
        },
        None => message.to_string(),
    }
}

/// Applies `--change` instructions to `config` in order (expanded in the config's `Env`),
/// appending a history entry for each, as `docker import --change` does. Returns the
/// `created_by` texts.
pub fn apply_changes(config: &mut ImageConfig, changes: &[&str]) -> Result<Vec<String>, Error> {
    let mut state = ApplyState::default();
    let mut out = Vec::new();
    for text in changes {
        let instruction = parse_change(text)?;
        let env =
            strata_parser::shell::Env::from_kv_strings(exec_config(config).env().iter().flatten());
        let expanded = instruction
            .expand(&env, '\\')
            .map_err(|e| Error::InvalidChange {
                change: text.to_string(),
                reason: without_line(&e.to_string()),
            })?
            .value;
        let created_by = apply_instruction(config, &expanded, &mut state)?;
        push_history(config, history_entry(&created_by, true, None));
        out.push(created_by);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_parser::shell::Env;

    /// Applies a Dockerfile's instructions (after FROM) to an empty config, expanding each
    /// in the config's environment, and returns the config and the history texts.
    fn apply_all(src: &str) -> (ImageConfig, Vec<String>) {
        let df = strata_parser::parse(&format!("FROM scratch\n{src}")).unwrap();
        let mut config = ImageConfig::default();
        let mut state = ApplyState::default();
        let mut texts = Vec::new();
        for i in &df.stages[0].instructions {
            let env = Env::from_kv_strings(exec_config(&config).env().iter().flatten());
            let e = i.expand(&env, '\\').unwrap().value;
            texts.push(apply_instruction(&mut config, &e, &mut state).unwrap());
        }
        (config, texts)
    }

    #[test]
    fn history_texts_are_buildkits() {
        let (_, texts) = apply_all(
            "ENV A=1 B=\"two words\"\n\
             LABEL org.example=x a=b\n\
             EXPOSE 80 443/udp 7000-7001\n\
             VOLUME /data /logs\n\
             USER app:staff\n\
             WORKDIR /srv\n\
             WORKDIR app\n\
             CMD [\"cat\", \"/opt/env\"]\n\
             CMD echo $A\n\
             ENTRYPOINT [\"/init\"]\n\
             SHELL [\"/bin/bash\", \"-c\"]\n\
             STOPSIGNAL SIGKILL\n\
             HEALTHCHECK --interval=30s --retries=3 CMD curl -f http://localhost/\n\
             HEALTHCHECK NONE\n\
             ONBUILD RUN echo hi\n\
             MAINTAINER someone@example.com\n\
             ARG V=1 W\n",
        );
        insta::assert_snapshot!(texts.join("\n"), @r###"
        ENV A=1 B=two words
        LABEL org.example=x a=b
        EXPOSE map[443/udp:{} 7000/tcp:{} 7001/tcp:{} 80/tcp:{}]
        VOLUME [/data /logs]
        USER app:staff
        WORKDIR /srv
        WORKDIR /srv/app
        CMD ["cat" "/opt/env"]
        CMD ["/bin/sh" "-c" "echo $A"]
        ENTRYPOINT ["/init"]
        SHELL [/bin/bash -c]
        STOPSIGNAL SIGKILL
        HEALTHCHECK &{["CMD-SHELL" "curl -f http://localhost/"] "30s" "0s" "0s" "0s" '\x03'}
        HEALTHCHECK &{["NONE"] "0s" "0s" "0s" "0s" '\x00'}
        ONBUILD RUN echo hi
        MAINTAINER someone@example.com
        ARG V=1 W
        "###);
    }

    #[test]
    fn config_fields_follow_docker() {
        let (c, _) = apply_all(
            "ENV PATH=/bin A=1\nENV A=2\nLABEL a=1\nLABEL a=2 b=3\nEXPOSE 80\nEXPOSE 80/tcp 53/udp\n\
             WORKDIR /a\nWORKDIR ../b/./c\nUSER 1000\nSTOPSIGNAL 9\n\
             SHELL [\"/bin/ash\",\"-c\"]\nCMD run me\nHEALTHCHECK --timeout=5s CMD true\n\
             ONBUILD COPY . /app\nMAINTAINER me\n",
        );
        let x = exec_config(&c);
        assert_eq!(
            x.env().as_deref(),
            Some(&["PATH=/bin".to_string(), "A=2".into()][..])
        );
        let labels = x.labels().clone().unwrap();
        assert_eq!((labels["a"].as_str(), labels["b"].as_str()), ("2", "3"));
        assert_eq!(
            x.exposed_ports().as_deref(),
            Some(&["53/udp".to_string(), "80/tcp".into()][..])
        );
        assert_eq!(x.working_dir().as_deref(), Some("/b/c"));
        assert_eq!(x.user().as_deref(), Some("1000"));
        assert_eq!(x.stop_signal().as_deref(), Some("9"));
        // Shell-form CMD uses the SHELL set before it.
        assert_eq!(
            x.cmd().as_deref(),
            Some(&["/bin/ash".to_string(), "-c".into(), "run me".into()][..])
        );
        let hc = c.docker.healthcheck.clone().unwrap();
        assert_eq!(hc.timeout, Some(5_000_000_000));
        assert_eq!(hc.interval, None);
        assert_eq!(
            c.docker.on_build.as_deref(),
            Some(&["COPY . /app".to_string()][..])
        );
        assert_eq!(c.oci.author().as_deref(), Some("me"));
        // The serialised form has Docker's map shapes.
        let json = String::from_utf8(c.to_bytes()).unwrap();
        assert!(
            json.contains(r#""ExposedPorts":{"53/udp":{},"80/tcp":{}}"#),
            "{json}"
        );
    }

    #[test]
    fn entrypoint_resets_an_inherited_cmd_but_not_one_set_in_the_stage() {
        let mut base = ImageConfig::default();
        edit_exec_config(&mut base, |c| {
            c.set_cmd(Some(vec!["sh".into()]));
        });
        let entry = |src: &str, config: &mut ImageConfig, state: &mut ApplyState| {
            let df = strata_parser::parse(&format!("FROM scratch\n{src}")).unwrap();
            for i in &df.stages[0].instructions {
                apply_instruction(config, i, state).unwrap();
            }
        };
        let mut c = base.clone();
        entry("ENTRYPOINT [\"/e\"]", &mut c, &mut ApplyState::default());
        assert_eq!(exec_config(&c).cmd(), &None);
        let mut c = base.clone();
        entry(
            "CMD [\"x\"]\nENTRYPOINT [\"/e\"]",
            &mut c,
            &mut ApplyState::default(),
        );
        assert_eq!(
            exec_config(&c).cmd().as_deref(),
            Some(&["x".to_string()][..])
        );
    }

    #[test]
    fn layer_instructions_are_not_config_changes() {
        let df = strata_parser::parse("FROM scratch\nRUN true\n").unwrap();
        let err = apply_instruction(
            &mut ImageConfig::default(),
            &df.stages[0].instructions[0],
            &mut ApplyState::default(),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "RUN on line 2 is not a config change");
    }

    #[test]
    fn import_changes_apply_in_order_with_history() {
        let mut c = ImageConfig::default();
        let texts = apply_changes(
            &mut c,
            &["ENV NAME=world", "CMD echo hello $NAME", "EXPOSE 8080"],
        )
        .unwrap();
        assert_eq!(
            texts,
            [
                "ENV NAME=world",
                "CMD [\"/bin/sh\" \"-c\" \"echo hello $NAME\"]",
                "EXPOSE map[8080/tcp:{}]"
            ]
        );
        assert_eq!(c.oci.history().as_ref().map(Vec::len), Some(3));
        assert!(apply_changes(&mut c, &["RUN true"]).is_err());
        assert!(apply_changes(&mut c, &["CMD a\nCMD b"]).is_err());
        let err = apply_changes(&mut c, &["EXPOSE nope"]).unwrap_err();
        insta::assert_snapshot!(err.to_string(), @"invalid change \"EXPOSE nope\": column 8: EXPOSE: invalid port: `nope` is not a port number: found `nope`, expected a port such as 80, 80/udp or 7000-7010");
    }

    #[test]
    fn workdir_normalisation() {
        assert_eq!(normalize_workdir(None, "app"), "/app");
        assert_eq!(normalize_workdir(Some("/a"), "b/../c"), "/a/c");
        assert_eq!(normalize_workdir(Some("/a"), "/x/"), "/x");
        assert_eq!(normalize_workdir(Some("/a"), "../../.."), "/");
    }

    #[test]
    fn created_times_fill_forward_and_the_config_takes_the_last() {
        let mut c = ImageConfig::default();
        push_history(&mut c, history_entry("ENV A=1", true, None));
        push_history(
            &mut c,
            history_entry("RUN x", false, Some("2024-01-01T00:00:00Z".into())),
        );
        push_history(&mut c, history_entry("CMD", true, None));
        push_history(
            &mut c,
            history_entry("RUN y", false, Some("2024-02-01T00:00:00Z".into())),
        );
        push_history(&mut c, history_entry("LABEL", true, None));
        normalize_created(&mut c);
        let times: Vec<String> = c
            .oci
            .history()
            .iter()
            .flatten()
            .map(|h| h.created().clone().unwrap())
            .collect();
        assert_eq!(
            times,
            [
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:00:00Z",
                "2024-02-01T00:00:00Z",
                "2024-02-01T00:00:00Z"
            ]
        );
        assert_eq!(c.oci.created().as_deref(), Some("2024-02-01T00:00:00Z"));
    }
}
