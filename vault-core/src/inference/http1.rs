//! The HTTP/1.1 that Vault speaks to its upstream: a request head written in one piece,
//! an answer head parsed with `httparse`, and a body decoder for the framings an answer
//! may have (RFC 9112 §6). No I/O here; `pool` reads and writes.
//!
//! The upstream is vLLM, which answers with a length or chunked. The rest of RFC 9112 is
//! handled so that a surprising answer is an error or a closed connection, never a
//! connection reused out of step with its answers.

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method, StatusCode, Uri};

/// The most header fields an answer head may have.
const MAX_HEADERS: usize = 64;
/// The largest answer head taken, in bytes.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size line (with its extensions) taken.
const MAX_CHUNK_LINE: usize = 4096;
/// The most bytes of trailer fields taken after the last chunk (they are dropped).
const MAX_TRAILERS: usize = 16 * 1024;

/// What makes an answer unusable, or its connection unusable.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the connection closed before the answer was complete")]
    Incomplete,
    #[error("not a valid HTTP/1.1 answer: {0}")]
    Invalid(&'static str),
}

/// The head of a request, as sent: `headers` besides `Host`, `Content-Type` (JSON when
/// there is a body) and `Content-Length`.
pub fn request_head(
    method: &Method,
    uri: &Uri,
    host: &HeaderValue,
    body_len: usize,
    headers: &[(HeaderName, HeaderValue)],
) -> Vec<u8> {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut head = Vec::with_capacity(160 + target.len() + headers.len() * 64);
    let mut line = |parts: &[&[u8]]| {
        for part in parts {
            head.extend_from_slice(part);
        }
        head.extend_from_slice(b"\r\n");
    };
    line(&[method.as_str().as_bytes(), b" ", target.as_bytes(), b" HTTP/1.1"]);
    line(&[b"host: ", host.as_bytes()]);
    if body_len > 0 {
        line(&[b"content-type: application/json"]);
    }
    // A body-less GET or HEAD says nothing of a length; any other request says it.
    if body_len > 0 || !matches!(*method, Method::GET | Method::HEAD) {
        line(&[b"content-length: ", itoa::Buffer::new().format(body_len).as_bytes()]);
    }
    for (name, value) in headers {
        line(&[name.as_str().as_bytes(), b": ", value.as_bytes()]);
    }
    line(&[]);
    head
}

/// How the body of an answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (an answer to HEAD, 204, 304).
    Empty,
    /// This many bytes.
    Length(u64),
    Chunked,
    /// When the upstream closes the connection.
    UntilClose,
}

/// What the head of an answer says.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    pub status: StatusCode,
    pub framing: Framing,
    /// Whether the connection can carry another request once this answer's body is read.
    pub keep_alive: bool,
}

/// Parses an answer head from the start of `buf`: `None` while it is incomplete, else the
/// head and its length in bytes. An interim (1xx) answer is returned too; the caller skips
/// it. `body_allowed` is false for an answer to HEAD.
pub fn parse_head(buf: &[u8], body_allowed: bool) -> Result<Option<(Head, usize)>, WireError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut fields);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Err(WireError::Invalid("the head is too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(WireError::Invalid("too many header fields")),
        Err(_) => return Err(WireError::Invalid("a malformed head")),
    };
    if len > MAX_HEAD {
        return Err(WireError::Invalid("the head is too large"));
    }
    let status =
        answer.code.and_then(|code| StatusCode::from_u16(code).ok()).ok_or(WireError::Invalid("a malformed status"))?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::Invalid("an upgrade that was not asked for"));
    }
    // HTTP/1.0 keeps a connection only when asked to; Vault does not ask.
    let mut keep_alive = answer.version == Some(1);
    let (mut length, mut chunked, mut transfer_coded) = (None, false, false);
    for field in answer.headers.iter() {
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = parse_content_length(field.value)?;
            if length.is_some_and(|earlier| earlier != value) {
                return Err(WireError::Invalid("conflicting content lengths"));
            }
            length = Some(value);
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_coded = true;
            // Chunked only when it is the last coding applied.
            chunked = tokens(field.value).last().is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        } else if field.name.eq_ignore_ascii_case("connection")
            && tokens(field.value).any(|option| option.eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
    }
    let framing = if !body_allowed
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if transfer_coded {
        // A length beside a transfer coding is overridden by it (RFC 9112 §6.3), and a
        // connection that sent both is not trusted with another request.
        if length.is_some() {
            keep_alive = false;
        }
        if chunked { Framing::Chunked } else { Framing::UntilClose }
    } else {
        match length {
            Some(length) => Framing::Length(length),
            None => Framing::UntilClose,
        }
    };
    if framing == Framing::UntilClose {
        keep_alive = false;
    }
    Ok(Some((Head { status, framing, keep_alive }, len)))
}

