//! Typed sha256 digests, streaming hashing, and chainIDs.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

use crate::error::{Error, Result};

/// A validated `sha256:<64 lower-case hex>` digest.
///
/// The only algorithm the store produces and trusts; other algorithms are refused on parse
/// rather than carried unverified.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Parse `sha256:<hex>`.
    pub fn parse(input: &str) -> Result<Digest> {
        let bad = |reason| Error::InvalidDigest {
            input: input.chars().take(200).collect(),
            reason,
        };
        let (algorithm, encoded) = input
            .split_once(':')
            .ok_or_else(|| bad("missing the algorithm prefix"))?;
        if algorithm != "sha256" {
            return Err(bad("only sha256 digests are supported"));
        }
        Digest::from_hex(encoded).map_err(|e| match e {
            Error::InvalidDigest { reason, .. } => bad(reason),
            other => other,
        })
    }

    /// Parse the 64 lower-case hex digits of a sha256 digest (no prefix).
    pub fn from_hex(hex: &str) -> Result<Digest> {
        let bad = |reason| Error::InvalidDigest {
            input: hex.chars().take(200).collect(),
            reason,
        };
        if hex.len() != 64 {
            return Err(bad("a sha256 digest has 64 hex digits"));
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(bad("a sha256 digest is lower-case hex"));
        }
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hex, &mut bytes).map_err(|_| bad("not hex"))?;
        Ok(Digest(bytes))
    }

    /// The 64 hex digits, without the `sha256:` prefix (the blob's file name).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 12 hex digits, as Docker shows IDs.
    pub fn short(&self) -> String {
        let mut s = self.hex();
        s.truncate(12);
        s
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest(sha256:{})", self.hex())
    }
}

impl FromStr for Digest {
    type Err = Error;
    fn from_str(s: &str) -> Result<Digest> {
        Digest::parse(s)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Digest, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(d: Digest) -> Self {
        oci_spec::image::Digest::from_str(&d.to_string())
            .expect("a sha256 digest is always a valid OCI digest")
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = Error;
    fn try_from(d: &oci_spec::image::Digest) -> Result<Digest> {
        Digest::parse(d.as_ref())
    }
}

/// An incremental sha256.
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    /// A fresh hasher.
    pub fn new() -> Hasher {
        Hasher(Sha256::new())
    }

    /// Feed bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    /// The digest of everything fed so far.
    pub fn finish(self) -> Digest {
        Digest(self.0.finalize().into())
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Hasher")
    }
}

/// A writer that hashes and counts what goes through it before passing it on.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
    count: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wrap `inner`.
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }

    /// Bytes written so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }

    /// The digest and size of what was written, and the inner writer.
    pub fn finish(self) -> (Digest, u64, W) {
        (self.hasher.finish(), self.count, self.inner)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts what is read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// Wrap `inner`.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
            count: 0,
        }
    }

    /// Bytes read so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest of what was read so far.
    pub fn digest(&self) -> Digest {
        self.hasher.clone().finish()
    }

    /// The digest and size of what was read, and the inner reader.
    pub fn finish(self) -> (Digest, u64, R) {
        (self.hasher.finish(), self.count, self.inner)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

/// The chainID of a stack of layers given by their diffIDs, base first (OCI `config.md`):
/// `ChainID(L0) = DiffID(L0)`, `ChainID(L0..Ln) = sha256(ChainID(L0..Ln-1) + " " + DiffID(Ln))`.
/// `None` for an empty stack.
pub fn chain_id(diff_ids: &[Digest]) -> Option<Digest> {
    chain_ids(diff_ids).pop()
}

/// The chainID of every prefix of `diff_ids`: element `i` names the stack `diff_ids[..=i]`.
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut out: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match out.last() {
            None => *diff_id,
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const EMPTY_TAR: &str =
        "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

    #[test]
    fn empty_json_and_empty_tar_vectors() {
        assert_eq!(
            Digest::of(b"{}").to_string(),
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(Digest::of(&[0u8; 1024]).to_string(), EMPTY_TAR);
    }

    #[test]
    fn chain_id_vectors_from_the_spec_notes() {
        let a = Digest::parse(
            "sha256:c6f988f4874bb0add23a778f753c65efe992244e148a1d2ec2a8b664fb66bbd1",
        )
        .unwrap();
        let e = Digest::parse(EMPTY_TAR).unwrap();
        assert_eq!(chain_id(&[a]), Some(a));
        assert_eq!(
            chain_id(&[a, e]).unwrap().to_string(),
            "sha256:c3191d32a37d7159b2e30830937d2e30268ad6c375a773a8994911a3aba9b93f"
        );
        assert_eq!(
            chain_id(&[a, e, e]).unwrap().to_string(),
            "sha256:b3f2677e2ce27278b9d7cab94db2e384b4bc04278000f97c62830f0707f3a865"
        );
        assert_eq!(chain_id(&[]), None);
        assert_eq!(chain_ids(&[a, e, e]).len(), 3);
    }

    #[test]
    fn bad_digests_are_refused_with_a_reason() {
        for (input, reason) in [
            ("", "missing the algorithm prefix"),
            ("sha256", "missing the algorithm prefix"),
            ("sha512:abcd", "only sha256 digests are supported"),
            ("sha256:abc", "a sha256 digest has 64 hex digits"),
            (
                "sha256:5F70BF18A086007016E948B04AED3B82103A36BEA41755B6CDDFAF10ACE3C6EF",
                "a sha256 digest is lower-case hex",
            ),
            (
                "sha256:../../etc/passwd",
                "a sha256 digest has 64 hex digits",
            ),
            (
                "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6eg",
                "a sha256 digest is lower-case hex",
            ),
        ] {
            match Digest::parse(input) {
                Err(Error::InvalidDigest { reason: r, .. }) => assert_eq!(r, reason, "{input}"),
                other => panic!("{input}: {other:?}"),
            }
        }
    }

    #[test]
    fn hashing_writer_and_reader_agree_with_one_shot() {
        let data = b"hello strata".repeat(1000);
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(&data).unwrap();
        let (d, n, out) = w.finish();
        assert_eq!(d, Digest::of(&data));
        assert_eq!(n, data.len() as u64);
        assert_eq!(out, data);
        let mut r = HashingReader::new(&data[..]);
        io::copy(&mut r, &mut io::sink()).unwrap();
        assert_eq!(r.finish().0, d);
    }

    proptest! {
        #[test]
        fn digest_round_trips(bytes in proptest::array::uniform32(any::<u8>())) {
            let d = Digest(bytes);
            prop_assert_eq!(Digest::parse(&d.to_string()).unwrap(), d);
            prop_assert_eq!(Digest::from_hex(&d.hex()).unwrap(), d);
            let json = serde_json::to_string(&d).unwrap();
            prop_assert_eq!(serde_json::from_str::<Digest>(&json).unwrap(), d);
            let oci: oci_spec::image::Digest = d.into();
            prop_assert_eq!(Digest::try_from(&oci).unwrap(), d);
            prop_assert_eq!(d.short().len(), 12);
        }

        #[test]
        fn arbitrary_text_never_panics(s in ".{0,80}") {
            let _ = Digest::parse(&s);
        }
    }
}
