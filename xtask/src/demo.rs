//! `cargo xtask demo`: the README's main command, the layering story on real images.
//!
//! On the embedded default store (`./.strata` in the checkout, or `$STRATA_ROOT`), it:
//!
//! 1. makes sure Debian's `busybox-static` is installed and builds the `strata` CLI;
//! 2. imports a `busybox:latest` base made from it, when the store has none;
//! 3. builds the seed's images from `examples/seed/` (`layer-base:v1`, `layer-urm:v1`,
//!    `layer-sso:v1`);
//! 4. shows `images --tree`, `history layer-urm:v1` and the overlay folders urm and sso
//!    share (`inspect`'s `GraphDriver.LowerDir`, and their `lower` files);
//! 5. saves urm and sso into one archive and loads it into a second, empty store
//!    (`Loading layer` once per distinct layer), then saves a fourth image on the same base
//!    (`examples/seed/api`) and loads it there too (`already exists` for the shared layers);
//! 6. runs urm (when this strata has `run`) and ends with `system df`.
//!
//! Every step is announced, and every strata command is echoed before it runs. A second run
//! reuses the store: the base is not imported again and every build step is cached; the
//! second store is emptied first so that the load lines tell the same story each time.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, ensure, Context};
use strata_store::Store;

use crate::shared::workspace_root;

/// The images the demo builds, with their folders under `examples/seed`.
const SEED: &[(&str, &str)] = &[
    ("layer-base:v1", "base"),
    ("layer-urm:v1", "urm"),
    ("layer-sso:v1", "sso"),
];

/// The image built on the same base and loaded last, to show `already exists`.
const THIRD: (&str, &str) = ("layer-api:v1", "api");

/// Runs the demo.
pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let root = store_root();
    let work = workspace_root().join("target").join("demo");
    let mut demo = Demo {
        strata: PathBuf::new(),
        root: root.clone(),
        step: 0,
    };

    demo.announce("Preparing: Debian's busybox-static and the strata CLI");
    crate::deps::ensure_packages(&["busybox-static"])?;
    ensure!(
        crate::deps::is_root(),
        "the demo builds images, and a build mounts overlayfs and runs steps in namespaces, \
         which needs root: run `cargo xtask demo` as root"
    );
    demo.strata = crate::strata_bin::build()?;
    say(&format!(
        "strata: {} (debug build: the dev profile the tests already compiled)",
        demo.strata.display()
    ));
    say(&format!(
        "store:  {} ({})",
        root.display(),
        if std::env::var_os("STRATA_ROOT").is_some() {
            "from STRATA_ROOT"
        } else {
            "the embedded default store in the checkout; set STRATA_ROOT for another"
        }
    ));
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;

    demo.announce("The base image: busybox:latest from Debian's busybox-static");
    base_image(&demo, &root, &work)?;

    demo.announce("Building the seed images from examples/seed/ (cached when built before)");
    let seed = workspace_root().join("examples").join("seed");
    for (name, dir) in SEED {
        demo.strata(&["build", "-t", name, path(&seed.join(dir))?])?;
    }

    demo.announce("Images from the same base share its layers: `images --tree`");
    demo.strata(&["images", "--tree"])?;

    demo.announce("Which instructions made layers: `history layer-urm:v1`");
    say("RUN wrote files, so it has a size; CMD only changed the config (0B).");
    demo.strata(&["history", "layer-urm:v1"])?;

    demo.announce("Shared folders on disk: urm's and sso's lower layers");
    shared_lowers(&demo)?;

    demo.announce("Saving urm and sso into one archive: each distinct layer is written once");
    let both = work.join("both.tar");
    demo.strata(&["save", "-o", path(&both)?, "layer-urm:v1", "layer-sso:v1"])?;
    say(&format!(
        "{}: {} bytes",
        both.display(),
        fs::metadata(&both)?.len()
    ));

    let second = work.join("second-store");
    demo.announce("Loading it into a second, empty store: `Loading layer` once per layer");
    if second.exists() {
        fs::remove_dir_all(&second).with_context(|| format!("emptying {}", second.display()))?;
    }
    say(&format!("second store: {}", second.display()));
    demo.strata_in(&second, &["load", "-i", path(&both)?])?;

    demo.announce(&format!(
        "A fourth image on the same base ({}) loads only its own layer",
        THIRD.0
    ));
    demo.strata(&["build", "-t", THIRD.0, path(&seed.join(THIRD.1))?])?;
    let third = work.join("api.tar");
    demo.strata(&["save", "-o", path(&third)?, THIRD.0])?;
    say("The second store has busybox's and the base's layers already: only api's is read.");
    demo.strata_in(&second, &["load", "-i", path(&third)?])?;
    demo.strata_in(&second, &["images", "--tree"])?;

    demo.announce("Running layer-urm:v1 (a container over its layers)");
    say("`strata run` prints only the command's own output: the image's CMD here");
    demo.strata(&["run", "--rm", "layer-urm:v1"])?;

    demo.announce("Disk usage: shared layers are counted once");
    demo.strata(&["system", "df"])?;

    println!();
    say(&format!(
        "demo finished in {:.1}s; the store is at {} (run `cargo xtask demo` again: everything \
         is cached)",
        started.elapsed().as_secs_f64(),
        root.display()
    ));
    Ok(())
}

