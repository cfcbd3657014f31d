//! What `pull`, `push` and `login` share: the options that say how to reach registries, and
//! the progress display (a bar per blob on a terminal, plain lines otherwise).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Mutex;

use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use strata_store::registry::{BlobKind, BlobOutcome, ClientOptions, Event, Reporter};
use strata_store::{human_size, Digest, Error};

/// How to reach registries.
#[derive(Clone, Debug, Args)]
pub struct RegistryArgs {
    /// Verify TLS certificates: `--tls-verify=false` skips verification and allows plain http
    /// for every registry; `--tls-verify` verifies even loopback registries. By default every
    /// registry is verified except insecure ones (127.0.0.0/8, localhost, --insecure-registry).
    #[arg(
        long,
        value_name = "BOOL",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub tls_verify: Option<bool>,
    /// Treat a registry as insecure: https without verification, then plain http (a host,
    /// host:port or an IPv4 CIDR; repeat or separate with commas).
    #[arg(
        long = "insecure-registry",
        value_name = "HOST",
        env = "STRATA_INSECURE_REGISTRIES",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,
    /// Certificates in Docker's certs.d layout: DIR/<host[:port]>/*.crt are CAs for that
    /// registry, *.cert + *.key a client certificate (default: /etc/docker/certs.d and
    /// /etc/containers/certs.d).
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
    /// A CA certificate file (PEM) to trust for every registry (repeatable).
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Docker's credentials file (default: $DOCKER_CONFIG/config.json, else
    /// ~/.docker/config.json).
    #[arg(long, value_name = "FILE", env = "STRATA_AUTHFILE")]
    pub authfile: Option<PathBuf>,
}

impl RegistryArgs {
    /// The client options these flags ask for.
    pub fn client_options(&self) -> ClientOptions {
        let mut o = ClientOptions {
            tls_verify: self.tls_verify,
            insecure_registries: self.insecure_registries.clone(),
            ca_files: self.ca_files.clone(),
            auth_file: self.authfile.clone(),
            ..ClientOptions::default()
        };
        if let Some(dir) = &self.cert_dir {
            o.cert_dirs = vec![dir.clone()];
        }
        o
    }

    /// The credentials file in use.
    pub fn authfile_path(&self) -> anyhow::Result<PathBuf> {
        match &self.authfile {
            Some(p) => Ok(p.clone()),
            None => strata_store::registry::AuthFile::default_path().ok_or_else(|| {
                anyhow::anyhow!("neither --authfile, DOCKER_CONFIG nor HOME is set")
            }),
        }
    }
}

/// A hint for errors a user can act on.
pub fn explain(e: Error) -> anyhow::Error {
    let hint = match &e {
        Error::Registry {
            registry,
            status: Some(401),
            ..
        } => Some(format!(
            "log in first: strata login {}",
            if registry == "docker.io" { "" } else { registry }
        )),
        Error::Registry {
            registry,
            status: None,
            reason,
            ..
        } if reason.contains("certificate") || reason.contains("UnknownIssuer") => Some(format!(
            "trust its CA with --cert-dir or --ca-file, or skip verification with --tls-verify=false (or --insecure-registry {registry})"
        )),
        _ => None,
    };
    match hint {
        Some(h) => anyhow::Error::new(e).context(h.trim_end().to_string()),
        None => anyhow::Error::new(e),
    }
}

/// Progress of a transfer: bars on a terminal, one line per finished blob otherwise.
pub struct Progress {
    quiet: bool,
    bars: Option<(MultiProgress, Mutex<HashMap<Digest, ProgressBar>>)>,
    pulling: bool,
}

impl Progress {
    /// `pulling` picks the words (`Pull complete` or `Pushed`).
    pub fn new(quiet: bool, pulling: bool) -> Progress {
        let bars = (!quiet && std::io::stdout().is_terminal()).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stdout()),
                Mutex::new(HashMap::new()),
            )
        });
        Progress {
            quiet,
            bars,
            pulling,
        }
    }

    /// Print a line above the bars (or plainly).
    pub fn line(&self, text: &str) {
        if self.quiet {
            return;
        }
        match &self.bars {
            Some((multi, _)) => {
                let _ = multi.println(text);
            }
            None => {
                let _ = writeln!(std::io::stdout().lock(), "{text}");
            }
        }
    }

    fn outcome_text(&self, outcome: &BlobOutcome) -> String {
        match outcome {
            BlobOutcome::Downloaded => "Pull complete".into(),
            BlobOutcome::AlreadyStored => "Already exists".into(),
            BlobOutcome::LayerReused { blob } => format!("Already exists (as {})", blob.short()),
            BlobOutcome::Uploaded => "Pushed".into(),
            BlobOutcome::AlreadyInRegistry => "Layer already exists".into(),
            BlobOutcome::Mounted { from } => format!("Mounted from {from}"),
            _ => "Done".into(),
        }
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{prefix}: {msg:<12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ")
}

impl Reporter for Progress {
    fn report(&self, event: Event) {
        match event {
            Event::Retrying {
                what,
                attempt,
                delay,
                reason,
            } => {
                // Retries matter even when quiet: they explain a slow transfer.
                let text = format!(
                    "{what}: attempt {attempt} failed ({reason}); retrying in {:.1}s",
                    delay.as_secs_f64()
                );
                match &self.bars {
                    Some((multi, _)) => {
                        let _ = multi.println(text);
                    }
                    None => eprintln!("{text}"),
                }
            }
            Event::BlobStarted { digest, size, kind } => {
                if let Some((multi, bars)) = &self.bars {
                    if kind == BlobKind::Config && self.pulling {
                        return;
                    }
                    let bar = multi.add(ProgressBar::new(size));
                    bar.set_style(bar_style());
                    bar.set_prefix(digest.short());
                    bar.set_message(if self.pulling {
                        "Downloading"
                    } else {
                        "Pushing"
                    });
                    if let Ok(mut b) = bars.lock() {
                        b.insert(digest, bar);
                    }
                }
            }
            Event::BlobProgress { digest, done, .. } => {
                if let Some((_, bars)) = &self.bars {
                    if let Some(bar) = bars.lock().ok().and_then(|b| b.get(&digest).cloned()) {
                        bar.set_position(done);
                    }
                }
            }
            Event::BlobDone {
                digest,
                size,
                kind,
                outcome,
            } => {
                let text = self.outcome_text(&outcome);
                match &self.bars {
                    Some((_, bars)) => {
                        if let Some(bar) = bars.lock().ok().and_then(|mut b| b.remove(&digest)) {
                            bar.set_style(
                                ProgressStyle::with_template("{prefix}: {msg}")
                                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
                            );
                            bar.finish_with_message(format!("{text} ({})", human_size(size)));
                        }
                    }
                    None => {
                        if !(self.quiet || kind == BlobKind::Config && self.pulling) {
                            self.line(&format!("{}: {text}", digest.short()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
}
