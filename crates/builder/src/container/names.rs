//! Container names: Docker's rules for given names, and random `adjective_surname` names
//! (our own word lists: adjectives and people who shaped computing and science).

use crate::Error;

const ADJECTIVES: &[&str] = &[
    "agile", "amber", "ardent", "bold", "brave", "bright", "calm", "candid", "clever", "cosmic",
    "crisp", "curious", "daring", "deft", "eager", "earnest", "elated", "fabled", "fervent",
    "fond", "frank", "gallant", "gentle", "glad", "golden", "hardy", "hopeful", "humble", "jolly",
    "keen", "kind", "lively", "lucid", "lucky", "merry", "mellow", "modest", "nimble", "noble",
    "patient", "plucky", "polite", "proud", "quiet", "quick", "radiant", "rapid", "serene",
    "sharp", "shiny", "silent", "sincere", "snappy", "steady", "stoic", "sunny", "swift", "tender",
    "tidy", "upbeat", "vivid", "warm", "wise", "witty", "zealous",
];

const SURNAMES: &[&str] = &[
    "allen",
    "babbage",
    "backus",
    "bardeen",
    "bell",
    "berners",
    "boole",
    "borg",
    "brattain",
    "cerf",
    "church",
    "codd",
    "conway",
    "cray",
    "curie",
    "dijkstra",
    "easley",
    "engelbart",
    "faraday",
    "feynman",
    "floyd",
    "franklin",
    "gauss",
    "goldberg",
    "hamilton",
    "hamming",
    "hopper",
    "hoare",
    "johnson",
    "kahn",
    "karp",
    "kay",
    "knuth",
    "lamport",
    "liskov",
    "lovelace",
    "maxwell",
    "mccarthy",
    "meitner",
    "minsky",
    "moore",
    "napier",
    "neumann",
    "noether",
    "nygaard",
    "pascal",
    "perlman",
    "ritchie",
    "shannon",
    "shaw",
    "somogyi",
    "stallman",
    "sutherland",
    "tarjan",
    "thompson",
    "torvalds",
    "turing",
    "wirth",
    "wozniak",
    "yalow",
];

/// A random `adjective_surname` from `seed` bytes; `attempt > 0` appends a digit, as Docker
/// does after a collision.
pub fn random_name(seed: &[u8], attempt: u32) -> String {
    let pick = |offset: usize, len: usize| -> usize {
        let mut v: usize = 0;
        for b in seed.iter().skip(offset).take(4) {
            v = v.wrapping_mul(256).wrapping_add(usize::from(*b));
        }
        v % len
    };
    let name = format!(
        "{}_{}",
        ADJECTIVES[pick(0, ADJECTIVES.len())],
        SURNAMES[pick(4, SURNAMES.len())]
    );
    if attempt == 0 {
        name
    } else {
        format!("{name}{}", pick(8, 10))
    }
}

/// Checks a name given with `--name` (Docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`, a leading `/`
/// allowed and dropped); returns it without the `/`.
pub fn validate(name: &str) -> Result<String, Error> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let bytes = bare.as_bytes();
    let ok = bytes.len() >= 2
        && bytes.len() <= 253
        && bytes[0].is_ascii_alphanumeric()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if !ok {
        return Err(Error::InvalidContainerName {
            name: name.to_string(),
        });
    }
    Ok(bare.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_names_are_valid_and_vary() {
        let a = random_name(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 0);
        let b = random_name(&[9, 8, 7, 6, 5, 4, 3, 2, 1], 0);
        assert_ne!(a, b);
        for n in [&a, &b] {
            assert_eq!(validate(n).unwrap(), *n);
            assert!(n.contains('_'));
        }
        let again = random_name(&[1, 2, 3, 4, 5, 6, 7, 8, 9], 1);
        assert!(again.starts_with(&a) && again.len() == a.len() + 1);
        // Short seeds still give a name.
        assert!(validate(&random_name(&[], 0)).is_ok());
    }

    #[test]
    fn given_names_follow_dockers_rule() {
        assert_eq!(validate("web-1.a_b").unwrap(), "web-1.a_b");
        assert_eq!(validate("/web").unwrap(), "web");
        for bad in ["", "a", "-web", "_web", "we b", "wé", "a/b"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }
}
