//! `RUN --mount=...` options.

use crate::directives::parse_go_bool;
use crate::suggest::suggest;

/// The kind of a RUN mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MountType {
    /// A read-only (by default) bind of the context, a stage or an image.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// An empty tmpfs.
    Tmpfs,
    /// A secret file (or environment variable).
    Secret,
    /// An SSH agent socket.
    Ssh,
}

impl MountType {
    /// The name as written in `type=`.
    pub fn as_str(self) -> &'static str {
        match self {
            MountType::Bind => "bind",
            MountType::Cache => "cache",
            MountType::Tmpfs => "tmpfs",
            MountType::Secret => "secret",
            MountType::Ssh => "ssh",
        }
    }
}

/// How concurrent builds share a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheSharing {
    /// Concurrent writers share the directory (default).
    Shared,
    /// Each writer gets its own directory.
    Private,
    /// Writers wait for each other.
    Locked,
}

/// One `--mount` of a RUN instruction.
///
/// String fields hold the text as written (variables unexpanded). When a field that has
/// a typed meaning (`type`, `sharing`, `mode`, `uid`, `gid`, `size`, booleans) contains a
/// variable, its typed value is left at the default and `deferred` is set; expanding the
/// instruction ([`crate::Instruction::expand`]) re-reads the option with the variables
/// substituted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The option text as written after `--mount=`.
    pub raw: String,
    /// `type=` (default bind).
    pub kind: MountType,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `from=`: a stage, image or named context.
    pub from: Option<String>,
    /// `id=` (cache and secret mounts).
    pub id: Option<String>,
    /// `sharing=` (cache mounts).
    pub sharing: Option<CacheSharing>,
    /// Read-only; defaults to false for cache and tmpfs mounts and true otherwise.
    pub readonly: bool,
    /// `required` (secret and ssh mounts).
    pub required: bool,
    /// `mode=` in octal (cache, secret, ssh).
    pub mode: Option<u32>,
    /// `uid=` (cache, secret, ssh).
    pub uid: Option<u32>,
    /// `gid=` (cache, secret, ssh).
    pub gid: Option<u32>,
    /// `size=` of a tmpfs, in bytes.
    pub size: Option<u64>,
    /// `env=`: expose a secret as this environment variable.
    pub env: Option<String>,
    /// Some typed field holds a variable; see the type's documentation.
    pub deferred: bool,
}

/// A mount option problem: what is wrong, the offending text, what was expected.
pub(crate) type MountError = (String, String, String);

/// Expands one option value (the instruction's variable environment).
pub(crate) type ValueExpander<'a> = &'a mut dyn FnMut(&str) -> Result<String, String>;

fn merr(
    problem: impl Into<String>,
    found: impl Into<String>,
    expected: impl Into<String>,
) -> MountError {
    (problem.into(), found.into(), expected.into())
}

const KEYS: &[&str] = &[
    "type",
    "from",
    "source",
    "target",
    "readonly",
    "id",
    "sharing",
    "required",
    "size",
    "mode",
    "uid",
    "gid",
    "src",
    "dst",
    "destination",
    "ro",
    "rw",
    "readwrite",
    "env",
];