/// The elements of a comma-separated field value, trimmed, empty ones left out.
fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii).filter(|token| !token.is_empty())
}

/// A `Content-Length` value: digits, or a list of the same digits repeated.
fn parse_content_length(value: &[u8]) -> Result<u64, WireError> {
    let invalid = WireError::Invalid("a malformed content length");
    let mut length = None;
    for item in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
        if item.is_empty() || item.len() > 19 || !item.iter().all(u8::is_ascii_digit) {
            return Err(invalid);
        }
        let value = item.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if length.is_some_and(|earlier| earlier != value) {
            return Err(invalid);
        }
        length = Some(value);
    }
    length.ok_or(invalid)
}

/// What a body decoder made of the bytes it was given.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Bytes of the body (never empty).
    Data(Bytes),
    /// More input is needed.
    NeedMore,
    /// The body is complete; the bytes after it are not its.
    End,
}

/// Takes a body out of the bytes read from a connection, whatever pieces they come in.
#[derive(Debug)]
pub struct Decoder {
    state: State,
}

#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes left of a body of known length.
    Length(u64),
    /// Before a chunk-size line.
    ChunkSize,
    /// Bytes left of a chunk's data.
    ChunkData(u64),
    /// After a chunk's data: its CRLF.
    ChunkEnd,
    /// After the last chunk: trailer fields (taken this far), up to an empty line.
    Trailers(usize),
    UntilClose,
    Done,
}

impl Decoder {
    pub fn new(framing: Framing) -> Decoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        Decoder { state }
    }

    /// Takes what it can of the body from the start of `input`.
    pub fn decode(&mut self, input: &mut BytesMut) -> Result<Decoded, WireError> {
        loop {
            match self.state {
                State::Done => return Ok(Decoded::End),
                State::Length(left) | State::ChunkData(left) => {
                    if input.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    let take = usize::try_from(left).map_or(input.len(), |left| left.min(input.len()));
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    return Ok(Decoded::Data(input.split_to(take).freeze()));
                }
                State::UntilClose => {
                    if input.is_empty() {
                        return Ok(Decoded::NeedMore);
                    }
                    return Ok(Decoded::Data(input.split().freeze()));
                }
                State::ChunkSize => {
                    let Some(line) = take_line(input, MAX_CHUNK_LINE, "a chunk-size line is too long")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    let size = parse_chunk_size(&line)?;
                    self.state = if size == 0 { State::Trailers(0) } else { State::ChunkData(size) };
                }
                State::ChunkEnd => {
                    if input.len() < 2 {
                        return Ok(Decoded::NeedMore);
                    }
                    if &input[..2] != b"\r\n" {
                        return Err(WireError::Invalid("a chunk longer than its size"));
                    }
                    input.advance(2);
                    self.state = State::ChunkSize;
                }
                State::Trailers(taken) => {
                    let room = MAX_TRAILERS.saturating_sub(taken);
                    let Some(line) = take_line(input, room, "the trailer fields are too large")? else {
                        return Ok(Decoded::NeedMore);
                    };
                    self.state = if line.is_empty() { State::Done } else { State::Trailers(taken + line.len() + 2) };
                }
            }
        }
    }

    /// The connection ended: fine only for a body that ends that way, or has ended.
    pub fn finish(&mut self) -> Result<(), WireError> {
        match self.state {
            State::UntilClose | State::Done => {
                self.state = State::Done;
                Ok(())
            }
            _ => Err(WireError::Incomplete),
        }
    }
}

/// Takes a CRLF-ended line from the start of `input`, without its CRLF: `None` while it is
/// incomplete, an error once it is longer than `max` bytes.
fn take_line(input: &mut BytesMut, max: usize, too_long: &'static str) -> Result<Option<BytesMut>, WireError> {
    let with_end = max.saturating_add(2);
    let window = &input[..input.len().min(with_end)];
    match window.windows(2).position(|pair| pair == b"\r\n") {
        Some(end) => {
            let line = input.split_to(end);
            input.advance(2);
            Ok(Some(line))
        }
        None if window.len() == with_end => Err(WireError::Invalid(too_long)),
        None => Ok(None),
    }
}

/// The size from a chunk-size line: hex digits, then optional extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<u64, WireError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(WireError::Invalid("a malformed chunk size"));
    }
    Ok(line[..digits].iter().fold(0u64, |n, &d| n * 16 + u64::from(hex_value(d))))
}

