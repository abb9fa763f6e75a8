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

/// The most memory the xz decoder may take (its C allocations are outside the tool's heap
/// budget): an xz stream names its dictionary size, up to 4 GiB. `xz -9` needs 65 MiB.
pub const XZ_MEMLIMIT: u64 = 256 << 20;

/// The largest zstd window a frame may ask for: 2^27, 128 MiB (zstd's own default limit, which
/// `zstd --long` stays within; a frame asking for more is refused).
pub const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// A reader of the decompressed bytes. Concatenated gzip members, xz streams and zstd frames are
/// all read to the end, as `tar` itself would.
pub fn decoder<'a, R: BufRead + 'a>(format: Format, r: R) -> std::io::Result<Box<dyn Read + 'a>> {
    Ok(match format {
        Format::Tar => Box::new(r),
        Format::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Format::Xz => {
            let stream = liblzma::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, liblzma::stream::CONCATENATED)?;
            Box::new(XzLimited(liblzma::bufread::XzDecoder::new_stream(r, stream)))
        }
        Format::Zstd => {
            let mut d = zstd::stream::read::Decoder::with_buffer(r)?;
            d.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
            Box::new(ZstdLimited(d))
        }
    })
}

/// The zstd decoder, its window limit reported as what it is (zstd says only "Frame requires
/// too much memory for decoding").
struct ZstdLimited<R>(R);

impl<R: Read> Read for ZstdLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            if e.to_string().contains("too much memory") {
                std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!(
                        "the zstd frame needs a window larger than the {} MiB the unpacker allows its decoder (made with zstd --long=28 or more)",
                        (1u64 << ZSTD_WINDOW_LOG_MAX) >> 20
                    ),
                )
            } else {
                e
            }
        })
    }
}

/// The xz decoder, its memory limit reported as what it is.
struct XzLimited<R>(R);

impl<R: Read> Read for XzLimited<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(|e| {
            let limit =
                e.get_ref().and_then(|inner| inner.downcast_ref::<liblzma::stream::Error>()).is_some_and(|x| matches!(x, liblzma::stream::Error::MemLimit));
            if limit {
                std::io::Error::new(
                    std::io::ErrorKind::OutOfMemory,
                    format!(
                        "the xz stream needs more than the {} MiB of memory the unpacker allows its decoder (a dictionary larger than xz -9's 64 MiB)",
                        XZ_MEMLIMIT >> 20
                    ),
                )
            } else {
                e
            }
        })
    }
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

    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for b in bytes {
            c ^= u32::from(*b);
            for _ in 0..8 {
                c = if c & 1 == 1 { (c >> 1) ^ 0xEDB8_8320 } else { c >> 1 };
            }
        }
        !c
    }

    #[test]
    fn an_xz_stream_asking_for_a_dictionary_past_the_limit_is_refused_as_such() {
        let mut xz = {
            let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(&[0u8; 4096]).unwrap();
            e.finish().unwrap()
        };
        // The first block header follows the 12-byte stream header: its size, its flags, any
        // sizes (none from this encoder), then LZMA2's id, one property byte (the dictionary
        // size) and, after padding, the header's CRC32.
        let size = (usize::from(xz[12]) + 1) * 4;
        assert_eq!(xz[13] & 0xC3, 0, "one filter, no sizes in the header");
        assert_eq!(&xz[14..16], &[0x21, 0x01], "LZMA2 with one property byte");
        xz[16] = 38; // a 2 GiB dictionary
        let crc = crc32(&xz[12..12 + size - 4]).to_le_bytes();
        xz[12 + size - 4..12 + size].copy_from_slice(&crc);
        let mut out = Vec::new();
        let e = decoder(Format::Xz, std::io::BufReader::new(&xz[..])).unwrap().read_to_end(&mut out).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory, "{e}");
        assert!(e.to_string().contains("256 MiB"), "{e}");
    }
}