/// Read one `--mount` value. Without `expand` (the parse-time read) values are taken as
/// written and typed values that contain a `$` are deferred; with it every value is
/// expanded first and everything is validated.
pub(crate) fn parse_mount(
    raw: &str,
    expand: Option<ValueExpander<'_>>,
) -> Result<Mount, MountError> {
    let mut expand = expand;
    let fields = split_csv(raw)?;
    let mut m = Mount {
        raw: raw.to_string(),
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        id: None,
        sharing: None,
        readonly: false,
        required: false,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        env: None,
        deferred: false,
    };
    let mut ro_auto = true;
    for field in &fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.to_lowercase(), Some(v)),
            None => (field.to_lowercase(), None),
        };
        let Some(value) = value else {
            match key.as_str() {
                "readonly" | "ro" => {
                    m.readonly = true;
                    ro_auto = false;
                }
                "readwrite" | "rw" => {
                    m.readonly = false;
                    ro_auto = false;
                }
                "required" if matches!(m.kind, MountType::Secret | MountType::Ssh) => {
                    m.required = true
                }
                "required" => {
                    return Err(merr(
                        format!(
                            "unexpected key 'required' for mount type '{}'",
                            m.kind.as_str()
                        ),
                        field.as_str(),
                        "`required` only on secret and ssh mounts",
                    ))
                }
                _ => {
                    return Err(merr(
                        "invalid mount field, it must be a key=value pair",
                        field.as_str(),
                        "key=value",
                    ))
                }
            }
            continue;
        };
        let has_var = value.contains('$');
        if key == "from" && value.find('$').is_some_and(|i| i + 1 != value.len()) {
            return Err(merr(
                "'from' doesn't support variable expansion, define alias stage instead",
                field.as_str(),
                "a stage or image name without variables",
            ));
        }
        let value: String = match expand.as_mut() {
            Some(e) => e(value).map_err(|msg| merr(msg, field.as_str(), "a valid expansion"))?,
            None => value.to_string(),
        };
        // At parse time a typed value holding a variable cannot be read yet.
        let defer_typed = expand.is_none() && has_var;
        let bad_bool = || {
            merr(
                format!("invalid value for {key}"),
                field.as_str(),
                "true or false",
            )
        };
        match key.as_str() {
            "type" => {
                if defer_typed {
                    m.deferred = true;
                    continue;
                }
                m.kind = match value.to_lowercase().as_str() {
                    "bind" => MountType::Bind,
                    "cache" => MountType::Cache,
                    "tmpfs" => MountType::Tmpfs,
                    "secret" => MountType::Secret,
                    "ssh" => MountType::Ssh,
                    _ => {
                        let types = ["bind", "cache", "tmpfs", "secret", "ssh"];
                        let hint = suggest(&value, &types)
                            .map(|s| format!(" (did you mean {s}?)"))
                            .unwrap_or_default();
                        return Err(merr(
                            format!("unsupported mount type{hint}"),
                            value,
                            "one of bind, cache, tmpfs, secret, ssh",
                        ));
                    }
                };
            }
            "from" => m.from = Some(value),
            "source" | "src" => m.source = Some(value),
            "target" | "dst" | "destination" => m.target = Some(value),
            "id" => m.id = Some(value),
            "env" => m.env = Some(value),
            "readonly" | "ro" | "readwrite" | "rw" | "required" => {
                ro_auto &= !matches!(key.as_str(), "readonly" | "ro" | "readwrite" | "rw");
                if defer_typed {
                    m.deferred = true;
                    continue;
                }
                let b = parse_go_bool(&value).ok_or_else(bad_bool)?;
                match key.as_str() {
                    "readonly" | "ro" => m.readonly = b,
                    "readwrite" | "rw" => m.readonly = !b,
                    _ if matches!(m.kind, MountType::Secret | MountType::Ssh) => m.required = b,
                    _ => {
                        return Err(merr(
                            format!(
                                "unexpected key 'required' for mount type '{}'",
                                m.kind.as_str()
                            ),
                            field.as_str(),
                            "`required` only on secret and ssh mounts",
                        ))
                    }
                }
            }
            "sharing" => {
                if defer_typed {
                    m.deferred = true;
                    continue;
                }
                m.sharing = Some(match value.to_lowercase().as_str() {
                    "shared" => CacheSharing::Shared,
                    "private" => CacheSharing::Private,
                    "locked" => CacheSharing::Locked,
                    _ => {
                        return Err(merr(
                            "unsupported sharing value",
                            value,
                            "one of shared, private, locked",
                        ))
                    }
                });
            }
            "mode" | "uid" | "gid" => {
                if defer_typed {
                    m.deferred = true;
                    continue;
                }
                let radix = if key == "mode" { 8 } else { 10 };
                let n = parse_go_uint32(&value, radix).ok_or_else(|| {
                    merr(
                        format!("invalid value for {key}"),
                        field.as_str(),
                        if radix == 8 {
                            "an octal number such as 0755"
                        } else {
                            "a number"
                        },
                    )
                })?;
                match key.as_str() {
                    "mode" => m.mode = Some(n),
                    "uid" => m.uid = Some(n),
                    _ => m.gid = Some(n),
                }
            }
            "size" => {
                if defer_typed {
                    m.deferred = true;
                    continue;
                }
                m.size = Some(parse_ram_bytes(&value).ok_or_else(|| {
                    merr(
                        "invalid value for size",
                        field.as_str(),
                        "a size such as 64m",
                    )
                })?);
            }
            _ => {
                let hint = suggest(&key, KEYS)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                return Err(merr(
                    format!("unexpected mount key{hint}"),
                    field.as_str(),
                    "one of type, from, source, target, readonly, id, sharing, required, size, mode, uid, gid, env",
                ));
            }
        }
    }
    let file_info_ok = matches!(
        m.kind,
        MountType::Secret | MountType::Ssh | MountType::Cache
    );
    for (name, set) in [
        ("mode", m.mode.is_some()),
        ("uid", m.uid.is_some()),
        ("gid", m.gid.is_some()),
    ] {
        if set && !file_info_ok {
            return Err(merr(
                format!("{name} not allowed for {} mounts", m.kind.as_str()),
                raw,
                "mode/uid/gid only on cache, secret and ssh mounts",
            ));
        }
    }
    if m.size.is_some() && m.kind != MountType::Tmpfs {
        return Err(merr(
            format!("size not allowed for {} mounts", m.kind.as_str()),
            raw,
            "size only on tmpfs mounts",
        ));
    }
    if ro_auto {
        m.readonly = !matches!(m.kind, MountType::Cache | MountType::Tmpfs);
    }
    if m.sharing.is_some() && m.kind != MountType::Cache {
        return Err(merr(
            format!("invalid cache sharing set for {} mount", m.kind.as_str()),
            raw,
            "sharing only on cache mounts",
        ));
    }
    if m.kind == MountType::Secret && !m.deferred {
        if m.from.is_some() {
            return Err(merr(
                "secret mount should not have a from",
                raw,
                "no from= on a secret mount",
            ));
        }
        if m.source.is_none() && m.target.is_none() && m.id.is_none() && m.env.is_none() {
            return Err(merr(
                "invalid secret mount, one of source, target, id or env is required",
                raw,
                "id=<secret id> or target=<path>",
            ));
        }
        if m.source.is_some() && m.id.is_some() {
            return Err(merr(
                "both source and id can't be set",
                raw,
                "either source= or id=",
            ));
        }
    }
    Ok(m)
}

