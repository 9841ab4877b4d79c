//! The SNI of a TLS ClientHello, read by peeking (the bytes stay in the
//! socket, so a TLS passthrough forwards the handshake untouched).

use std::time::Duration;

use tokio::net::TcpStream;

/// Largest TLS record (2^14 bytes of payload plus a 5-byte header).
const MAX_RECORD: usize = 16_384 + 5;

/// What a buffer says about the SNI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sni {
    /// The whole first record is not in the buffer yet.
    Incomplete,
    /// The ClientHello names this server (lowercase).
    Name(String),
    /// No SNI: not a ClientHello, no `server_name` extension, or malformed.
    None,
}

/// A cursor over a byte slice that yields `None` when it runs out.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }

    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }

    /// A block prefixed by its length in `width` bytes (1 or 2).
    fn block(&mut self, width: usize) -> Option<Reader<'a>> {
        let n = if width == 1 { self.u8()? } else { self.u16()? };
        self.take(n).map(Reader)
    }
}

/// Reads the SNI from the first TLS record in `buf` (a ClientHello that
/// spans several records is read as having no SNI).
pub fn parse(buf: &[u8]) -> Sni {
    let mut r = Reader(buf);
    let Some(header) = r.take(5) else {
        return Sni::Incomplete;
    };
    if header[0] != 0x16 {
        return Sni::None;
    }
    let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
    let Some(record) = r.take(len) else {
        return Sni::Incomplete;
    };
    match client_hello_sni(Reader(record)) {
        Some(name) => Sni::Name(name),
        None => Sni::None,
    }
}

fn client_hello_sni(mut r: Reader<'_>) -> Option<String> {
    // Handshake header: type 1 (ClientHello), 24-bit length.
    let h = r.take(4)?;
    if h[0] != 1 {
        return None;
    }
    let body_len = (usize::from(h[1]) << 16) | (usize::from(h[2]) << 8) | usize::from(h[3]);
    let mut body = Reader(r.take(body_len)?);
    body.take(2 + 32)?; // legacy_version, random
    body.block(1)?; // session id
    body.block(2)?; // cipher suites
    body.block(1)?; // compression methods
    let mut exts = body.block(2)?;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.block(2)?;
        if kind != 0 {
            continue;
        }
        let mut list = data.block(2)?;
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let name = list.block(2)?;
            if name_type == 0 {
                let name = std::str::from_utf8(name.0).ok()?;
                return Some(name.trim_end_matches('.').to_ascii_lowercase());
            }
        }
        return None;
    }
    None
}

/// Peeks at a connection that starts with a TLS record until its SNI is
/// known, the record is complete, or `timeout` passes (then `None`).
pub async fn peek_sni(stream: &TcpStream, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 512];
    let mut last = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return None,
        };
        match parse(&buf[..n]) {
            Sni::Name(name) => return Some(name),
            Sni::None => return None,
            Sni::Incomplete => {}
        }
        if n == buf.len() {
            if buf.len() >= MAX_RECORD {
                return None;
            }
            buf.resize(MAX_RECORD, 0);
            continue;
        }
        if n == last {
            // peek returns the same bytes until more arrive; wait a little.
            if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(5)))
                .await
                .is_err()
            {
                return None;
            }
        }
        last = n;
    }
}

/// Whether an SNI matches a `server_names` entry: exact, or `*.suffix`
/// for names ending in `.suffix` (Envoy's wildcard form).
pub fn server_name_matches(pattern: &str, sni: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => {
            sni.len() > suffix.len() + 1
                && sni.ends_with(suffix)
                && sni.as_bytes()[sni.len() - suffix.len() - 1] == b'.'
        }
        None => pattern.eq_ignore_ascii_case(sni),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record naming `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        let mut sni = vec![0u8];
        sni.extend((name.len() as u16).to_be_bytes());
        sni.extend(name.as_bytes());
        let mut sni_ext = (sni.len() as u16).to_be_bytes().to_vec();
        sni_ext.extend(sni);
        let mut exts = vec![0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]; // ec_point_formats
        exts.extend([0x00, 0x00]);
        exts.extend((sni_ext.len() as u16).to_be_bytes());
        exts.extend(sni_ext);
        let mut body = vec![0x03, 0x03];
        body.extend([7u8; 32]);
        body.extend([0]); // session id
        body.extend([0x00, 0x02, 0x13, 0x01]); // one cipher suite
        body.extend([0x01, 0x00]); // null compression
        body.extend((exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1, 0];
        hs.extend((body.len() as u16).to_be_bytes());
        hs.extend(body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend((hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn sni_is_read_from_a_client_hello_and_waits_for_the_whole_record() {
        let rec = client_hello("A.Example");
        assert_eq!(parse(&rec), Sni::Name("a.example".into()));
        assert_eq!(parse(&rec[..rec.len() - 1]), Sni::Incomplete);
        assert_eq!(parse(&rec[..3]), Sni::Incomplete);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Sni::None);
        let mut bad = rec.clone();
        bad[5] = 2; // not a ClientHello
        assert_eq!(parse(&bad), Sni::None);
    }

    #[test]
    fn wildcard_server_names_match_subdomains_only() {
        assert!(server_name_matches("*.example.com", "a.example.com"));
        assert!(server_name_matches("*.example.com", "a.b.example.com"));
        assert!(!server_name_matches("*.example.com", "example.com"));
        assert!(!server_name_matches("*.example.com", "aexample.com"));
        assert!(server_name_matches("a.example", "a.example"));
        assert!(!server_name_matches("a.example", "b.example"));
    }
}
