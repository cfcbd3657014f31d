//! Containers through the library: create, start (output, exit code, state), diff, commit,
//! export, remove, and the image's layers kept by the container's record through a prune;
//! on both storage drivers.

use strata_builder::container::{diff_line, CommitOptions, CreateOptions, Status};
use strata_builder::exec::{CancelToken, OutputSink, Stream};
use strata_builder::{Engine, PruneOptions};
use strata_overlay::Driver;
use strata_store::{RefKind, Reference};

use crate::common::*;

/// Keeps stdout and stderr apart, as bytes.
#[derive(Default)]
struct Captured {
    out: Vec<u8>,
    err: Vec<u8>,
}

impl OutputSink for Captured {
    fn line(&mut self, stream: Stream, line: &[u8]) {
        let mut l = line.to_vec();
        l.push(b'\n');
        self.bytes(stream, &l);
    }
    fn raw(&self) -> bool {
        true
    }
    fn bytes(&mut self, stream: Stream, data: &[u8]) {
        match stream {
            Stream::Stdout => self.out.extend_from_slice(data),
            Stream::Stderr => self.err.extend_from_slice(data),
        }
    }
}

fn opts(command: &[&str]) -> CreateOptions {
    CreateOptions {
        command: command.iter().map(|s| s.to_string()).collect(),
        ..CreateOptions::default()
    }
}