/// Go's `strconv.ParseUint(s, radix, 32)`.
fn parse_go_uint32(s: &str, radix: u32) -> Option<u32> {
    let digits = if radix == 8 {
        s.strip_prefix("0o").or(s.strip_prefix("0O")).unwrap_or(s)
    } else {
        s
    };
    let digits = digits.replace('_', "");
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u32::from_str_radix(&digits, radix).ok()
}

/// docker/go-units `RAMInBytes`: a number with an optional binary-multiple suffix
/// (`b`, `k`/`kb`/`kib`, `m`, `g`, `t`, `p`; case-insensitive).
fn parse_ram_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match suffix.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" | "kib" => 1024.0,
        "m" | "mb" | "mib" => 1024.0 * 1024.0,
        "g" | "gb" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" | "tib" => 1024f64.powi(4),
        "p" | "pb" | "pib" => 1024f64.powi(5),
        _ => return None,
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0 && v < u64::MAX as f64).then_some(v as u64)
}

/// Split one CSV record the way Go's `encoding/csv` reads it: comma-separated fields,
/// a field starting with `"` is quoted (`""` is a literal quote), a bare `"` elsewhere
/// is an error.
fn split_csv(s: &str) -> Result<Vec<String>, MountError> {
    let bad = |problem: &str| {
        merr(
            format!("failed to parse csv mounts: {problem}"),
            s,
            "comma-separated key=value fields",
        )
    };
    if s.is_empty() {
        return Err(bad("empty value"));
    }
    let mut fields = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        let mut field = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(bad("extraneous or missing \" in quoted-field")),
                    Some('"') => {
                        if chars.peek() == Some(&'"') {
                            chars.next();
                            field.push('"');
                        } else {
                            break;
                        }
                    }
                    Some(c) => field.push(c),
                }
            }
            match chars.next() {
                None => {
                    fields.push(field);
                    return Ok(fields);
                }
                Some(',') => fields.push(field),
                Some(_) => return Err(bad("extraneous or missing \" in quoted-field")),
            }
        } else {
            loop {
                match chars.next() {
                    None => {
                        fields.push(field);
                        return Ok(fields);
                    }
                    Some(',') => {
                        fields.push(field);
                        break;
                    }
                    Some('"') => return Err(bad("bare \" in non-quoted-field")),
                    Some(c) => field.push(c),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Mount, MountError> {
        parse_mount(s, None)
    }

    #[test]
    fn typical_mounts() {
        let m = p("type=cache,target=/go/pkg/mod").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/go/pkg/mod"));
        assert!(!m.readonly);
        let m = p("target=.").unwrap();
        assert_eq!(m.kind, MountType::Bind);
        assert!(m.readonly);
        let m = p("type=bind,target=.,rw").unwrap();
        assert!(!m.readonly);
        let m =
            p("type=cache,sharing=locked,id=apt,target=/var/lib/apt,mode=0755,uid=1000").unwrap();
        assert_eq!(m.sharing, Some(CacheSharing::Locked));
        assert_eq!(m.mode, Some(0o755));
        assert_eq!(m.uid, Some(1000));
        let m = p("type=secret,id=tok,required").unwrap();
        assert!(m.required && m.readonly);
        let m = p("type=tmpfs,target=/dev/shm,size=128m").unwrap();
        assert_eq!(m.size, Some(128 * 1024 * 1024));
        let m = p("type=ssh").unwrap();
        assert_eq!(m.kind, MountType::Ssh);
        let m = p("type=cache,id=x-$TARGETPLATFORM,target=/c").unwrap();
        assert_eq!(m.id.as_deref(), Some("x-$TARGETPLATFORM"));
        let m = p("type=$T,target=/c").unwrap();
        assert!(m.deferred);
    }

    #[test]
    fn rejected_mounts() {
        for bad in [
            "type=foo",
            "type=bind,sharing=locked",
            "type=bind,mode=0755",
            "required,type=secret",
            "type=secret,from=x,id=y",
            "type=secret",
            "type=secret,source=a,id=b",
            "from=$stage,target=/x",
            "type=cache,target=/x,frob=1",
            "type=cache, target=/x",
            "type=cache,mode=999",
            "type=cache,ro=maybe",
            "ta\"rget=/x",
            "",
        ] {
            assert!(p(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn csv() {
        assert_eq!(
            split_csv("a=1,\"b=2,3\",c").unwrap(),
            vec!["a=1", "b=2,3", "c"]
        );
        assert_eq!(split_csv("\"a\"\"b\"").unwrap(), vec!["a\"b"]);
        assert!(split_csv("\"a\"b").is_err());
    }

    #[test]
    fn expanded_mount() {
        let mut e = |s: &str| Ok(s.replace("$T", "cache"));
        let m = parse_mount("type=$T,target=/c", Some(&mut e)).unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert!(!m.deferred);
    }
}
