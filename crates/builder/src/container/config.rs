//! What a container runs: Docker's ENTRYPOINT/CMD matrix, its environment and working
//! directory, from the image config and the options of `strata run`. Pure functions.

use serde::{Deserialize, Serialize};
use strata_store::ImageConfig;

use crate::exec::{NetworkMode, DEFAULT_PATH};
use crate::imageconfig::exec_config;
use crate::Error;

/// The network a container gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The host's network (the default, like a build's `RUN`).
    #[default]
    Host,
    /// Only a loopback interface.
    None,
}

impl Network {
    /// The executor's mode for this network.
    pub fn mode(self) -> NetworkMode {
        match self {
            Network::Host => NetworkMode::Host,
            Network::None => NetworkMode::None,
        }
    }

    /// `host` or `none`.
    pub fn name(self) -> &'static str {
        match self {
            Network::Host => "host",
            Network::None => "none",
        }
    }
}

/// The options of `strata run` that decide what the container runs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOptions {
    /// The container's name (a random `adjective_name` when `None`).
    pub name: Option<String>,
    /// The command (`CMD` override); empty keeps the image's.
    pub command: Vec<String>,
    /// `--entrypoint`: replaces the image's `ENTRYPOINT` with one word (`""` clears it) and
    /// drops the image's `CMD`, as Docker does.
    pub entrypoint: Option<String>,
    /// `-e` values in order: `K=V` sets `K`; a bare `K` unsets it (the CLI turns `-e K` into
    /// `K=<host value>` when the host has one, as Docker does).
    pub env: Vec<String>,
    /// `-w`: the working directory (absolute).
    pub working_dir: Option<String>,
    /// `-u`: `user`, `uid`, `user:group` or `uid:gid`.
    pub user: Option<String>,
    /// `--network`.
    pub network: Network,
}

/// Docker's container `Config`, the parts strata uses: what `start` runs and `commit`
/// writes into the new image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerConfig {
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`K=V`): the image's with the `-e` values applied.
    pub env: Vec<String>,
    /// `WorkingDir` (empty: `/`).
    pub working_dir: String,
    /// `User` (empty: root).
    pub user: String,
    /// The network.
    pub network: Network,
    /// The host name inside (the short ID).
    pub hostname: String,
}

impl ContainerConfig {
    /// What runs: the entrypoint followed by the command.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint.iter().chain(&self.cmd).cloned().collect()
    }

    /// The working directory the process starts in.
    pub fn cwd(&self) -> &str {
        if self.working_dir.is_empty() {
            "/"
        } else {
            &self.working_dir
        }
    }

    /// The process environment, as Docker builds it: `PATH` (the default) and `HOSTNAME`
    /// first, then the container's `Env` replacing or appending, then `HOME` (from the
    /// user database, `home`) when nothing set it.
    pub fn process_env(&self, home: &str) -> Vec<(String, String)> {
        let defaults = vec![
            format!("PATH={DEFAULT_PATH}"),
            format!("HOSTNAME={}", self.hostname),
        ];
        let mut env: Vec<(String, String)> = merge_env(&defaults, &self.env)
            .into_iter()
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect();
        if !env.iter().any(|(k, _)| k == "HOME") {
            env.push(("HOME".into(), home.to_string()));
        }
        env
    }
}

/// Docker's `ReplaceOrAppendEnvValues`: each override `K=V` replaces `K` in place or is
/// appended; a bare `K` removes it.
pub fn merge_env(defaults: &[String], overrides: &[String]) -> Vec<String> {
    let key = |kv: &str| kv.split_once('=').map_or(kv, |(k, _)| k).to_string();
    let mut out: Vec<String> = defaults.to_vec();
    for o in overrides {
        let k = key(o);
        if o.contains('=') {
            match out.iter_mut().find(|e| key(e) == k) {
                Some(slot) => *slot = o.clone(),
                None => out.push(o.clone()),
            }
        } else {
            out.retain(|e| key(e) != k);
        }
    }
    out
}