fn lifecycle(engine: &Engine) {
    let containers = engine.containers();
    let cancel = CancelToken::new().unwrap();
    let c = containers
        .create(
            "busybox",
            &CreateOptions {
                name: Some("life".into()),
                env: vec!["A=1".into()],
                ..opts(&[
                    "sh",
                    "-c",
                    "echo $A; echo e >&2; mkdir /srv; echo x > /srv/f; rm /etc/group; exit 5",
                ])
            },
        )
        .unwrap();
    assert_eq!(c.state.status, Status::Created);
    assert_eq!(containers.get("life").unwrap().id, c.id);
    assert_eq!(containers.get(&c.id[..8]).unwrap().id, c.id);
    let mut sink = Captured::default();
    let status = containers.start("life", &mut sink, &cancel).unwrap();
    assert_eq!(status.code(), 5);
    assert_eq!(
        (sink.out.as_slice(), sink.err.as_slice()),
        (&b"1\n"[..], &b"e\n"[..])
    );
    let after = containers.get("life").unwrap();
    assert_eq!(after.state.status, Status::Exited);
    assert_eq!(after.state.exit_code, Some(5));
    assert!(after.state.pid.is_none() && after.state.finished_at.is_some());
    let diff: Vec<String> = containers
        .diff("life")
        .unwrap()
        .iter()
        .map(diff_line)
        .collect();
    assert_eq!(diff, ["C /etc", "D /etc/group", "A /srv", "A /srv/f"]);

    // Commit: one more layer; the committed image has the file and not the deleted one.
    let committed = containers
        .commit(
            "life",
            &CommitOptions {
                reference: Some(Reference::parse("life:1").unwrap()),
                ..CommitOptions::default()
            },
        )
        .unwrap();
    assert!(committed.new_layer);
    let base = engine.store().resolve("busybox").unwrap();
    assert_eq!(committed.image.diff_ids.len(), base.diff_ids.len() + 1);
    assert_eq!(
        read_text(engine, &committed.image, "/srv/f").as_deref(),
        Some("x\n")
    );
    assert_eq!(read_file(engine, &committed.image, "/etc/group"), None);

    // Export: a tar of the merged view.
    let mut tar = Vec::new();
    containers.export("life", &mut tar).unwrap();
    let mut names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(names.contains(&"srv/f".to_string()), "{names:?}");
    assert!(names.contains(&"bin/busybox".to_string()));
    assert!(!names.iter().any(|n| n == "etc/group" || n.contains(".wh.")));

    // The record keeps the image: untagged and pruned, its layers stay for the container.
    engine
        .store()
        .untag(&Reference::parse("busybox:latest").unwrap())
        .unwrap();
    engine
        .store()
        .untag(&Reference::parse("life:1").unwrap())
        .unwrap();
    engine.prune(&PruneOptions::default()).unwrap();
    let mut again = Captured::default();
    let status = containers.start("life", &mut again, &cancel).unwrap();
    assert_eq!(
        status.code(),
        5,
        "the container runs again on its kept layers"
    );

    // Removed: record, writable layer, and then the layers nobody needs.
    containers.remove("life", false).unwrap();
    assert!(containers.list().unwrap().is_empty());
    assert!(engine
        .store()
        .list_refs(RefKind::Container)
        .unwrap()
        .is_empty());
    let report = engine.prune(&PruneOptions::default()).unwrap();
    assert!(
        !report.snapshots.is_empty(),
        "the unpacked busybox layer goes"
    );
    assert!(snapshots(engine).is_empty(), "{:?}", snapshots(engine));
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_container_lives_runs_and_goes_on_overlay() {
    let ts = TestStore::new();
    lifecycle(&ts.engine);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_container_lives_runs_and_goes_on_vfs() {
    let ts = TestStore::with_driver(Some(Driver::Vfs));
    lifecycle(&ts.engine);
}

#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_start_that_fails_leaves_the_container_created_with_dockers_code() {
    let ts = TestStore::new();
    let containers = ts.engine.containers();
    let cancel = CancelToken::new().unwrap();
    let c = containers.create("busybox", &opts(&["/nothere"])).unwrap();
    let e = containers
        .start(&c.id, &mut Captured::default(), &cancel)
        .unwrap_err();
    assert_eq!(strata_builder::container::exit_code_of(&e), 127);
    let after = containers.get(&c.id).unwrap();
    assert_eq!(after.state.status, Status::Created);
    assert_eq!(after.state.exit_code, Some(127));
    assert!(after.state.error.is_some());
    let e = containers
        .create(
            "busybox",
            &CreateOptions {
                user: Some("ghost".into()),
                ..opts(&["true"])
            },
        )
        .and_then(|c| containers.start(&c.id, &mut Captured::default(), &cancel))
        .unwrap_err();
    assert!(e.to_string().contains("ghost"), "{e}");
}

/// A container lock held for a moment by someone other than a runner (as a process forked
/// by another thread holds a copy of it until it execs) does not make a stopped container
/// look running; a lock held for longer than the settling time does.
#[test]
#[ignore = "privileged: needs root and overlayfs (run by cargo xtask test)"]
fn a_lock_held_for_a_moment_does_not_make_a_stopped_container_running() {
    let ts = TestStore::new();
    let containers = ts.engine.containers();
    let cancel = CancelToken::new().unwrap();
    let c = containers.create("busybox", &opts(&["true"])).unwrap();
    containers
        .start(&c.id, &mut Captured::default(), &cancel)
        .unwrap();
    let lock = ts
        .engine
        .store()
        .root()
        .join(format!("builder/containers/{}.lock", c.id));
    assert!(lock.exists(), "{}", lock.display());
    let hold = |secs: &str| {
        // -o: the command does not inherit the lock, so killing flock lets it go.
        let child = std::process::Command::new("flock")
            .args(["-x", "-o"])
            .arg(&lock)
            .args(["sleep", secs])
            .spawn()
            .unwrap();
        // Until flock has it.
        while std::process::Command::new("flock")
            .args(["-n", "-x"])
            .arg(&lock)
            .arg("true")
            .status()
            .unwrap()
            .success()
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child
    };
    let mut long = hold("5");
    let e = containers
        .commit(&c.id, &CommitOptions::default())
        .unwrap_err();
    assert!(
        matches!(e, strata_builder::Error::ContainerRunning { .. }),
        "{e}"
    );
    long.kill().unwrap();
    long.wait().unwrap();
    let mut short = hold("0.3");
    containers.remove(&c.id, false).unwrap();
    short.wait().unwrap();
}