/// The store the demo fills: `$STRATA_ROOT`, else `.strata` in the checkout.
fn store_root() -> PathBuf {
    match std::env::var_os("STRATA_ROOT").filter(|v| !v.is_empty()) {
        Some(r) => {
            let r = PathBuf::from(r);
            if r.is_relative() {
                std::env::current_dir().map(|d| d.join(&r)).unwrap_or(r)
            } else {
                r
            }
        }
        None => workspace_root().join(".strata"),
    }
}

/// Imports `busybox:latest` into the store at `root` unless it is there.
///
/// Through the store API, as the test fixtures do; it writes what
/// `strata import --change 'CMD ["sh"]' busybox.tar busybox:latest` would.
fn base_image(demo: &Demo, root: &Path, work: &Path) -> anyhow::Result<()> {
    let store =
        Store::open(root).with_context(|| format!("opening the store at {}", root.display()))?;
    if let Ok(image) = store.resolve("busybox:latest") {
        say(&format!(
            "busybox:latest is in the store already ({})",
            short(&image.id().to_string())
        ));
        return Ok(());
    }
    let tar = work.join("busybox.tar");
    say(&format!(
        "packing {} and its applet links into {}",
        crate::busybox::BUSYBOX,
        tar.display()
    ));
    crate::busybox::rootfs_tar(work, &tar)?;
    say("importing it as busybox:latest (one layer, CMD [\"sh\"]), as `docker import` would");
    demo.strata(&[
        "import",
        "--change",
        r#"CMD ["sh"]"#,
        "--message",
        "busybox from Debian's busybox-static",
        path(&tar)?,
        "busybox:latest",
    ])?;
    fs::remove_file(&tar)?;
    let image = store.resolve("busybox:latest")?;
    say(&format!(
        "busybox:latest imported ({})",
        short(&image.id().to_string())
    ));
    Ok(())
}