/// The container config of `image` run with `opts`, checked: something to run, an absolute
/// working directory.
pub fn resolve(
    image: &ImageConfig,
    image_name: &str,
    opts: &CreateOptions,
    hostname: &str,
) -> Result<ContainerConfig, Error> {
    let c = exec_config(image);
    let entrypoint = match opts.entrypoint.as_deref() {
        Some("") => Vec::new(),
        Some(e) => vec![e.to_string()],
        None => c.entrypoint().clone().unwrap_or_default(),
    };
    let cmd = if !opts.command.is_empty() {
        opts.command.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        c.cmd().clone().unwrap_or_default()
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(Error::NoCommand {
            image: image_name.to_string(),
        });
    }
    let working_dir = match opts.working_dir.as_deref() {
        Some(w) if !w.starts_with('/') => {
            return Err(Error::InvalidOption {
                option: "working directory",
                value: w.to_string(),
                reason: "it must be an absolute path".into(),
            })
        }
        Some(w) => w.to_string(),
        None => c.working_dir().clone().unwrap_or_default(),
    };
    Ok(ContainerConfig {
        entrypoint,
        cmd,
        env: merge_env(&c.env().clone().unwrap_or_default(), &opts.env),
        working_dir,
        user: opts
            .user
            .clone()
            .unwrap_or_else(|| c.user().clone().unwrap_or_default()),
        network: opts.network,
        hostname: hostname.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imageconfig::edit_exec_config;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfig {
        let mut config = ImageConfig::default();
        let v = |s: &[&str]| (!s.is_empty()).then(|| s.iter().map(|x| x.to_string()).collect());
        edit_exec_config(&mut config, |c| {
            c.set_entrypoint(v(entrypoint));
            c.set_cmd(v(cmd));
            c.set_env(Some(vec!["PATH=/bin".into(), "A=1".into(), "B=2".into()]));
            c.set_working_dir(Some("/srv".into()));
            c.set_user(Some("app".into()));
        });
        config
    }

    fn argv(image: &ImageConfig, entrypoint: Option<&str>, command: &[&str]) -> Vec<String> {
        let opts = CreateOptions {
            entrypoint: entrypoint.map(str::to_string),
            command: command.iter().map(|s| s.to_string()).collect(),
            ..CreateOptions::default()
        };
        match resolve(image, "img", &opts, "h") {
            Ok(c) => c.argv(),
            Err(e) => vec![e.to_string()],
        }
    }

    /// Docker's ENTRYPOINT/CMD table, and what `--entrypoint` and a command change.
    #[test]
    fn entrypoint_and_cmd_combine_as_in_docker() {
        let neither = image(&[], &[]);
        let cmd_only = image(&[], &["sh"]);
        let ep_only = image(&["/init"], &[]);
        let both = image(&["/init", "--"], &["serve", "-v"]);
        assert_eq!(
            argv(&neither, None, &[]),
            ["no command specified: image img has no ENTRYPOINT or CMD and none was given"]
        );
        assert_eq!(argv(&cmd_only, None, &[]), ["sh"]);
        assert_eq!(argv(&ep_only, None, &[]), ["/init"]);
        assert_eq!(argv(&both, None, &[]), ["/init", "--", "serve", "-v"]);
        // A command replaces CMD and keeps ENTRYPOINT.
        assert_eq!(argv(&both, None, &["ls"]), ["/init", "--", "ls"]);
        assert_eq!(argv(&cmd_only, None, &["ls", "-l"]), ["ls", "-l"]);
        // --entrypoint replaces ENTRYPOINT and drops the image's CMD.
        assert_eq!(argv(&both, Some("/bin/date"), &[]), ["/bin/date"]);
        assert_eq!(argv(&both, Some("sh"), &["-c", "x"]), ["sh", "-c", "x"]);
        // --entrypoint "" clears it: the command alone runs.
        assert_eq!(argv(&both, Some(""), &["ls"]), ["ls"]);
        assert!(argv(&both, Some(""), &[])[0].starts_with("no command specified"));
    }

    #[test]
    fn env_overrides_replace_in_place_append_and_unset() {
        let defaults: Vec<String> = ["PATH=/bin", "A=1", "B=2"].map(String::from).to_vec();
        let over: Vec<String> = ["B=3", "C=4", "A", "D=x=y"].map(String::from).to_vec();
        assert_eq!(
            merge_env(&defaults, &over),
            ["PATH=/bin", "B=3", "C=4", "D=x=y"]
        );
    }

    #[test]
    fn the_process_env_starts_with_path_and_hostname_and_ends_with_home() {
        let opts = CreateOptions {
            env: vec!["EXTRA=1".into()],
            ..CreateOptions::default()
        };
        let c = resolve(&image(&[], &["sh"]), "img", &opts, "0123456789ab").unwrap();
        let env: Vec<String> = c
            .process_env("/home/app")
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "PATH=/bin",
                "HOSTNAME=0123456789ab",
                "A=1",
                "B=2",
                "EXTRA=1",
                "HOME=/home/app"
            ]
        );
        let mut no_path = c.clone();
        no_path.env = vec!["HOME=/x".into()];
        assert_eq!(
            no_path.process_env("/")[0],
            ("PATH".to_string(), DEFAULT_PATH.to_string())
        );
        assert_eq!(no_path.process_env("/").len(), 3, "HOME kept, not added");
    }

    #[test]
    fn options_override_workdir_and_user_and_relative_workdirs_are_refused() {
        let img = image(&[], &["sh"]);
        let c = resolve(&img, "img", &CreateOptions::default(), "h").unwrap();
        assert_eq!((c.cwd(), c.user.as_str()), ("/srv", "app"));
        let opts = CreateOptions {
            working_dir: Some("/tmp".into()),
            user: Some("0:0".into()),
            network: Network::None,
            ..CreateOptions::default()
        };
        let c = resolve(&img, "img", &opts, "h").unwrap();
        assert_eq!((c.cwd(), c.user.as_str()), ("/tmp", "0:0"));
        assert_eq!(c.network.mode(), NetworkMode::None);
        let opts = CreateOptions {
            working_dir: Some("tmp".into()),
            ..CreateOptions::default()
        };
        let e = resolve(&img, "img", &opts, "h").unwrap_err().to_string();
        assert!(e.contains("must be an absolute path"), "{e}");
    }
}
