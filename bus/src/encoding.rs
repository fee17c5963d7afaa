//! How a worker message's payload travels: as JSON, or compressed with zstd when it is large
//! (trajectory messages), which the `Content-Encoding` header says. JetStream stores, and the
//! ingester receives and copies, the compressed bytes; the text of a trajectory compresses
//! several times over. A message without the header is plain JSON, so any producer that does not
//! compress is still understood.

use async_nats::HeaderMap;
use std::borrow::Cow;
use std::io::Read;

/// The header naming a payload's encoding, as HTTP names it.
pub const HEADER: &str = "Content-Encoding";
/// The one encoding besides plain JSON.
pub const ZSTD: &str = "zstd";

/// Payloads smaller than this travel as they are: claims, heartbeats and metrics gain little.
const COMPRESS_FROM: usize = 4 << 10;
/// zstd's fastest regular level: most of the size gain for the least CPU on the worker.
const LEVEL: i32 = 1;
/// The most bytes a compressed payload may expand to. The ingester writes a batch of at most
/// 64 MiB in one transaction; a message past that could never be written, and a small message
/// that claims more is refused before anything is allocated for it.
pub const MAX_DECODED: usize = 64 << 20;

/// A payload ready to publish, and the encoding its headers must name.
#[derive(Clone, Debug)]
pub struct Encoded {
    pub payload: Vec<u8>,
    pub encoding: Option<&'static str>,
}

impl Encoded {
    /// Compresses `json` when that is worth it.
    pub fn new(json: Vec<u8>) -> Encoded {
        if json.len() < COMPRESS_FROM {
            return Encoded::plain(json);
        }
        match zstd::bulk::compress(&json, LEVEL) {
            Ok(compressed) if compressed.len() < json.len() => Encoded {
                payload: compressed,
                encoding: Some(ZSTD),
            },
            _ => Encoded::plain(json),
        }
    }

    fn plain(json: Vec<u8>) -> Encoded {
        Encoded {
            payload: json,
            encoding: None,
        }
    }

    /// Names the encoding in `headers`, if there is one.
    pub fn label(&self, headers: &mut HeaderMap) {
        if let Some(encoding) = self.encoding {
            headers.insert(HEADER, encoding);
        }
    }
}

/// The JSON a received payload holds, or why it cannot be read.
pub fn decode<'a>(headers: Option<&HeaderMap>, payload: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    let encoding = headers.and_then(|h| h.get(HEADER)).map(|v| v.as_str());
    match encoding {
        None => Ok(Cow::Borrowed(payload)),
        Some(ZSTD) => decompress(payload).map(Cow::Owned),
        Some(other) => Err(format!(
            "unknown {HEADER} {other:?}: a worker message is plain JSON or {ZSTD}"
        )),
    }
}

fn decompress(payload: &[u8]) -> Result<Vec<u8>, String> {
    let too_large = || format!("a {ZSTD} payload expands past {MAX_DECODED} bytes");
    let corrupt = |e: std::io::Error| format!("not a {ZSTD} payload: {e}");
    // A frame that states its size (every one `Encoded` writes) is decompressed in one call into
    // a buffer of that size; another is streamed, and stopped at the limit.
    match zstd::zstd_safe::get_frame_content_size(payload) {
        Ok(Some(size)) if size > MAX_DECODED as u64 => Err(too_large()),
        Ok(Some(size)) => zstd::bulk::decompress(payload, size as usize).map_err(corrupt),
        _ => {
            let mut out = Vec::new();
            zstd::stream::read::Decoder::new(payload)
                .map_err(corrupt)?
                .take(MAX_DECODED as u64 + 1)
                .read_to_end(&mut out)
                .map_err(corrupt)?;
            if out.len() > MAX_DECODED {
                return Err(too_large());
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(encoding: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HEADER, encoding);
        h
    }

    #[test]
    fn a_large_message_is_compressed_and_read_back() {
        let json = br#"{"text":"three paths, then a summary. "}"#.repeat(400);
        let encoded = Encoded::new(json.clone());
        assert_eq!(encoded.encoding, Some(ZSTD));
        assert!(encoded.payload.len() * 10 < json.len());
        let mut h = HeaderMap::new();
        encoded.label(&mut h);
        assert_eq!(decode(Some(&h), &encoded.payload).unwrap(), &json[..]);
    }

    #[test]
    fn a_small_message_travels_as_json() {
        let json = br#"{"type":"heartbeat"}"#.to_vec();
        let encoded = Encoded::new(json.clone());
        assert_eq!((encoded.encoding, &encoded.payload), (None, &json));
        assert_eq!(decode(None, &json).unwrap(), &json[..]);
    }

    #[test]
    fn a_stream_without_its_size_is_read_too() {
        let json = b"[1,2,3]".repeat(2000);
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
        std::io::Write::write_all(&mut encoder, &json).unwrap();
        encoder.finish().unwrap();
        assert!(matches!(
            zstd::zstd_safe::get_frame_content_size(&streamed),
            Ok(None)
        ));
        assert_eq!(decode(Some(&headers(ZSTD)), &streamed).unwrap(), &json[..]);
    }

    #[test]
    fn what_cannot_be_read_is_named() {
        let err = decode(Some(&headers("br")), b"{}").unwrap_err();
        assert!(err.contains("unknown Content-Encoding \"br\""), "{err}");
        let err = decode(Some(&headers(ZSTD)), b"{\"not\":\"zstd\"}").unwrap_err();
        assert!(err.starts_with("not a zstd payload"), "{err}");
    }

    #[test]
    fn a_bomb_is_refused_before_it_expands() {
        let zeros = vec![0u8; MAX_DECODED + 1];
        let bomb = zstd::bulk::compress(&zeros, 1).unwrap();
        assert!(bomb.len() < 64 << 10);
        let err = decode(Some(&headers(ZSTD)), &bomb).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
        // The same, streamed without its size.
        let mut streamed = Vec::new();
        let mut encoder = zstd::stream::write::Encoder::new(&mut streamed, 1).unwrap();
        std::io::Write::write_all(&mut encoder, &zeros).unwrap();
        encoder.finish().unwrap();
        let err = decode(Some(&headers(ZSTD)), &streamed).unwrap_err();
        assert!(err.contains("expands past"), "{err}");
    }
}
