//! `USER` and `--chown` resolution against an image's `/etc/passwd` and `/etc/group`.
//!
//! Docker resolves user strings in two different ways (reference notes §6.7), and both are
//! reproduced here:
//!
//! - **RUN and runtime** ([`resolve_run_user`], [`ExecUser::resolve`]): `""` is root;
//!   `uid:gid` with both parts numeric is used as is without reading any file (BuildKit's fast
//!   path); otherwise moby/sys `GetExecUser`: a name must exist in `/etc/passwd`, a numeric
//!   uid may be absent (then gid 0); without an explicit group the primary gid comes from
//!   passwd and the supplementary groups from `/etc/group` memberships; with a group only
//!   that group is used.
//! - **COPY/ADD `--chown`** ([`resolve_chown`]): a user name gives uid and primary gid from
//!   passwd, a numeric user gives uid = gid = that number, a group (name or number) then
//!   overrides the gid; no supplementary groups. BuildKit silently falls back to 0 when a
//!   name is missing; we fail with the same message as the RUN path.
//!
//! The files are parsed here, never through NSS: loading the image's `libnss_*.so` into the
//! builder would run image code as root (CVE-2019-14271). They are opened inside the root
//! with in-root resolution, must be regular files and are read up to 10 MiB.

use std::io::Read;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use strata_overlay::in_root::{Follow, Root};

use crate::Error;

/// The most we read of `/etc/passwd` or `/etc/group` (BuildKit's and moby/sys's cap).
pub const USER_FILE_LIMIT: u64 = 10 << 20;

/// The largest uid or gid accepted from a user string (moby/sys keeps ids below 2^31).
const MAX_ID: i64 = (1 << 31) - 1;

/// One line of `/etc/passwd`: `name:password:uid:gid:gecos:home:shell`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PasswdEntry {
    /// Login name.
    pub name: String,
    /// Password field (usually `x`).
    pub password: String,
    /// Numeric user id (0 when the field is not a number, as moby/sys reads it).
    pub uid: i64,
    /// Primary group id (0 when the field is not a number).
    pub gid: i64,
    /// Comment field.
    pub gecos: String,
    /// Home directory.
    pub home: String,
    /// Login shell.
    pub shell: String,
}

/// One line of `/etc/group`: `name:password:gid:member,member`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupEntry {
    /// Group name.
    pub name: String,
    /// Password field.
    pub password: String,
    /// Numeric group id (0 when the field is not a number).
    pub gid: i64,
    /// User names listed as members.
    pub members: Vec<String>,
}

/// Go's `strconv.Atoi` with the error ignored, as moby/sys reads numeric fields.
fn lenient_int(field: &str) -> i64 {
    parse_go_int(field).unwrap_or(0)
}

/// Go's `strconv.Atoi`: an optional sign and decimal digits, fitting in i64.
fn parse_go_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'+') => (false, &text[1..]),
        Some(b'-') => (true, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let value: i64 = digits.parse().ok()?;
    Some(if negative { -value } else { value })
}

/// Lines of a user database: split on `\n`, a trailing `\r` dropped, surrounding white space
/// trimmed, empty lines skipped.
fn lines(text: &[u8]) -> impl Iterator<Item = String> + '_ {
    text.split(|&b| b == b'\n')
        .map(|line| String::from_utf8_lossy(line).trim().to_string())
        .filter(|line| !line.is_empty())
}

/// Parses `/etc/passwd` content. Lines with fewer fields leave the rest empty; nothing is
/// rejected (moby/sys is as lenient, because real files misbehave).
pub fn parse_passwd(text: &[u8]) -> Vec<PasswdEntry> {
    lines(text)
        .map(|line| {
            let mut f = line.split(':');
            let mut next = || f.next().unwrap_or("").to_string();
            PasswdEntry {
                name: next(),
                password: next(),
                uid: lenient_int(&next()),
                gid: lenient_int(&next()),
                gecos: next(),
                home: next(),
                shell: next(),
            }
        })
        .collect()
}