/// Shows that urm's and sso's overlay folders sit on the same lower folders.
fn shared_lowers(demo: &Demo) -> anyhow::Result<()> {
    let out = demo.strata_output(&["inspect", "layer-urm:v1", "layer-sso:v1"])?;
    let images: Vec<serde_json::Value> =
        serde_json::from_slice(&out).context("reading the JSON of `strata inspect`")?;
    ensure!(images.len() == 2, "inspect printed {} images", images.len());
    let mut lowers = Vec::new();
    for (image, name) in images.iter().zip(["layer-urm:v1", "layer-sso:v1"]) {
        let driver = &image["GraphDriver"];
        let data = &driver["Data"];
        let lower = data["LowerDir"].as_str().unwrap_or("");
        let upper = data["UpperDir"].as_str().unwrap_or("");
        println!("{name}: GraphDriver {}", driver["Name"]);
        println!("  UpperDir  {upper}");
        for (i, dir) in lower.split(':').filter(|d| !d.is_empty()).enumerate() {
            println!("  {}  {dir}", if i == 0 { "LowerDir" } else { "        " });
        }
        // overlay2 keeps, next to each layer's `diff`, a `lower` file naming the layers below
        // through short links in `l/`: what the mount options are made of.
        let lower_file = Path::new(upper).parent().map(|p| p.join("lower"));
        if let Some(file) = lower_file.filter(|f| f.is_file()) {
            let text = fs::read_to_string(&file)?;
            println!("  {}: {}", file.display(), text.trim());
        }
        lowers.push(lower.to_string());
    }
    if images[0]["GraphDriver"]["Name"] != "overlay2" {
        say("this store uses the vfs driver: each layer is a whole copy, no lower folders");
        return Ok(());
    }
    ensure!(
        !lowers[0].is_empty(),
        "inspect shows no LowerDir for layer-urm:v1"
    );
    if lowers[0] == lowers[1] {
        say(&format!(
            "urm and sso name the same {} lower folders: the busybox and base layers are on disk \
             once",
            lowers[0].split(':').count()
        ));
    } else {
        bail!("urm's and sso's LowerDir differ, though both are built on layer-base:v1");
    }
    Ok(())
}

/// The state the steps share.
struct Demo {
    strata: PathBuf,
    root: PathBuf,
    step: usize,
}

impl Demo {
    /// Prints the next step's title.
    fn announce(&mut self, title: &str) {
        self.step += 1;
        println!("\n==> [{}] {title}", self.step);
    }

    /// Runs `strata ARGS` on the demo store, echoing it; fails when it fails.
    fn strata(&self, args: &[&str]) -> anyhow::Result<()> {
        self.strata_in(&self.root.clone(), args)
    }

    /// Runs `strata --root ROOT ARGS`, echoing it; fails when it fails.
    fn strata_in(&self, root: &Path, args: &[&str]) -> anyhow::Result<()> {
        let shown = if root == self.root {
            String::new()
        } else {
            format!("--root {} ", root.display())
        };
        println!("$ strata {shown}{}", shell_words(args));
        let status = Command::new(&self.strata)
            .arg("--root")
            .arg(root)
            .args(args)
            .status()
            .with_context(|| format!("running {}", self.strata.display()))?;
        if !status.success() {
            bail!("`strata {}` failed ({status})", args.join(" "));
        }
        Ok(())
    }

    /// Runs `strata ARGS` on the demo store and returns its standard output.
    fn strata_output(&self, args: &[&str]) -> anyhow::Result<Vec<u8>> {
        println!("$ strata {}", shell_words(args));
        let out = Command::new(&self.strata)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", self.strata.display()))?;
        if !out.status.success() {
            bail!("`strata {}` failed ({})", args.join(" "), out.status);
        }
        Ok(out.stdout)
    }
}

/// The arguments as a shell would need them typed, so a shown command can be pasted.
fn shell_words(args: &[&str]) -> String {
    let plain = |a: &str| {
        !a.is_empty()
            && a.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@,+%".contains(&b))
    };
    args.iter()
        .map(|a| {
            if plain(a) {
                (*a).to_string()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints a line of narration.
fn say(text: &str) {
    println!("    {text}");
}

/// The path as text (strata takes paths as arguments).
fn path(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not valid UTF-8", p.display()))
}

/// `sha256:0123456789ab` from a full digest.
fn short(id: &str) -> &str {
    id.get(..19).unwrap_or(id)
}

#[cfg(test)]
mod tests {
    use super::shell_words;

    #[test]
    fn shown_commands_are_quoted_as_a_shell_needs() {
        assert_eq!(
            shell_words(&[
                "import",
                "--change",
                r#"CMD ["sh"]"#,
                "-m",
                "Debian's",
                "x.tar"
            ]),
            r#"import --change 'CMD ["sh"]' -m 'Debian'\''s' x.tar"#
        );
    }
}
