//! The real-world corpus in `../shared/corpus/dockerfiles` (or `$STRATA_SHARED`): every
//! file parses, and no mutation of any file makes the parser panic.

use std::fs;
use std::path::{Path, PathBuf};

fn shared() -> Option<PathBuf> {
    let dir = match std::env::var_os("STRATA_SHARED") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    };
    dir.join("corpus/dockerfiles").is_dir().then_some(dir)
}

/// Every file under `dir`, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).expect("read corpus dir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn corpus() -> Option<Vec<(String, String)>> {
    let dir = shared()?.join("corpus/dockerfiles");
    Some(
        files(&dir)
            .into_iter()
            .map(|p| {
                let name = p.strip_prefix(&dir).unwrap_or(&p).display().to_string();
                let text = fs::read_to_string(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
                (name, text)
            })
            .collect(),
    )
}

#[test]
fn every_corpus_dockerfile_parses() {
    let Some(corpus) = corpus() else {
        println!("corpus: SKIPPED (no ../shared; set STRATA_SHARED)");
        return;
    };
    let mut failures = Vec::new();
    let mut instructions = 0;
    for (name, text) in &corpus {
        match strata_parser::parse(text) {
            Ok(df) => {
                instructions += df
                    .stages
                    .iter()
                    .map(|s| s.instructions.len() + 1)
                    .sum::<usize>();
                instructions += df.meta_args.len();
            }
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "corpus: {}/{} files parse ({instructions} instructions)",
        corpus.len() - failures.len(),
        corpus.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(
        corpus.len() >= 100,
        "the corpus should hold the real-world files"
    );
}

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

/// Bytes that matter to the grammar, to make flips hit interesting places.
const INTERESTING: &[u8] = b"\\`\"'$<{}[],=:-# \t\r\n-/*?%@!0123456789AaZz";

fn mutate(rng: &mut Rng, text: &str, corpus: &[(String, String)]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    match rng.below(5) {
        // Truncate anywhere.
        0 => bytes.truncate(rng.below(bytes.len() + 1)),
        // Flip a few bytes to grammar characters.
        1 => {
            for _ in 0..1 + rng.below(8) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                bytes[at] = INTERESTING[rng.below(INTERESTING.len())];
            }
        }
        // Flip random bits.
        2 => {
            for _ in 0..1 + rng.below(4) {
                if bytes.is_empty() {
                    break;
                }
                let at = rng.below(bytes.len());
                bytes[at] ^= 1 << rng.below(8);
            }
        }
        // Splice lines from another file.
        3 => {
            let other = &corpus[rng.below(corpus.len())].1;
            let lines: Vec<&str> = other.split_inclusive('\n').collect();
            let ours: Vec<&str> = text.split_inclusive('\n').collect();
            let cut = rng.below(ours.len() + 1);
            let start = rng.below(lines.len() + 1);
            let take = rng.below(20);
            let mut out = String::new();
            out.extend(ours[..cut].iter().copied());
            out.extend(
                lines[start..(start + take).min(lines.len())]
                    .iter()
                    .copied(),
            );
            out.extend(ours[cut..].iter().copied());
            bytes = out.into_bytes();
        }
        // Duplicate or drop a range of lines.
        _ => {
            let lines: Vec<&str> = text.split_inclusive('\n').collect();
            let a = rng.below(lines.len() + 1);
            let b = (a + rng.below(10)).min(lines.len());
            let mut out: Vec<&str> = lines[..a].to_vec();
            if rng.below(2) == 0 {
                out.extend(lines[a..b].iter().copied());
                out.extend(lines[a..b].iter().copied());
            }
            out.extend(lines[b..].iter().copied());
            bytes = out.concat().into_bytes();
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Everything the library offers a caller, run on one text: none of it may panic.
fn exercise(text: &str) {
    let _ = strata_parser::ast::parse(text).map(|a| a.dump());
    let _ = strata_parser::lint::lint_source(text);
    if let Ok(df) = strata_parser::parse(text) {
        let env = strata_parser::shell::Env::new();
        let globals = strata_parser::scope::global_scope(&df, &env, &env).unwrap_or_default();
        for stage in &df.stages {
            let _ = stage.from.expand(&globals, df.escape());
            let mut scope = strata_parser::scope::StageScope::default();
            for i in &stage.instructions {
                let _ = i.expand(scope.env(), df.escape());
                let _ = scope.apply(i, &env, &globals, df.escape());
            }
        }
    }
}

#[test]
fn mutations_never_panic() {
    let Some(corpus) = corpus() else {
        println!("mutations: SKIPPED (no ../shared; set STRATA_SHARED)");
        return;
    };
    for (_, text) in &corpus {
        exercise(text);
    }
    let mut rng = Rng(0x05EE_D0F5_7A7A);
    let rounds = 6000;
    for round in 0..rounds {
        let (name, text) = &corpus[rng.below(corpus.len())];
        let mutated = mutate(&mut rng, text, &corpus);
        let result = std::panic::catch_unwind(|| exercise(&mutated));
        assert!(
            result.is_ok(),
            "round {round}: a mutation of {name} made the parser panic; input:\n{mutated}"
        );
    }
    println!("mutations: {rounds} mutated inputs, no panic");
}