/// Parses `/etc/group` content; lines starting with `#` are comments (as glibc allows).
pub fn parse_group(text: &[u8]) -> Vec<GroupEntry> {
    lines(text)
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let mut f = line.split(':');
            let mut next = || f.next().unwrap_or("").to_string();
            let name = next();
            let password = next();
            let gid = lenient_int(&next());
            let list = next();
            let members = if list.is_empty() {
                Vec::new()
            } else {
                list.split(',').map(str::to_string).collect()
            };
            GroupEntry {
                name,
                password,
                gid,
                members,
            }
        })
        .collect()
}

/// An image's user database. `None` means the file does not exist in the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UserFiles {
    /// Entries of `/etc/passwd`, if the file exists.
    pub passwd: Option<Vec<PasswdEntry>>,
    /// Entries of `/etc/group`, if the file exists.
    pub group: Option<Vec<GroupEntry>>,
}

impl UserFiles {
    /// Reads `/etc/passwd` and `/etc/group` of the root filesystem at `rootfs`, resolving
    /// both inside it. A missing file is `None`; a file that is not regular or is larger
    /// than [`USER_FILE_LIMIT`] is an error.
    pub fn read(rootfs: &Path) -> Result<Self, Error> {
        let root = Root::open(rootfs)?;
        Ok(UserFiles {
            passwd: read_user_file(&root, rootfs, "etc/passwd")?.map(|t| parse_passwd(&t)),
            group: read_user_file(&root, rootfs, "etc/group")?.map(|t| parse_group(&t)),
        })
    }

    fn user_matches<'a>(&'a self, arg: &'a IdArg) -> impl Iterator<Item = &'a PasswdEntry> {
        self.passwd.iter().flatten().filter(move |u| match arg.id {
            Some(id) => u.uid == id,
            None => u.name == arg.text,
        })
    }

    fn group_matches<'a>(&'a self, arg: &'a IdArg) -> impl Iterator<Item = &'a GroupEntry> {
        self.group.iter().flatten().filter(move |g| match arg.id {
            Some(id) => g.gid == id,
            None => g.name == arg.text,
        })
    }

    /// The home directory of the first passwd entry with `uid`, as runc sets `HOME`.
    pub fn home_of(&self, uid: u32) -> Option<&str> {
        self.passwd
            .iter()
            .flatten()
            .find(|u| u.uid == i64::from(uid))
            .map(|u| u.home.as_str())
    }
}

/// Reads one user database file inside the root, with the checks described on [`UserFiles`].
fn read_user_file(root: &Root, rootfs: &Path, rel: &str) -> Result<Option<Vec<u8>>, Error> {
    let path = rootfs.join(rel);
    // O_NONBLOCK: opening a FIFO planted at /etc/passwd must not hang the build.
    let fd = match root.open_at(
        Path::new(rel),
        OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        Follow::InRoot,
    ) {
        Ok(fd) => fd,
        Err(strata_overlay::Error::Io { source, .. })
            if matches!(source.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) =>
        {
            return Ok(None)
        }
        Err(strata_overlay::Error::Io { source, .. }) => {
            return Err(Error::io("open", path, source))
        }
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|e| Error::io("stat", &path, e))?;
    if !meta.is_file() {
        return Err(Error::NotRegularFile { path });
    }
    let mut text = Vec::new();
    file.take(USER_FILE_LIMIT + 1)
        .read_to_end(&mut text)
        .map_err(|e| Error::io("read", &path, e))?;
    if text.len() as u64 > USER_FILE_LIMIT {
        return Err(Error::FileTooLarge {
            path,
            limit: USER_FILE_LIMIT,
        });
    }
    Ok(Some(text))
}

/// One side of a `user:group` string: its text and, when it is a number, that number.
struct IdArg {
    text: String,
    id: Option<i64>,
}

