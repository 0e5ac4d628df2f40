//! One HTTP/1.1 response read whole from a blocking stream into a reused buffer (httparse reads the head).

use std::io::{self, Read};
use std::ops::Range;

/// Header fields a response may carry before it is refused.
const MAX_HEADERS: usize = 64;
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// A response held in the reader's buffer.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Where the body lies in [`ResponseReader::buffer`].
    pub body: Range<usize>,
}

/// Reads responses one after another, keeping its buffer between them.
#[derive(Debug, Default)]
pub struct ResponseReader {
    buffer: Vec<u8>,
}

impl ResponseReader {
    /// The bytes of the last response read (head and body).
    pub fn buffer(&self) -> &[u8] {
        &self.buffer
    }

    /// Reads one whole response (framed by `Content-Length`; chunked bodies are refused).
    pub fn read_response(&mut self, stream: &mut impl Read) -> io::Result<Response> {
        self.buffer.clear();
        let (status, head_len, body_len) = loop {
            self.fill(stream)?;
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
        };
        let end = head_len + body_len;
        while self.buffer.len() < end {
            self.fill(stream)?;
        }
        if self.buffer.len() > end {
            return Err(invalid("bytes after the response (none was asked for)"));
        }
        Ok(Response {
            status,
            body: head_len..end,
        })
    }

    /// Appends what the socket has; an end of stream is an error (a response was due).
    fn fill(&mut self, stream: &mut impl Read) -> io::Result<()> {
        let filled = self.buffer.len();
        self.buffer.resize(filled + READ_CHUNK, 0);
        let read = stream.read(&mut self.buffer[filled..]);
        let count = *read.as_ref().unwrap_or(&0);
        self.buffer.truncate(filled + count);
        if read? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before the whole response",
            ));
        }
        Ok(())
    }
}

/// (status, head length, body length) once the head is complete.
fn parse_head(buffer: &[u8]) -> io::Result<Option<(u16, usize, usize)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(buffer) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(invalid(&format!("unreadable response head: {error}"))),
    };
    let status = response.code.unwrap_or(0);
    let length = response
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| invalid("a response without content-length (chunked is not read)"))?;
    let body_len = std::str::from_utf8(length.value)
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| invalid("an unreadable content-length"))?;
    Ok(Some((status, head_len, body_len)))
}

fn invalid(message: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream that hands out its bytes a few at a time.
    struct Trickle<'a>(&'a [u8], usize);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let count = self.0.len().min(self.1).min(out.len());
            out[..count].copy_from_slice(&self.0[..count]);
            self.0 = &self.0[count..];
            Ok(count)
        }
    }

    #[test]
    fn reads_two_responses_in_a_row_whatever_the_read_sizes() {
        let wire = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 404 Not Found\r\ncontent-length: 0\r\n\r\n";
        let mut reader = ResponseReader::default();
        let mut first = Trickle(&wire[..43], 7);
        let answer = reader.read_response(&mut first).unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(&reader.buffer()[answer.body], b"hello");
        let mut second = Trickle(&wire[43..], 3);
        let answer = reader.read_response(&mut second).unwrap();
        assert_eq!((answer.status, answer.body.len()), (404, 0));
    }

    #[test]
    fn a_response_cut_short_is_an_error() {
        let mut stream = Trickle(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nhel", 100);
        let error = ResponseReader::default()
            .read_response(&mut stream)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_chunked_response_is_refused() {
        let mut stream = Trickle(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
            100,
        );
        let error = ResponseReader::default()
            .read_response(&mut stream)
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