fn hex_value(digit: u8) -> u8 {
    match digit {
        b'0'..=b'9' => digit - b'0',
        b'a'..=b'f' => digit - b'a' + 10,
        _ => digit - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Result<Option<(Head, usize)>, WireError> {
        parse_head(text.as_bytes(), true)
    }

    fn framing(fields: &str) -> (Framing, bool) {
        let text = format!("HTTP/1.1 200 OK\r\n{fields}\r\n");
        let (head, len) = head(&text).unwrap().unwrap();
        assert_eq!(len, text.len());
        (head.framing, head.keep_alive)
    }

    /// Decodes `wire` fed in pieces of `step` bytes; the body and what was left after it.
    fn decode_in_pieces(framing: Framing, wire: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), WireError> {
        let mut decoder = Decoder::new(framing);
        let (mut input, mut body) = (BytesMut::new(), Vec::new());
        let mut pieces = wire.chunks(step);
        loop {
            match decoder.decode(&mut input)? {
                Decoded::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Decoded::End => return Ok((body, input.to_vec())),
                Decoded::NeedMore => match pieces.next() {
                    Some(piece) => input.extend_from_slice(piece),
                    None => {
                        decoder.finish()?;
                        return Ok((body, input.to_vec()));
                    }
                },
            }
        }
    }

    #[test]
    fn a_request_head_names_the_host_the_json_body_and_its_length() {
        let host = HeaderValue::from_static("127.0.0.1:8000");
        let extra = [(HeaderName::from_static("x-request-id"), HeaderValue::from_static("r1"))];
        let uri = Uri::from_static("/v1/chat/completions?x=1");
        let head = request_head(&Method::POST, &uri, &host, 42, &extra);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "POST /v1/chat/completions?x=1 HTTP/1.1\r\nhost: 127.0.0.1:8000\r\ncontent-type: application/json\r\n\
             content-length: 42\r\nx-request-id: r1\r\n\r\n"
        );
        let head = request_head(&Method::GET, &Uri::from_static("/health"), &host, 0, &[]);
        assert_eq!(String::from_utf8(head).unwrap(), "GET /health HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n\r\n");
        let head = request_head(&Method::POST, &Uri::from_static("/reset"), &host, 0, &[]);
        assert!(String::from_utf8(head).unwrap().contains("\r\ncontent-length: 0\r\n"));
    }

    #[test]
    fn an_answer_head_is_taken_only_once_it_is_complete() {
        let text = "HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}";
        for cut in 0..text.len() - 2 {
            assert!(head(&text[..cut]).unwrap().is_none(), "cut at {cut}");
        }
        let (head, len) = head(text).unwrap().unwrap();
        let expected = (StatusCode::CREATED, Framing::Length(2), true, text.len() - 2);
        assert_eq!((head.status, head.framing, head.keep_alive, len), expected);
    }

    #[test]
    fn the_framing_follows_rfc_9112() {
        assert_eq!(framing("Content-Length: 10\r\n"), (Framing::Length(10), true));
        assert_eq!(framing("content-length: 7, 7\r\ncontent-length: 7\r\n"), (Framing::Length(7), true));
        assert_eq!(framing("Transfer-Encoding: chunked\r\n"), (Framing::Chunked, true));
        assert_eq!(framing("transfer-encoding: gzip, Chunked\r\n"), (Framing::Chunked, true));
        // A coding after chunked: the body ends with the connection.
        assert_eq!(framing("transfer-encoding: chunked, gzip\r\n"), (Framing::UntilClose, false));
        // A transfer coding overrides a length, and the connection is not reused.
        assert_eq!(framing("content-length: 3\r\ntransfer-encoding: chunked\r\n"), (Framing::Chunked, false));
        assert_eq!(framing(""), (Framing::UntilClose, false));
        assert_eq!(framing("content-length: 0\r\nconnection: keep-alive, Close\r\n"), (Framing::Length(0), false));
        let (head, _) = parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", true).unwrap().unwrap();
        assert!(!head.keep_alive, "an HTTP/1.0 answer ends its connection");
    }

    #[test]
    fn answers_without_a_body_have_none_whatever_their_fields_say() {
        for status in ["204 No Content", "304 Not Modified", "100 Continue"] {
            let text = format!("HTTP/1.1 {status}\r\ncontent-length: 5\r\n\r\n");
            assert_eq!(head(&text).unwrap().unwrap().0.framing, Framing::Empty, "{status}");
        }
        let (head, _) = parse_head(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Empty, "an answer to HEAD");
    }

    #[test]
    fn a_malformed_or_oversized_head_is_an_error() {
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1, 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(matches!(head(text), Err(WireError::Invalid(_))), "{text:?}");
        }
        let many: String = (0..MAX_HEADERS + 1).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(matches!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n")), Err(WireError::Invalid(_))));
        let long = format!("HTTP/1.1 200 OK\r\nx: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(head(&long), Err(WireError::Invalid(_))), "a head that never ends within the limit");
    }

    #[test]
    fn a_chunked_body_is_decoded_from_pieces_of_any_size() {
        let wire = b"5;name=value\r\nhello\r\n1 \r\n,\r\n6\r\n world\r\n0\r\nx-trailer: 1\r\n\r\nHTTP/1.1";
        for step in 1..=wire.len() {
            let (body, rest) = decode_in_pieces(Framing::Chunked, wire, step).unwrap();
            assert_eq!(body, b"hello, world", "step {step}");
            assert!(b"HTTP/1.1".starts_with(&rest), "step {step}: what follows the body is left");
        }
    }

    #[test]
    fn a_body_of_known_length_stops_at_its_length() {
        for step in 1..=9 {
            let (body, rest) = decode_in_pieces(Framing::Length(5), b"hello and more", step).unwrap();
            assert_eq!(body, b"hello", "step {step}");
            assert!(b" and more".starts_with(&rest));
        }
        assert_eq!(decode_in_pieces(Framing::Length(0), b"", 1).unwrap().0, b"");
        assert_eq!(decode_in_pieces(Framing::Empty, b"x", 1).unwrap(), (vec![], vec![]));
    }

    #[test]
    fn a_body_until_close_is_whatever_comes_before_the_connection_ends() {
        let (body, rest) = decode_in_pieces(Framing::UntilClose, b"all of it", 4).unwrap();
        assert_eq!((body.as_slice(), rest.as_slice()), (&b"all of it"[..], &b""[..]));
    }

    #[test]
    fn a_body_cut_short_is_incomplete() {
        assert!(matches!(decode_in_pieces(Framing::Length(10), b"short", 2), Err(WireError::Incomplete)));
        assert!(matches!(decode_in_pieces(Framing::Chunked, b"5\r\nhello\r\n", 3), Err(WireError::Incomplete)));
        assert!(matches!(decode_in_pieces(Framing::Chunked, b"5\r\nhello\r\n0\r\n", 3), Err(WireError::Incomplete)));
    }

    #[test]
    fn a_malformed_chunked_body_is_an_error() {
        for wire in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhello!!\r\n",
            b"1000000000000000\r\n",
            b"5 x\r\nhello\r\n",
            b"-5\r\nhello\r\n",
        ] {
            let outcome = decode_in_pieces(Framing::Chunked, wire, wire.len());
            assert!(matches!(outcome, Err(WireError::Invalid(_))), "{:?}: {outcome:?}", String::from_utf8_lossy(wire));
        }
        let long_line = format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(matches!(decode_in_pieces(Framing::Chunked, long_line.as_bytes(), 100), Err(WireError::Invalid(_))));
        let trailers = format!("0\r\n{}", "x-t: 1\r\n".repeat(MAX_TRAILERS / 8 + 1));
        assert!(matches!(decode_in_pieces(Framing::Chunked, trailers.as_bytes(), 512), Err(WireError::Invalid(_))));
        // Trailer lines that fill the allowance to its last byte, or one short, then more.
        for filler in [MAX_TRAILERS - 3, MAX_TRAILERS - 4] {
            let trailers = format!("0\r\nx: {}\r\nz: 1\r\n\r\n", "a".repeat(filler));
            let outcome = decode_in_pieces(Framing::Chunked, trailers.as_bytes(), 1000);
            assert!(matches!(outcome, Err(WireError::Invalid(_))), "{filler}: {outcome:?}");
        }
    }

    #[test]
    fn lines_of_the_longest_length_allowed_are_taken_whatever_pieces_they_come_in() {
        let extension = "e".repeat(MAX_CHUNK_LINE - 2);
        let wire = format!("1;{extension}\r\nx\r\n0\r\nt: {}\r\n\r\n", "a".repeat(MAX_TRAILERS - 3));
        // Pieces that end before, inside and after each line's CRLF.
        for step in [4096, 4097, 4098, 20_488, 20_489, 20_490] {
            let (body, rest) = decode_in_pieces(Framing::Chunked, wire.as_bytes(), step).unwrap();
            assert_eq!((body.as_slice(), rest.as_slice()), (&b"x"[..], &b""[..]), "step {step}");
        }
    }
}