impl IdArg {
    /// moby/sys `parseNumeric`: a Go integer is an id (and must be in range), anything else
    /// a name. Empty means "not given".
    fn parse(text: &str, what: &'static str) -> Result<Option<IdArg>, Error> {
        if text.is_empty() {
            return Ok(None);
        }
        let numeric = text.trim_start_matches(['+', '-']);
        let id = match parse_go_int(text) {
            Some(id) if (0..=MAX_ID).contains(&id) => Some(id),
            Some(_) => return Err(out_of_range(what, text)),
            // Digits too long for i64 are still a number, just out of range.
            None if !numeric.is_empty()
                && text.len() - numeric.len() <= 1
                && numeric.bytes().all(|b| b.is_ascii_digit()) =>
            {
                return Err(out_of_range(what, text))
            }
            None => None,
        };
        Ok(Some(IdArg {
            text: text.to_string(),
            id,
        }))
    }
}

fn out_of_range(what: &'static str, value: &str) -> Error {
    Error::IdOutOfRange {
        what,
        value: value.to_string(),
    }
}

fn to_id(value: i64, what: &'static str) -> Result<u32, Error> {
    u32::try_from(value).map_err(|_| out_of_range(what, &value.to_string()))
}

/// The identity a RUN step (or a container) runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids, in `/etc/group` order.
    pub supplementary_gids: Vec<u32>,
    /// Home directory from passwd (`/` when unknown), for `HOME` when the env lacks it.
    pub home: String,
}

impl ExecUser {
    /// Root with no supplementary groups and home `/`.
    pub fn root() -> Self {
        ExecUser {
            uid: 0,
            gid: 0,
            supplementary_gids: Vec::new(),
            home: "/".to_string(),
        }
    }

    /// Resolves `spec` (`""`, `user`, `uid`, `user:group`, `uid:gid`, `user:gid`,
    /// `uid:group`) against `files` as moby/sys `GetExecUser` does, starting from root.
    /// Only the first `:` splits: `a:b:c` is user `a`, group `b:c`.
    pub fn resolve(spec: &str, files: &UserFiles) -> Result<Self, Error> {
        let mut user = ExecUser::root();
        let (usr, grp) = spec.split_once(':').unwrap_or((spec, ""));
        let user_arg = IdArg::parse(usr, "user")?;
        let group_arg = IdArg::parse(grp, "group")?;

        let matched = match &user_arg {
            None => files.passwd.iter().flatten().find(|u| u.uid == 0),
            Some(arg) => files.user_matches(arg).next(),
        };
        let mut matched_name = None;
        if let Some(entry) = matched {
            matched_name = Some(entry.name.as_str());
            user.uid = to_id(entry.uid, "user")?;
            user.gid = to_id(entry.gid, "group")?;
            user.home = entry.home.clone();
        } else if let Some(arg) = &user_arg {
            match arg.id {
                Some(id) => user.uid = to_id(id, "user")?,
                None => {
                    return Err(Error::UserNotFound {
                        user: arg.text.clone(),
                    })
                }
            }
        }

        if let Some(arg) = &group_arg {
            match (files.group_matches(arg).next(), arg.id) {
                (Some(group), _) => user.gid = to_id(group.gid, "group")?,
                (None, Some(id)) => user.gid = to_id(id, "group")?,
                (None, None) => {
                    return Err(Error::GroupNotFound {
                        group: arg.text.clone(),
                    })
                }
            }
        } else if let Some(name) = matched_name.filter(|n| !n.is_empty()) {
            user.supplementary_gids = files
                .group
                .iter()
                .flatten()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| to_id(g.gid, "group"))
                .collect::<Result<_, _>>()?;
        }
        Ok(user)
    }
}

/// BuildKit's fast path: both parts of `uid:gid` are unsigned 32-bit decimal numbers.
fn numeric_uid_gid(spec: &str) -> Option<(u32, u32)> {
    let (u, g) = spec.split_once(':')?;
    let parse = |s: &str| -> Option<u32> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        s.parse().ok()
    };
    Some((parse(u)?, parse(g)?))
}

