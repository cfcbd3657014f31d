//! Failures as the user sees them: `Error: <what> (<where>)` on stderr, then a `hint:` line
//! when one helps, and the exit code (1 for failures, 125 for usage errors).
//!
//! Commands return `anyhow` errors. Where a command knows the place (an image, a file, the
//! store) it says so with [`AtPlace::at`]; otherwise the renderer falls back to a place the
//! caller supplies (`main` passes the store root for errors that came from the store or the
//! snapshotter). Hints come from the kind of error underneath, so every command that can hit
//! "no such image" gives the same advice.

use std::fmt;

use super::color::Palette;

/// Exit code of a failed command.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code of a command line that could not be understood (Docker's convention).
pub const EXIT_USAGE: u8 = 125;
/// Exit code when standard output was closed by its reader: what a shell shows for a process
/// killed by SIGPIPE (128 + 13).
pub const EXIT_CLOSED_STDOUT: u8 = 141;

/// A failure with a place, an optional hint, and whether it is a usage error.
#[derive(Debug)]
pub struct Failure {
    what: String,
    place: Option<String>,
    hint: Option<String>,
    usage: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl std::error::Error for Failure {}

impl Failure {
    /// A failure described by `what`.
    pub fn new(what: impl Into<String>) -> Failure {
        Failure {
            what: what.into(),
            place: None,
            hint: None,
            usage: false,
        }
    }

    /// A usage error (exit code 125): the command line asks for something impossible.
    pub fn usage(what: impl Into<String>) -> Failure {
        Failure {
            usage: true,
            ..Failure::new(what)
        }
    }

    /// Where it happened.
    pub fn at(mut self, place: impl Into<String>) -> Failure {
        self.place = Some(place.into());
        self
    }

    /// What to do about it.
    pub fn hint(mut self, hint: impl Into<String>) -> Failure {
        self.hint = Some(hint.into());
        self
    }

    /// Flatten any error: its whole cause chain becomes the message, its hint is kept.
    fn from_error(e: &anyhow::Error) -> Failure {
        if let Some(f) = e.downcast_ref::<Failure>() {
            return Failure {
                what: f.what.clone(),
                place: f.place.clone(),
                hint: f.hint.clone(),
                usage: f.usage,
            };
        }
        Failure {
            what: format!("{e:#}"),
            place: None,
            hint: hint_for(e),
            usage: false,
        }
    }
}

/// Attach a place to an error (kept if the error already names a more precise one).
pub trait AtPlace<T> {
    /// Name where the failure happened: `image busybox:latest`, `store /var/lib/strata`.
    fn at(self, place: impl fmt::Display) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> AtPlace<T> for Result<T, E> {
    fn at(self, place: impl fmt::Display) -> anyhow::Result<T> {
        self.map_err(|e| {
            let e: anyhow::Error = e.into();
            let mut f = Failure::from_error(&e);
            if f.place.is_none() {
                f.place = Some(place.to_string());
            }
            anyhow::Error::new(f)
        })
    }
}

/// The hint for "no image by that name".
pub const HINT_NO_IMAGE: &str = "`strata images` lists what the store has; `strata load -i FILE` or `strata import TARBALL` adds one";

/// Advice for the kinds of error where one helps.
pub fn hint_for(e: &anyhow::Error) -> Option<String> {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            if f.hint.is_some() {
                return f.hint.clone();
            }
        }
        if let Some(s) = cause.downcast_ref::<strata_store::Error>() {
            return store_hint(s);
        }
        if let Some(b) = cause.downcast_ref::<strata_builder::Error>() {
            if let Some(h) = builder_hint(b) {
                return Some(h);
            }
        }
        if let Some(o) = cause.downcast_ref::<strata_overlay::Error>() {
            if matches!(o, strata_overlay::Error::DriverUnavailable { .. }) {
                return Some(
                    "`--storage-driver vfs` works where overlayfs does not (slower: a full copy per layer)"
                        .into(),
                );
            }
        }
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied {
                return Some(
                    "use `--root DIR` (or STRATA_ROOT) for a store you may write to".into(),
                );
            }
        }
    }
    None
}

