//! `ADD`'s local archives: recognised by content, decompressed in this process, extracted
//! with the overlay crate's safe applier.
//!
//! A file is an archive when, after decompression (gzip, bzip2, xz or zstd, chosen by the
//! magic bytes, never by the name; anything else is read as is), its first 512-byte block
//! is a tar header with a valid checksum, which is what Go's `tar.Reader.Next` demands in
//! BuildKit's `isArchivePath`. So an empty file or a gzipped text file named `x.tar.gz` is
//! copied as a file. Extraction goes through [`strata_overlay::apply_to_tree`], which
//! resolves every entry inside the destination directory, refuses links that escape it,
//! caps entries and sizes, and never uses the `tar` crate's unpacking.

use std::io::{self, BufRead, BufReader, Read};

/// A compression format, from the stream's first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// The compression a stream starting with `head` uses.
pub(crate) fn sniff(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// `reader` decompressed according to its magic bytes (or as is).
pub(crate) fn decompress<'a, R: Read + 'a>(reader: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::with_capacity(256 * 1024, reader);
    let kind = sniff(buffered.fill_buf()?);
    Ok(match kind {
        Compression::None => Box::new(buffered),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(buffered)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(buffered)),
        Compression::Xz => Box::new(liblzma::read::XzDecoder::new_multi_decoder(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// Whether `reader` holds a (possibly compressed) tar archive.
pub(crate) fn is_tar_archive<R: Read>(reader: R) -> bool {
    let Ok(mut stream) = decompress(reader) else {
        return false;
    };
    let mut block = [0u8; 512];
    let mut filled = 0;
    while filled < block.len() {
        match stream.read(&mut block[filled..]) {
            Ok(0) => return false,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    valid_tar_header(&block)
}

/// A tar header block whose checksum field matches its bytes (unsigned or signed sum, as
/// Go accepts both); an all-zero block is the end of an archive, not a header.
fn valid_tar_header(block: &[u8; 512]) -> bool {
    if block.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &block[148..156];
    let digits: Vec<u8> = field
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(|b| (b'0'..=b'7').contains(b))
        .collect();
    if digits.is_empty() {
        return false;
    }
    // Only spaces or NULs may follow the digits.
    let rest_ok = field
        .iter()
        .skip_while(|b| **b == b' ')
        .skip(digits.len())
        .all(|b| *b == b' ' || *b == 0);
    if !rest_ok {
        return false;
    }
    let Some(expected) = std::str::from_utf8(&digits)
        .ok()
        .and_then(|d| i64::from_str_radix(d, 8).ok())
    else {
        return false;
    };
    let mut unsigned: i64 = 0;
    let mut signed: i64 = 0;
    for (i, &b) in block.iter().enumerate() {
        let b = if (148..156).contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    expected == unsigned || expected == signed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn tar_bytes() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(5);
        header.set_mode(0o644);
        header.set_cksum();
        builder
            .append_data(&mut header, "hello.txt", &b"hello"[..])
            .unwrap();
        builder.into_inner().unwrap()
    }

    pub(crate) fn compress(kind: Compression, data: &[u8]) -> Vec<u8> {
        match kind {
            Compression::None => data.to_vec(),
            Compression::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(data, 3).unwrap(),
        }
    }

    pub(crate) const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Bzip2,
        Compression::Xz,
        Compression::Zstd,
    ];

    #[test]
    fn archives_are_recognised_by_content_in_every_compression() {
        let tar = tar_bytes();
        for kind in ALL {
            let data = compress(kind, &tar);
            assert_eq!(sniff(&data), kind);
            assert!(is_tar_archive(&data[..]), "{kind:?}");
            let mut out = Vec::new();
            decompress(&data[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, tar, "{kind:?}");
        }
    }

    #[test]
    fn non_archives_are_not() {
        assert!(!is_tar_archive(&b""[..]));
        assert!(!is_tar_archive(&[0u8; 1024][..]));
        let text = b"just some text, long enough to fill a block? no.".repeat(20);
        assert!(!is_tar_archive(&text[..]));
        for kind in ALL {
            assert!(!is_tar_archive(&compress(kind, &text)[..]), "{kind:?}");
            assert!(!is_tar_archive(&compress(kind, b"")[..]), "{kind:?}");
        }
        // A gzip header with garbage after it.
        assert!(!is_tar_archive(&[0x1f, 0x8b, 0, 1, 2, 3][..]));
        // A header whose checksum was tampered with.
        let mut tar = tar_bytes();
        tar[0] ^= 1;
        assert!(!is_tar_archive(&tar[..]));
    }
}