/// Resolves the `USER` of a RUN step (or container) in the root filesystem at `rootfs`.
///
/// `""` and numeric `uid:gid` need no file (the fast path); the home directory is still
/// looked up by uid when passwd is readable, as runc does for `HOME`.
pub fn resolve_run_user(rootfs: &Path, spec: &str) -> Result<ExecUser, Error> {
    let fast = if spec.is_empty() {
        Some((0, 0))
    } else {
        numeric_uid_gid(spec)
    };
    if let Some((uid, gid)) = fast {
        // The fast path must work even when the user database is unreadable.
        let home = UserFiles::read(rootfs)
            .ok()
            .and_then(|files| files.home_of(uid).map(str::to_string))
            .unwrap_or_else(|| "/".to_string());
        return Ok(ExecUser {
            uid,
            gid,
            supplementary_gids: Vec::new(),
            home,
        });
    }
    ExecUser::resolve(spec, &UserFiles::read(rootfs)?)
}

/// The owner a `COPY --chown` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// Resolves a `--chown` value against the destination's user database: `None` for an empty
/// value (keep the default 0:0). See the module docs for the rules.
pub fn resolve_chown(spec: &str, files: &UserFiles) -> Result<Option<Owner>, Error> {
    if spec.is_empty() {
        return Ok(None);
    }
    let (usr, grp) = spec.split_once(':').unwrap_or((spec, ""));
    let mut owner = Owner { uid: 0, gid: 0 };
    if !usr.is_empty() {
        match chown_number(usr) {
            Some(id) => owner = Owner { uid: id, gid: id },
            None => {
                let entry = files
                    .passwd
                    .iter()
                    .flatten()
                    .find(|u| u.name == usr)
                    .ok_or_else(|| Error::UserNotFound {
                        user: usr.to_string(),
                    })?;
                owner = Owner {
                    uid: to_id(entry.uid, "user")?,
                    gid: to_id(entry.gid, "group")?,
                };
            }
        }
    }
    if !grp.is_empty() {
        owner.gid = match chown_number(grp) {
            Some(id) => id,
            None => {
                let entry = files
                    .group
                    .iter()
                    .flatten()
                    .find(|g| g.name == grp)
                    .ok_or_else(|| Error::GroupNotFound {
                        group: grp.to_string(),
                    })?;
                to_id(entry.gid, "group")?
            }
        };
    }
    Ok(Some(owner))
}

/// Reads the destination's user database only when `spec` names a user or group by name.
pub fn resolve_chown_in(rootfs: &Path, spec: &str) -> Result<Option<Owner>, Error> {
    let (usr, grp) = spec.split_once(':').unwrap_or((spec, ""));
    let needs_files = [usr, grp]
        .iter()
        .any(|part| !part.is_empty() && chown_number(part).is_none());
    let files = if needs_files {
        UserFiles::read(rootfs)?
    } else {
        UserFiles::default()
    };
    resolve_chown(spec, &files)
}

/// dockerfile2llb `parseUID`: an unsigned 32-bit decimal number.
fn chown_number(text: &str) -> Option<u32> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

  app:x:1000:1000:App User:/home/app:/bin/sh  