fn builder_hint(e: &strata_builder::Error) -> Option<String> {
    use strata_builder::Error as E;
    Some(match e {
        E::Store(s) => return store_hint(s),
        E::ContainerNotFound { .. } | E::AmbiguousContainer { .. } => {
            "`strata ps -a` lists the containers with their names and IDs".into()
        }
        E::ContainerNameInUse { .. } => {
            "choose another `--name`, or remove the other container with `strata rm`".into()
        }
        E::NoCommand { .. } => "give the command after the image: `strata run IMAGE sh -c '...'`".into(),
        E::NotATar { .. } => {
            "give a tar archive (plain, gzip, bzip2, xz or zstd), a folder, or `-` with a tar on standard input".into()
        }
        _ => return None,
    })
}

/// Parses a name given for a new image (`tag`'s target, `commit`'s and `import`'s
/// `NAME[:TAG]`), as a usage error placed `at` that argument when it is not a reference.
pub fn new_image_name(text: &str, at: &str) -> Result<strata_store::Reference, Failure> {
    strata_store::Reference::parse(text).map_err(|e| {
        Failure::usage(e.to_string())
            .at(at)
            .hint("a reference reads `name`, `name:tag` or `registry/name:tag`, in lower case")
    })
}

fn store_hint(e: &strata_store::Error) -> Option<String> {
    use strata_store::Error as E;
    Some(match e {
        E::ImageNotFound { .. } => HINT_NO_IMAGE.into(),
        E::InvalidReference { .. } => {
            "a reference reads `name`, `name:tag`, `registry/name:tag` or `name@sha256:<64 hex>`, in lower case".into()
        }
        E::DigestMismatch { .. }
        | E::SizeMismatch { .. }
        | E::DiffIdMismatch { .. }
        | E::BlobNotFound { .. }
        | E::InvalidContent { .. }
        | E::Json { .. } => {
            "`strata fsck` checks the whole store; `strata fsck --repair` drops what is damaged".into()
        }
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "use `--root DIR` (or STRATA_ROOT) for a store you may write to".into()
        }
        _ => return None,
    })
}

/// Whether an error came from the store or the snapshotter (so the store is its place).
pub fn is_storage_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<strata_store::Error>().is_some()
            || c.downcast_ref::<strata_overlay::Error>().is_some()
    })
}

/// The lines to print for an error: `Error: what (where)` and maybe `hint: ...`.
pub fn render(e: &anyhow::Error, fallback_place: Option<&str>, palette: Palette) -> String {
    let f = Failure::from_error(e);
    let mut out = format!("{} {}", palette.error("Error:"), f.what);
    if let Some(place) = f.place.as_deref().or(fallback_place) {
        out.push_str(&format!(" ({place})"));
    }
    out.push('\n');
    if let Some(hint) = &f.hint {
        out.push_str(&format!("{} {hint}\n", palette.hint("hint:")));
    }
    out
}

/// The exit code for an error.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<Failure>() {
        Some(f) if f.usage => EXIT_USAGE,
        _ => EXIT_FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn renders_what_where_and_hint() {
        let e: anyhow::Error = strata_store::Error::ImageNotFound {
            reference: "nothere".into(),
        }
        .into();
        assert_eq!(
            render(&e, Some("store /s"), Palette::plain()),
            format!("Error: no such image: nothere (store /s)\nhint: {HINT_NO_IMAGE}\n")
        );
        assert_eq!(exit_code(&e), 1);

        let e = Err::<(), _>(anyhow::anyhow!("boom"))
            .context("reading x")
            .at("file x")
            .unwrap_err();
        assert_eq!(
            render(&e, Some("store /s"), Palette::plain()),
            "Error: reading x: boom (file x)\n"
        );

        let e = anyhow::Error::new(Failure::usage("bad mix").hint("drop one"));
        assert_eq!(
            render(&e, None, Palette::plain()),
            "Error: bad mix\nhint: drop one\n"
        );
        assert_eq!(exit_code(&e), 125);
    }

    #[test]
    fn hints_survive_places_and_context() {
        let e = Err::<(), _>(strata_store::Error::ImageNotFound {
            reference: "x".into(),
        })
        .context("cannot save")
        .at("image x")
        .unwrap_err();
        let text = render(&e, None, Palette::plain());
        assert!(
            text.starts_with("Error: cannot save: no such image: x (image x)\nhint: "),
            "{text}"
        );
        let inner = Err::<(), _>(anyhow::Error::new(Failure::new("x").at("inner")))
            .at("outer")
            .unwrap_err();
        assert_eq!(render(&inner, None, Palette::plain()), "Error: x (inner)\n");
    }
}
