//! Which compression a stream uses, from its first bytes (never from a file name), and a reader
//! that undoes it.

use serde::Serialize;
use std::io::{BufRead, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Tar,
    Gzip,
    Xz,
    Zstd,
}

/// Formats recognised only to be refused with a useful message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsupported {
    Bzip2,
    Lz4,
    Zip,
    SevenZip,
}

impl Unsupported {
    pub fn name(self) -> &'static str {
        match self {
            Unsupported::Bzip2 => "bzip2",
            Unsupported::Lz4 => "lz4",
            Unsupported::Zip => "zip",
            Unsupported::SevenZip => "7-zip",
        }
    }
}

/// Classify by magic bytes. Anything unrecognised is taken for an uncompressed tar (old tars have
/// no magic of their own); the tar parser then says whether it is one.
pub fn sniff(head: &[u8]) -> Result<Format, Unsupported> {
    const MAGIC: &[(&[u8], Result<Format, Unsupported>)] = &[
        (&[0x1f, 0x8b], Ok(Format::Gzip)),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0x00], Ok(Format::Xz)),
        (&[0x28, 0xb5, 0x2f, 0xfd], Ok(Format::Zstd)),
        (b"BZh", Err(Unsupported::Bzip2)),
        (&[0x04, 0x22, 0x4d, 0x18], Err(Unsupported::Lz4)),
        (b"PK\x03\x04", Err(Unsupported::Zip)),
        (&[b'7', b'z', 0xbc, 0xaf, 0x27, 0x1c], Err(Unsupported::SevenZip)),
    ];
    for (magic, format) in MAGIC {
        if head.starts_with(magic) {
            return *format;
        }
    }
    Ok(Format::Tar)
}

/// Peek at the start of `r` (without consuming it) and classify it.
pub fn sniff_reader<R: BufRead>(r: &mut R) -> std::io::Result<Result<Format, Unsupported>> {
    let head = r.fill_buf()?;
    Ok(sniff(head))
}

/// A reader of the decompressed bytes. Concatenated gzip members, xz streams and zstd frames are
/// all read to the end, as `tar` itself would.
pub fn decoder<'a, R: BufRead + 'a>(format: Format, r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::Tar => Box::new(r),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Format::Xz => Box::new(liblzma::bufread::XzDecoder::new_multi_decoder(r)),
        Format::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn magic_not_names() {
        assert_eq!(sniff(&[0x1f, 0x8b, 8, 0]), Ok(Format::Gzip));
        assert_eq!(sniff(b"\xfd7zXZ\0rest"), Ok(Format::Xz));
        assert_eq!(sniff(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Ok(Format::Zstd));
        assert_eq!(sniff(b"BZh91AY"), Err(Unsupported::Bzip2));
        assert_eq!(sniff(b"./etc/\0\0\0"), Ok(Format::Tar));
        assert_eq!(sniff(b""), Ok(Format::Tar));
    }

    #[test]
    fn every_decoder_round_trips() {
        let data = b"hello tar world".repeat(100);
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
            e.write_all(&data).unwrap();
            e.finish().unwrap()
        };
        let zst = zstd::stream::encode_all(&data[..], 3).unwrap();
        for (bytes, format) in [(gz, Format::Gzip), (xz, Format::Xz), (zst, Format::Zstd), (data.clone(), Format::Tar)] {
            let mut r = std::io::BufReader::new(&bytes[..]);
            assert_eq!(sniff_reader(&mut r).unwrap(), Ok(format));
            let mut out = Vec::new();
            decoder(format, r).unwrap().read_to_end(&mut out).unwrap();
            assert_eq!(out, data, "{format:?}");
        }
    }
}
