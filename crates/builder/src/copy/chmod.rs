//! `--chmod` values: octal (`0755`, `4755`) or symbolic like chmod(1) (`u=rwX,go=rX`, `+x`).
//!
//! An octal value replaces all twelve permission bits (setuid, setgid, sticky included). A
//! symbolic value is a comma-separated list of clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`
//! applied in order, as GNU chmod applies them, with one difference: a clause without
//! `ugoa` affects everyone and ignores the umask (a build has no umask to honour). `X` adds
//! execute permission to directories and to files that already have some execute bit at
//! that point of the list.

use crate::Error;

/// The permission bits a mode may carry.
const PERM_BITS: u32 = 0o7777;

/// A parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An octal mode: replaces the permission bits.
    Octal(u32),
    /// Symbolic clauses, applied in order.
    Symbolic(Vec<Clause>),
}

/// One clause of a symbolic mode: who it affects and its operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clause {
    /// Bits the `ugoa` letters select (all of them when none was written).
    who: u32,
    /// Whether `ugoa` letters were written (`=` without them clears everything).
    explicit: bool,
    ops: Vec<Op>,
}

/// One `+`, `-` or `=` with its permissions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Op {
    op: u8,
    perm: Perm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Perm {
    /// `rwxst` bits as a mask over all classes, plus whether `X` was given.
    Bits { mask: u32, cond_x: bool },
    /// Copy the current permissions of `u`, `g` or `o`.
    Copy(u8),
}

impl Chmod {
    /// Parses a `--chmod` value.
    pub fn parse(value: &str) -> Result<Chmod, Error> {
        let bad = |reason| Error::InvalidChmod {
            value: value.to_string(),
            reason,
        };
        if value.is_empty() {
            return Err(bad("empty value"));
        }
        if value.bytes().all(|b| b.is_ascii_digit()) {
            if value.bytes().any(|b| b > b'7') {
                return Err(bad("octal modes use the digits 0 to 7"));
            }
            let mode = u32::from_str_radix(value, 8).map_err(|_| bad("octal mode out of range"))?;
            if mode > PERM_BITS {
                return Err(bad("octal mode out of range"));
            }
            return Ok(Chmod::Octal(mode));
        }
        let mut clauses = Vec::new();
        for text in value.split(',') {
            clauses.push(parse_clause(text).map_err(bad)?);
        }
        Ok(Chmod::Symbolic(clauses))
    }

    /// The mode (permission bits only) a file of mode `mode` gets; `dir` says whether it is
    /// a directory (for `X`).
    pub fn apply(&self, mode: u32, dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode & PERM_BITS;
                for c in clauses {
                    mode = c.apply(mode, dir);
                }
                mode
            }
        }
    }
}

fn parse_clause(text: &str) -> Result<Clause, &'static str> {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut who = 0u32;
    let mut explicit = false;
    while let Some(&b) = bytes.get(i) {
        who |= match b {
            b'u' => 0o4700,
            b'g' => 0o2070,
            b'o' => 0o1007,
            b'a' => PERM_BITS,
            _ => break,
        };
        explicit = true;
        i += 1;
    }
    if !explicit {
        who = PERM_BITS;
    }
    let mut ops = Vec::new();
    while let Some(&op) = bytes.get(i) {
        if !matches!(op, b'+' | b'-' | b'=') {
            return Err("expected +, - or = after the user letters");
        }
        i += 1;
        let perm = match bytes.get(i) {
            Some(&c @ (b'u' | b'g' | b'o')) => {
                i += 1;
                Perm::Copy(c)
            }
            _ => {
                let mut mask = 0u32;
                let mut cond_x = false;
                while let Some(&b) = bytes.get(i) {
                    match b {
                        b'r' => mask |= 0o444,
                        b'w' => mask |= 0o222,
                        b'x' => mask |= 0o111,
                        b'X' => cond_x = true,
                        b's' => mask |= 0o6000,
                        b't' => mask |= 0o1000,
                        b'+' | b'-' | b'=' => break,
                        _ => return Err("unknown permission letter (use r, w, x, X, s or t)"),
                    }
                    i += 1;
                }
                Perm::Bits { mask, cond_x }
            }
        };
        ops.push(Op { op, perm });
    }
    if ops.is_empty() {
        return Err("a clause needs an operator (+, - or =)");
    }
    Ok(Clause { who, explicit, ops })
}

impl Clause {
    fn apply(&self, mut mode: u32, dir: bool) -> u32 {
        for op in &self.ops {
            let value = match op.perm {
                Perm::Bits { mask, cond_x } => {
                    let x = if cond_x && (dir || mode & 0o111 != 0) {
                        0o111
                    } else {
                        0
                    };
                    (mask | x) & self.who
                }
                Perm::Copy(from) => {
                    let triple = match from {
                        b'u' => (mode >> 6) & 0o7,
                        b'g' => (mode >> 3) & 0o7,
                        _ => mode & 0o7,
                    };
                    (triple * 0o111) & self.who & 0o777
                }
            };
            mode = match op.op {
                b'+' => mode | value,
                b'-' => mode & !value,
                _ => {
                    // `=` resets the selected classes; without letters, every bit.
                    let cleared = if self.explicit { self.who } else { PERM_BITS };
                    (mode & !cleared) | value
                }
            };
        }
        mode
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sym(spec: &str, mode: u32, dir: bool) -> u32 {
        Chmod::parse(spec).unwrap().apply(mode, dir)
    }

    #[test]
    fn octal_replaces_every_permission_bit() {
        assert_eq!(Chmod::parse("0755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(Chmod::parse("644").unwrap().apply(0o4777, false), 0o644);
        assert_eq!(Chmod::parse("4755").unwrap().apply(0o644, false), 0o4755);
        assert_eq!(Chmod::parse("0").unwrap().apply(0o777, true), 0);
    }

    #[test]
    fn symbolic_like_gnu_chmod() {
        assert_eq!(sym("+x", 0o644, false), 0o755);
        assert_eq!(sym("u+x", 0o644, false), 0o744);
        assert_eq!(sym("go-w", 0o666, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o600, false), 0o644);
        assert_eq!(sym("u=rwX,go=rX", 0o700, false), 0o755);
        assert_eq!(sym("u=rwX,go=rX", 0o600, true), 0o755);
        assert_eq!(sym("a=r", 0o777, false), 0o444);
        assert_eq!(sym("=", 0o4777, false), 0);
        assert_eq!(sym("o=", 0o777, false), 0o770);
        assert_eq!(sym("u+s", 0o755, false), 0o4755);
        assert_eq!(sym("g+s,o+t", 0o755, true), 0o3755);
        assert_eq!(sym("g=u", 0o750, false), 0o770);
        assert_eq!(sym("go=u-w", 0o755, false), 0o755 & !0o022);
        assert_eq!(sym("u+r-w+x", 0o200, false), 0o500);
        // `X` sees execute bits granted earlier in the same list.
        assert_eq!(sym("u+x,g+X", 0o600, false), 0o710);
        // The file type bits never leak into the result.
        assert_eq!(sym("+r", 0o100600, false), 0o644);
    }

    #[test]
    fn malformed_values_are_refused() {
        for bad in [
            "", "8", "0789", "77777", "u", "u+q", "x+r", "u+r,", ",u+r", "+r,z=x",
        ] {
            let err = Chmod::parse(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidChmod { .. }),
                "{bad:?} gave {err:?}"
            );
        }
    }
}
