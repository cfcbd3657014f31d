//! Which variables an instruction sees.
//!
//! - Global `ARG`s (before the first `FROM`) are visible only to FROM lines, together
//!   with the automatic platform arguments ([`PLATFORM_ARGS`]).
//! - Inside a stage an `ARG` is visible from its declaration on. Its value is the
//!   `--build-arg` value if one was given, else its default (expanded in the stage's
//!   environment at that point), else — for `ARG NAME` without a default — the global
//!   ARG's value.
//! - `ENV` sets a variable for the rest of the stage (and the image). ENV and ARG write
//!   the same environment; as in BuildKit, the later line wins, so an `ENV` after an
//!   `ARG` of the same name shadows it.
//! - A stage built `FROM` an earlier stage starts from that stage's environment and
//!   declared ARGs; a stage built from an image starts from the image's `Env`.

use crate::error::ParseError;
use crate::instructions::{ArgDef, Instruction, InstructionKind};
use crate::shell::{expand_word, Env, Lookup};
use crate::stages::Dockerfile;

/// The platform arguments BuildKit defines automatically in the global scope.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Proxy arguments usable without an ARG declaration (kept out of history and cache
/// keys unless declared).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// Resolve the global ARGs in order and return the environment FROM lines are expanded
/// in. `builtins` holds the automatic arguments (the platform ones) with their values;
/// `build_args` the `--build-arg` values, which override defaults.
pub fn global_scope(
    dockerfile: &Dockerfile,
    build_args: &dyn Lookup,
    builtins: &dyn Lookup,
) -> Result<Env, ParseError> {
    let mut env = Env::new();
    for name in PLATFORM_ARGS {
        if let Some(v) = builtins.lookup(name) {
            env.set(name, v);
        }
    }
    for def in dockerfile.meta_arg_defs() {
        let value = match build_args.lookup(&def.name) {
            Some(v) => Some(v.to_string()),
            None => match &def.default {
                Some(d) => Some(expand_word(d, &env, dockerfile.escape())?.value),
                None => builtins.lookup(&def.name).map(str::to_string),
            },
        };
        if let Some(v) = value {
            env.set(&def.name, &v);
        }
    }
    Ok(env)
}

/// The variable environment of a stage as its instructions are walked in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StageScope {
    env: Env,
    declared_args: Vec<String>,
}

impl StageScope {
    /// A stage built from an image whose config holds `image_env`.
    pub fn from_image(image_env: Env) -> StageScope {
        StageScope {
            env: image_env,
            declared_args: Vec::new(),
        }
    }

    /// The environment instructions are expanded in at this point.
    pub fn env(&self) -> &Env {
        &self.env
    }

    /// The ARG names declared so far (with or without a value).
    pub fn declared_args(&self) -> &[String] {
        &self.declared_args
    }

    /// Whether `name` was declared with ARG in this scope.
    pub fn is_declared_arg(&self, name: &str) -> bool {
        self.declared_args.iter().any(|a| a == name)
    }

    /// Declare one ARG: its value is the `--build-arg` value, else its default expanded
    /// in the current environment, else the global ARG's value. Returns the variables
    /// the default referenced that were unset.
    pub fn declare_arg(
        &mut self,
        def: &ArgDef,
        build_args: &dyn Lookup,
        globals: &dyn Lookup,
        escape: char,
    ) -> Result<Vec<String>, ParseError> {
        let mut unset = Vec::new();
        let value = match build_args.lookup(&def.name) {
            Some(v) => Some(v.to_string()),
            None => match &def.default {
                Some(d) => {
                    let e = expand_word(d, &self.env, escape)?;
                    unset = e.unset;
                    Some(e.value)
                }
                None => globals.lookup(&def.name).map(str::to_string),
            },
        };
        if let Some(v) = value {
            self.env.set(&def.name, &v);
        }
        if !self.is_declared_arg(&def.name) {
            self.declared_args.push(def.name.clone());
        }
        Ok(unset)
    }

    /// Apply one instruction's effect on the environment (ARG and ENV; others leave it
    /// unchanged). `globals` is the resolved global scope ([`global_scope`]).
    pub fn apply(
        &mut self,
        instruction: &Instruction,
        build_args: &dyn Lookup,
        globals: &dyn Lookup,
        escape: char,
    ) -> Result<(), ParseError> {
        match &instruction.kind {
            InstructionKind::Arg(a) => {
                // Each definition sees the ones before it in the same instruction.
                for def in &a.args {
                    self.declare_arg(def, build_args, globals, escape)?;
                }
            }
            InstructionKind::Env(_) => {
                let expanded = instruction.expand(&self.env, escape)?;
                if let InstructionKind::Env(e) = expanded.value.kind {
                    for kv in e.vars {
                        self.env.set(&kv.key, &kv.value);
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::NoEnv;

    fn walk(src: &str, build_args: &[(&str, &str)]) -> Vec<Env> {
        let df = crate::parse(src).unwrap();
        let globals = global_scope(&df, &build_args, &NoEnv).unwrap();
        let mut out = Vec::new();
        for stage in &df.stages {
            let mut scope = StageScope::default();
            for i in &stage.instructions {
                scope.apply(i, &build_args, &globals, '\\').unwrap();
            }
            out.push(scope.env().clone());
        }
        out
    }

    #[test]
    fn global_args_reach_only_from_lines_unless_redeclared() {
        let src = "ARG V=1.0\nARG IMG=alpine:$V\nFROM $IMG\nRUN echo\nFROM $IMG\nARG V\n";
        let df = crate::parse(src).unwrap();
        let g = global_scope(&df, &NoEnv, &NoEnv).unwrap();
        assert_eq!(g.get("IMG"), Some("alpine:1.0"));
        let from = df.stages[0].from.expand(&g, '\\').unwrap();
        assert_eq!(from.value.image, "alpine:1.0");
        let envs = walk(src, &[]);
        assert_eq!(envs[0].get("V"), None);
        assert_eq!(envs[1].get("V"), Some("1.0"));
    }

    #[test]
    fn build_args_override_defaults() {
        let envs = walk("FROM x\nARG A=default\nARG B=$A-b\n", &[("A", "cli")]);
        assert_eq!(envs[0].get("A"), Some("cli"));
        assert_eq!(envs[0].get("B"), Some("cli-b"));
    }

    #[test]
    fn env_shadows_earlier_arg_and_later_line_wins() {
        let envs = walk("FROM x\nARG V=arg\nENV V=env\n", &[]);
        assert_eq!(envs[0].get("V"), Some("env"));
        // BuildKit: an ARG with a value after an ENV replaces it for the build.
        let envs = walk("FROM x\nENV V=env\nARG V=arg\n", &[]);
        assert_eq!(envs[0].get("V"), Some("arg"));
        // Without a value the ARG leaves the ENV alone.
        let envs = walk("FROM x\nENV V=env\nARG V\n", &[]);
        assert_eq!(envs[0].get("V"), Some("env"));
    }

    #[test]
    fn arg_is_visible_only_after_its_declaration() {
        let df = crate::parse("FROM x\nWORKDIR /$D\nARG D=app\nWORKDIR /$D\n").unwrap();
        let mut scope = StageScope::default();
        let mut seen = Vec::new();
        for i in &df.stages[0].instructions {
            let e = i.expand(scope.env(), '\\').unwrap();
            if let InstructionKind::Workdir(w) = e.value.kind {
                seen.push(w.path);
            }
            scope.apply(i, &NoEnv, &NoEnv, '\\').unwrap();
        }
        assert_eq!(seen, vec!["/", "/app"]);
    }
}
