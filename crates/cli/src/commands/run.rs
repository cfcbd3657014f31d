//! `strata run [--rm] [--name N] [-e K=V] [-w DIR] [-u USER] [--network host|none]
//! [--entrypoint E] IMAGE [CMD...]`: a container over the image, its command run isolated as a
//! build's `RUN` is, its output passed through untouched and its exit code returned.
//!
//! Standard output carries only the command's own output (no progress), so
//! `strata run --rm IMG cat /f > f` works in scripts. Failures of strata itself exit with
//! 125, a command that does not exist with 127 and one that cannot be executed with 126, as
//! Docker's CLI does.

use std::io::Write;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use strata_builder::container::{exit_code_of, CreateOptions, Network};
use strata_builder::exec::{OutputSink, Stream};
use strata_builder::Error as BuildError;

use crate::global::GlobalArgs;
use crate::ui::color::Palette;
use crate::ui::error::{self, Failure};

const EXAMPLES: &str = "\
Examples:
  strata run --rm busybox echo hello          run a command, then remove the container
  strata run --name web -e MODE=dev app:1     keep the container (see `strata ps -a`)
  strata run --rm -w /tmp -u nobody busybox id
  strata run --rm --network none --entrypoint /bin/sh busybox -c 'ip addr'";

/// The networks a container may have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum NetworkArg {
    /// The host's network (as a build's RUN).
    Host,
    /// Only a loopback interface.
    None,
}

/// Options of `strata run`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct RunArgs {
    /// Remove the container (and its writable layer) when the command ends.
    #[arg(long)]
    rm: bool,
    /// Name the container (default: a random `adjective_surname`).
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (`K=V`; a bare `K` takes the host's value).
    #[arg(short, long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Working directory inside the container (absolute).
    #[arg(short, long = "workdir", value_name = "DIR")]
    workdir: Option<String>,
    /// User to run as: `name`, `uid`, `name:group` or `uid:gid`.
    #[arg(short, long, value_name = "USER")]
    user: Option<String>,
    /// The container's network.
    #[arg(long, value_enum, default_value = "host")]
    network: NetworkArg,
    /// Replace the image's ENTRYPOINT (`""` clears it); the image's CMD is dropped too.
    #[arg(long, value_name = "COMMAND")]
    entrypoint: Option<String>,
    /// The image (reference or ID).
    #[arg(value_name = "IMAGE")]
    image: String,
    /// The command and its arguments (default: the image's CMD).
    #[arg(
        value_name = "CMD",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    command: Vec<String>,
}

/// Passes the command's output through byte for byte.
struct Passthrough;

impl OutputSink for Passthrough {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        let mut data = line.to_vec();
        data.push(b'\n');
        self.bytes(stream, &data);
    }
    fn raw(&self) -> bool {
        true
    }
    fn bytes(&mut self, stream: Stream, data: &[u8]) {
        // A closed pipe on our side must not stop the command: its output is dropped.
        let _ = match stream {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            Stream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(data).and_then(|()| err.flush())
            }
        };
    }
}

/// `-e K` takes the host's value of `K` (and unsets `K` when the host has none).
fn env_values(given: &[String]) -> Vec<String> {
    given
        .iter()
        .map(|e| match e.contains('=') {
            true => e.clone(),
            false => match std::env::var(e) {
                Ok(v) => format!("{e}={v}"),
                Err(_) => e.clone(),
            },
        })
        .collect()
}

fn fail(e: anyhow::Error, place: &str, code: i32) -> ExitCode {
    let _ = std::io::stdout().flush();
    eprint!("{}", error::render(&e, Some(place), Palette::stderr()));
    ExitCode::from(u8::try_from(code).unwrap_or(error::EXIT_USAGE))
}

pub fn run(global: &GlobalArgs, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let root = global.store_root()?;
    let store_place = format!("store {}", root.display());
    let engine = match global.open_engine() {
        Ok(e) => e,
        Err(e) => return Ok(fail(e, &store_place, 125)),
    };
    let cancel = match super::build::install_cancel_handler() {
        Ok(c) => c,
        Err(e) => return Ok(fail(e, &store_place, 125)),
    };
    let opts = CreateOptions {
        name: args.name.clone(),
        command: args.command.clone(),
        entrypoint: args.entrypoint.clone(),
        env: env_values(&args.env),
        working_dir: args.workdir.clone(),
        user: args.user.clone(),
        network: match args.network {
            NetworkArg::Host => Network::Host,
            NetworkArg::None => Network::None,
        },
    };
    let containers = engine.containers();
    let container = match containers.create(&args.image, &opts) {
        Ok(c) => c,
        Err(e) => {
            let place = match e {
                BuildError::InvalidContainerName { .. } | BuildError::ContainerNameInUse { .. } => {
                    "--name".to_string()
                }
                _ => format!("image {}", args.image),
            };
            return Ok(fail(e.into(), &place, 125));
        }
    };
    let place = format!("container {}", container.name);
    let result = containers.start(&container.id, &mut Passthrough, &cancel);
    let removed = if args.rm {
        containers.remove(&container.id, true).map(|_| ())
    } else {
        Ok(())
    };
    let code = match result {
        Ok(status) => status.code(),
        // Ctrl-C: the command was killed, as Docker's CLI reports it (no message).
        Err(BuildError::Cancelled) => exit_code_of(&BuildError::Cancelled),
        Err(e) => {
            let code = exit_code_of(&e);
            let e: anyhow::Error = e.into();
            let e = match code {
                127 | 126 => anyhow::Error::new(
                    Failure::new(format!("{e:#}"))
                        .hint("the command runs inside the image: check its PATH and that the file exists there (`strata run --rm IMAGE ls -l /bin`)"),
                ),
                _ => e,
            };
            return Ok(fail(e, &place, code));
        }
    };
    if let Err(e) = removed {
        // The command ran; only the clean-up failed: say so but keep its exit code.
        let e = anyhow::Error::from(e).context("removing the container after the run");
        eprint!("{}", error::render(&e, Some(&place), Palette::stderr()));
    }
    Ok(ExitCode::from(u8::try_from(code & 0xff).unwrap_or(1)))
}
