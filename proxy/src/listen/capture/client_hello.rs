//! A small, bounded reader of a TLS ClientHello: just enough to learn the SNI.
//!
//! It reassembles the handshake message from consecutive handshake records (a large
//! ClientHello, with post-quantum key shares, spans more than one TCP segment and may
//! span records), refuses anything longer than [`MAX_HELLO`], and never allocates more
//! than the message. It does not validate the hello beyond what it reads: the real TLS
//! peer does that.

/// Largest ClientHello handshake message read (16 KiB, one full record).
pub const MAX_HELLO: usize = 16 * 1024;

/// What the bytes seen so far say.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A complete ClientHello, with its SNI host name (lowercase) if it sent one.
    Complete {
        /// The `server_name` extension's host name.
        sni: Option<String>,
    },
    /// A ClientHello so far; more bytes are needed.
    Incomplete,
    /// Not a ClientHello (or one larger than [`MAX_HELLO`]).
    Invalid,
}

/// Reads a ClientHello from the start of `buf` (TLS records, as sent by the client).
pub fn parse(buf: &[u8]) -> Hello {
    let mut msg = Vec::new();
    let mut rest = buf;
    loop {
        // Record header: type 22 (handshake), version 3.x, length.
        if rest.first().is_some_and(|b| *b != 0x16) || rest.get(1).is_some_and(|b| *b != 0x03) {
            return Hello::Invalid;
        }
        let Some(header) = rest.get(..5) else {
            return Hello::Incomplete;
        };
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len == 0 || len > MAX_HELLO + 2048 {
            return Hello::Invalid;
        }
        let Some(fragment) = rest.get(5..5 + len) else {
            return Hello::Incomplete;
        };
        msg.extend_from_slice(fragment);
        rest = &rest[5 + len..];
        if msg.len() >= 4 {
            if msg[0] != 0x01 {
                return Hello::Invalid;
            }
            let body_len = u32::from_be_bytes([0, msg[1], msg[2], msg[3]]) as usize;
            if body_len > MAX_HELLO {
                return Hello::Invalid;
            }
            if msg.len() >= 4 + body_len {
                return match sni(&msg[4..4 + body_len]) {
                    Some(sni) => Hello::Complete { sni },
                    None => Hello::Invalid,
                };
            }
        }
        if msg.len() > MAX_HELLO + 4 {
            return Hello::Invalid;
        }
    }
}

/// A cursor over a byte slice that reads big-endian fields; `None` when out of bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = tail;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A vector with a one- or two-byte length prefix.
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }

    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

/// The SNI of a ClientHello body: `Some(None)` when it has none, `None` when malformed.
fn sni(body: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(body);
    r.take(2 + 32)?; // legacy_version, random
    r.vec8()?; // legacy_session_id
    r.vec16()?; // cipher_suites
    r.vec8()?; // legacy_compression_methods
    if r.0.is_empty() {
        return Some(None); // no extensions at all
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let data = exts.vec16()?;
        if kind != 0 {
            continue;
        }
        // server_name: a list of (name_type, opaque name); host_name is type 0.
        let mut list = Reader(Reader(data).vec16()?);
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.vec16()?;
            if name_type == 0 {
                let name = std::str::from_utf8(name).ok()?;
                return Some(Some(name.trim_end_matches('.').to_ascii_lowercase()));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A real ClientHello, made by rustls, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), server).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out
    }

    #[test]
    fn reads_the_sni_of_a_real_client_hello() {
        let hello = client_hello("API.OpenAI.com");
        assert_eq!(
            parse(&hello),
            Hello::Complete {
                sni: Some("api.openai.com".into())
            }
        );
    }

    #[test]
    fn a_cut_hello_needs_more_bytes_and_garbage_is_invalid() {
        let hello = client_hello("example.com");
        for cut in [1, 5, 40, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Hello::Incomplete, "cut at {cut}");
        }
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Hello::Invalid);
        // A record claiming a handshake message far beyond the limit.
        assert_eq!(
            parse(&[0x16, 3, 1, 0, 4, 1, 0xff, 0xff, 0xff]),
            Hello::Invalid
        );
    }

    #[test]
    fn a_hello_split_across_records_is_reassembled() {
        let hello = client_hello("split.example");
        let msg = &hello[5..];
        let (a, b) = msg.split_at(30);
        let mut two = Vec::new();
        for part in [a, b] {
            two.extend_from_slice(&[0x16, 3, 1]);
            two.extend_from_slice(&(part.len() as u16).to_be_bytes());
            two.extend_from_slice(part);
        }
        assert_eq!(
            parse(&two),
            Hello::Complete {
                sni: Some("split.example".into())
            }
        );
    }
}