build:x:1001:100::/home/build:/bin/sh
app:x:2000:2000:second app, never used:/nowhere:/bin/false
short:x:1002
weird:x:notanumber:7::/w:/bin/sh
";

    const GROUP: &str = "\
root:x:0:
# a comment line
users:x:100:app,build
docker:x:999:app
app:x:1000:
staff:x:50:build,app
";

    fn files() -> UserFiles {
        UserFiles {
            passwd: Some(parse_passwd(PASSWD.as_bytes())),
            group: Some(parse_group(GROUP.as_bytes())),
        }
    }

    fn exec(spec: &str) -> Result<(u32, u32, Vec<u32>, String), String> {
        ExecUser::resolve(spec, &files())
            .map(|u| (u.uid, u.gid, u.supplementary_gids, u.home))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn passwd_lines_are_parsed_leniently() {
        let entries = parse_passwd(PASSWD.as_bytes());
        assert_eq!(entries.len(), 7);
        assert_eq!(entries[2].name, "app", "surrounding blanks are trimmed");
        assert_eq!(entries[2].gecos, "App User");
        assert_eq!(entries[5].uid, 1002);
        assert_eq!(entries[5].home, "", "missing fields stay empty");
        assert_eq!(entries[6].uid, 0, "a non-number reads as 0");
        let crlf = parse_passwd(b"a:x:5:6:g:/h:/s\r\n");
        assert_eq!(crlf[0].shell, "/s");
    }

    #[test]
    fn group_comments_and_member_lists() {
        let groups = parse_group(GROUP.as_bytes());
        assert_eq!(groups.len(), 5);
        assert_eq!(groups[1].members, ["app", "build"]);
        assert!(groups[0].members.is_empty());
    }

    #[test]
    fn empty_spec_is_root_with_its_home() {
        assert_eq!(exec(""), Ok((0, 0, vec![], "/root".into())));
        assert_eq!(
            ExecUser::resolve("", &UserFiles::default()).unwrap(),
            ExecUser::root()
        );
    }

    #[test]
    fn user_by_name_gets_primary_and_supplementary_groups() {
        assert_eq!(
            exec("app"),
            Ok((1000, 1000, vec![100, 999, 50], "/home/app".into()))
        );
        assert_eq!(
            exec("build"),
            Ok((1001, 100, vec![100, 50], "/home/build".into()))
        );
    }

    #[test]
    fn first_matching_entry_wins() {
        assert_eq!(exec("app").unwrap().0, 1000);
    }

    #[test]
    fn numeric_user_is_looked_up_by_uid_and_may_be_absent() {
        assert_eq!(
            exec("1000"),
            Ok((1000, 1000, vec![100, 999, 50], "/home/app".into()))
        );
        assert_eq!(exec("4242"), Ok((4242, 0, vec![], "/".into())));
        assert_eq!(exec("+7").unwrap().0, 7);
    }

    #[test]
    fn explicit_group_replaces_primary_and_drops_supplementary() {
        assert_eq!(
            exec("app:docker"),
            Ok((1000, 999, vec![], "/home/app".into()))
        );
        assert_eq!(
            exec("app:4000"),
            Ok((1000, 4000, vec![], "/home/app".into()))
        );
        assert_eq!(exec("4242:users"), Ok((4242, 100, vec![], "/".into())));
        assert_eq!(exec(":staff"), Ok((0, 50, vec![], "/root".into())));
    }

    #[test]
    fn unknown_names_fail_with_dockers_message() {
        assert_eq!(
            exec("nobody"),
            Err("unable to find user nobody: no matching entries in passwd file".into())
        );
        assert_eq!(
            exec("app:nogroup"),
            Err("unable to find group nogroup: no matching entries in group file".into())
        );
        let none = UserFiles::default();
        assert!(ExecUser::resolve("app", &none).is_err());
        assert_eq!(ExecUser::resolve("12:34", &none).unwrap().gid, 34);
    }

    #[test]
    fn out_of_range_ids_are_rejected() {
        assert_eq!(exec("-1"), Err("user id -1 is out of range".into()));
        assert_eq!(
            exec("2147483648"),
            Err("user id 2147483648 is out of range".into())
        );
        assert_eq!(
            exec("app:99999999999999999999"),
            Err("group id 99999999999999999999 is out of range".into())
        );
        assert_eq!(exec("2147483647").unwrap().0, 2147483647);
    }

    #[test]
    fn only_the_first_colon_splits() {
        assert_eq!(
            exec("app:a:b"),
            Err("unable to find group a:b: no matching entries in group file".into())
        );
    }

    #[test]
    fn chown_rules_differ_from_run_rules() {
        let f = files();
        let chown = |s: &str| resolve_chown(s, &f).map_err(|e| e.to_string());
        assert_eq!(chown(""), Ok(None));
        // A name gives uid and primary gid, no supplementary groups.
        assert_eq!(
            chown("app"),
            Ok(Some(Owner {
                uid: 1000,
                gid: 1000
            }))
        );
        // A number gives uid = gid, even when passwd says otherwise.
        assert_eq!(
            chown("1001"),
            Ok(Some(Owner {
                uid: 1001,
                gid: 1001
            }))
        );
        assert_eq!(chown("1001:staff"), Ok(Some(Owner { uid: 1001, gid: 50 })));
        assert_eq!(chown("app:7"), Ok(Some(Owner { uid: 1000, gid: 7 })));
        assert_eq!(chown(":docker"), Ok(Some(Owner { uid: 0, gid: 999 })));
        assert_eq!(
            chown("app:"),
            Ok(Some(Owner {
                uid: 1000,
                gid: 1000
            }))
        );
        // uid up to u32::MAX is accepted here, as dockerfile2llb parses it.
        assert_eq!(
            chown("4294967295"),
            Ok(Some(Owner {
                uid: u32::MAX,
                gid: u32::MAX
            }))
        );
        assert_eq!(
            chown("ghost"),
            Err("unable to find user ghost: no matching entries in passwd file".into())
        );
        assert_eq!(
            chown("app:ghosts"),
            Err("unable to find group ghosts: no matching entries in group file".into())
        );
    }

    fn rootfs(passwd: Option<&str>, group: Option<&str>) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        if let Some(p) = passwd {
            std::fs::write(dir.path().join("etc/passwd"), p).unwrap();
        }
        if let Some(g) = group {
            std::fs::write(dir.path().join("etc/group"), g).unwrap();
        }
        dir
    }

    #[test]
    fn reads_files_from_a_rootfs() {
        let root = rootfs(Some(PASSWD), Some(GROUP));
        let user = resolve_run_user(root.path(), "app").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1000));
        assert_eq!(user.supplementary_gids, [100, 999, 50]);
        let fast = resolve_run_user(root.path(), "1000:5").unwrap();
        assert_eq!(
            (fast.uid, fast.gid, fast.home.as_str()),
            (1000, 5, "/home/app")
        );
        assert!(
            fast.supplementary_gids.is_empty(),
            "the fast path reads no groups"
        );
        assert_eq!(
            resolve_chown_in(root.path(), "build:users").unwrap(),
            Some(Owner {
                uid: 1001,
                gid: 100
            })
        );
    }

    #[test]
    fn missing_files_allow_numbers_but_not_names() {
        let root = rootfs(None, None);
        assert_eq!(resolve_run_user(root.path(), "").unwrap(), ExecUser::root());
        assert_eq!(resolve_run_user(root.path(), "5").unwrap().uid, 5);
        assert_eq!(resolve_run_user(root.path(), "5:6").unwrap().gid, 6);
        assert!(matches!(
            resolve_run_user(root.path(), "app"),
            Err(Error::UserNotFound { .. })
        ));
        assert_eq!(
            resolve_chown_in(root.path(), "5:6").unwrap(),
            Some(Owner { uid: 5, gid: 6 })
        );
        assert!(resolve_chown_in(root.path(), "app").is_err());
    }

    #[test]
    fn symlinked_passwd_is_resolved_inside_the_root() {
        let host = tempfile::tempdir().unwrap();
        std::fs::write(host.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        let root = rootfs(None, Some(GROUP));
        std::fs::write(root.path().join("real-passwd"), "app:x:77:77::/a:/bin/sh\n").unwrap();
        // An absolute link means "inside the image", not "on the host".
        std::os::unix::fs::symlink("/real-passwd", root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_run_user(root.path(), "app").unwrap().uid, 77);
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), root.path().join("etc/passwd"))
            .unwrap();
        assert!(matches!(
            resolve_run_user(root.path(), "evil"),
            Err(Error::UserNotFound { .. })
        ));
    }

    #[test]
    fn non_regular_and_oversized_files_are_refused() {
        let root = rootfs(None, None);
        std::fs::create_dir(root.path().join("etc/passwd")).unwrap();
        assert!(matches!(
            UserFiles::read(root.path()),
            Err(Error::NotRegularFile { .. })
        ));
        std::fs::remove_dir(root.path().join("etc/passwd")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        assert!(matches!(
            UserFiles::read(root.path()),
            Err(Error::NotRegularFile { .. })
        ));
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        let big = std::fs::File::create(root.path().join("etc/passwd")).unwrap();
        big.set_len(USER_FILE_LIMIT + 1).unwrap();
        assert!(matches!(
            UserFiles::read(root.path()),
            Err(Error::FileTooLarge { .. })
        ));
        big.set_len(USER_FILE_LIMIT).unwrap();
        assert!(UserFiles::read(root.path()).is_ok());
    }
}
