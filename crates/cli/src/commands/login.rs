//! `strata login`: check credentials against a registry and store them in Docker's format.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use strata_store::registry::{registry_host, AuthFile, Client, Credentials};

use super::registry::{explain, RegistryArgs};
use crate::ui::out::outln;

const EXAMPLES: &str = "\
Examples:
  strata login 127.0.0.1:5000                  prompt for user name and password
  echo \"$TOKEN\" | strata login -u ci --password-stdin reg.example";

/// Options of `strata login`.
#[derive(Debug, Args)]
#[command(after_help = EXAMPLES)]
pub struct LoginArgs {
    /// The registry (`127.0.0.1:5000`, `ghcr.io`; default: Docker Hub).
    server: Option<String>,
    /// User name (asked for on a terminal when missing).
    #[arg(short, long)]
    username: Option<String>,
    /// Password (visible to other users of this machine: prefer --password-stdin).
    #[arg(short, long)]
    password: Option<String>,
    /// Read the password from standard input.
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    registry: RegistryArgs,
}

pub fn run(args: &LoginArgs) -> anyhow::Result<ExitCode> {
    let host = registry_host(args.server.as_deref().unwrap_or("docker.io"));
    let stdin = std::io::stdin();
    if args.password_stdin && args.password.is_some() {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if args.password_stdin && args.username.is_none() {
        bail!("must provide --username with --password-stdin");
    }
    let username = match &args.username {
        Some(u) => u.clone(),
        None => {
            if !stdin.is_terminal() {
                bail!("no --username given and standard input is not a terminal to ask on");
            }
            eprint!("Username: ");
            let mut line = String::new();
            stdin.lock().read_line(&mut line)?;
            line.trim().to_string()
        }
    };
    if username.is_empty() {
        bail!("the user name is empty");
    }
    let password = if args.password_stdin {
        let mut text = String::new();
        stdin
            .lock()
            .read_to_string(&mut text)
            .context("reading the password from standard input")?;
        text.trim_end_matches(['\n', '\r']).to_string()
    } else if let Some(p) = &args.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p.clone()
    } else {
        if !stdin.is_terminal() {
            bail!("no password given: use --password-stdin to pipe it in");
        }
        read_password("Password: ")?
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let credentials = Credentials { username, password };
    let client = Client::new(args.registry.client_options());
    client
        .login(&host, &credentials)
        .map_err(explain)
        .with_context(|| format!("cannot log in to {host}"))?;
    let path = args.registry.authfile_path()?;
    let mut file = AuthFile::load(&path)?;
    file.set(&host, &credentials);
    file.save()?;
    outln!("Login Succeeded")?;
    Ok(ExitCode::SUCCESS)
}

/// Ask on the terminal with echo off.
fn read_password(prompt: &str) -> anyhow::Result<String> {
    eprint!("{prompt}");
    std::io::stderr().flush()?;
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain old data; tcgetattr fills it for a terminal fd, and we only
    // call tcsetattr with a value tcgetattr produced.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: as above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
