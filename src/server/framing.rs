//! Where each HTTP/1 request head and body ends in a connection's bytes, followed as hyper reads them.
//!
//! [`Framing`] classifies the bytes a client sends, in order, across read
//! boundaries: a head runs to its blank line (leading blank lines skipped,
//! as httparse does), and every line of it must end in CRLF; a body runs as
//! hyper framed it (told through [`BodyFraming`] once hyper has read the
//! head): a count of bytes, or chunked framing followed state by state as
//! hyper's decoder does. Body bytes are never searched for line endings.
//! Bytes it cannot follow (HTTP/2, framing hyper will refuse too) end the
//! following: from then on every byte passes.

use memchr::memchr_iter;

/// How hyper framed a request's body, from the head it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BodyFraming {
    /// Exactly this many bytes (zero: no body).
    Length(u64),
    /// Chunked transfer coding, up to its last chunk and trailers.
    Chunked,
}

/// Why [`Framing::advance`] stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    /// Every byte was classified; a head may be open at the end (its bytes
    /// are not cleared: they wait for the rest of it).
    Consumed,
    /// A head ended where the cleared bytes end; what follows waits for its
    /// body's framing ([`Framing::body`]).
    HeadEnded,
    /// The head open where the cleared bytes end has a line ending in a bare LF.
    BareLf,
}

/// What [`Framing::advance`] found in some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    /// How many of the bytes may go to hyper: everything before an open or refused head.
    pub cleared: usize,
    pub stop: Stop,
}

/// What the next byte of the connection is.
#[derive(Debug, Clone, Copy)]
enum Expect {
    Head(HeadScan),
    /// A head ended; its body's framing is not known yet.
    Framing,
    /// This many body bytes are still due.
    Length(u64),
    Chunked(ChunkScan),
    /// Not followed any more: every byte passes.
    Off,
}

/// A connection's request framing, followed byte by byte.
#[derive(Debug, Clone, Copy)]
pub(super) struct Framing {
    expect: Expect,
}

impl Framing {
    /// A new connection: a request head comes first.
    pub fn new() -> Framing {
        Framing {
            expect: Expect::Head(HeadScan::default()),
        }
    }

    /// Whether a head ended and its body's framing is awaited.
    pub fn awaits_body(&self) -> bool {
        matches!(self.expect, Expect::Framing)
    }

    /// The framing hyper gave the body of the head that just ended; none (no
    /// request was handed over for it: an HTTP/2 preface) stops the following.
    pub fn body(&mut self, framing: Option<BodyFraming>) {
        self.expect = match framing {
            Some(BodyFraming::Length(0)) => Expect::Head(HeadScan::default()),
            Some(BodyFraming::Length(length)) => Expect::Length(length),
            Some(BodyFraming::Chunked) => Expect::Chunked(ChunkScan::default()),
            None => Expect::Off,
        };
    }

    /// Stops the following: every byte passes from now on.
    pub fn stop_following(&mut self) {
        self.expect = Expect::Off;
    }

    /// Classifies `bytes`, the next ones of the connection.
    pub fn advance(&mut self, bytes: &[u8]) -> Step {
        let all = Step {
            cleared: bytes.len(),
            stop: Stop::Consumed,
        };
        let mut at = 0;
        loop {
            let rest = &bytes[at..];
            match &mut self.expect {
                Expect::Off => return all,
                Expect::Framing => {
                    return Step {
                        cleared: at,
                        stop: Stop::HeadEnded,
                    }
                }
                Expect::Length(due) => {
                    let taken = (*due).min(rest.len() as u64);
                    *due -= taken;
                    if *due > 0 {
                        return all;
                    }
                    at += taken as usize;
                    self.expect = Expect::Head(HeadScan::default());
                }
                Expect::Chunked(chunks) => match chunks.advance(rest) {
                    Chunks::Ended(length) => {
                        at += length;
                        self.expect = Expect::Head(HeadScan::default());
                    }
                    Chunks::Open => return all,
                    // hyper refuses the body too and reads no further.
                    Chunks::Invalid => {
                        self.expect = Expect::Off;
                        return all;
                    }
                },
                Expect::Head(head) => {
                    let (stop, cleared) = match head.advance(rest) {
                        Head::Open => (Stop::Consumed, at),
                        Head::Ended(length) => (Stop::HeadEnded, at + length),
                        Head::BareLf => (Stop::BareLf, at),
                    };
                    if stop == Stop::HeadEnded {
                        self.expect = Expect::Framing;
                    }
                    return Step { cleared, stop };
                }
            }
        }
    }
}

/// Progress through one request head.
#[derive(Debug, Clone, Copy, Default)]
struct HeadScan {
    /// Bytes of the current line seen so far.
    line: usize,
    /// The last byte of the current line seen so far is a CR.
    cr: bool,
    /// A request line has begun (blank lines before it are skipped).
    began: bool,
}

/// Where a head stands after some bytes.
enum Head {
    Open,
    /// It ended this many bytes in.
    Ended(usize),
    BareLf,
}

impl HeadScan {
    fn advance(&mut self, bytes: &[u8]) -> Head {
        let mut start = 0;
        for lf in memchr_iter(b'\n', bytes) {
            let cr = if lf > start {
                bytes[lf - 1] == b'\r'
            } else {
                self.cr
            };
            if !cr {
                return Head::BareLf;
            }
            let blank = self.line + (lf - start) == 1;
            *self = HeadScan {
                began: self.began || !blank,
                ..HeadScan::default()
            };
            start = lf + 1;
            if blank && self.began {
                return Head::Ended(start);
            }
        }
        let rest = &bytes[start..];
        if let Some(&last) = rest.last() {
            self.line += rest.len();
            self.cr = last == b'\r';
        }
        Head::Open
    }
}

/// hyper's chunked decoder states (`proto/h1/decode.rs`), mirrored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Chunk {
    #[default]
    Start,
    Size,
    SizeLws,
    Extension,
    SizeLf,
    Data,
    DataCr,
    DataLf,
    Trailer,
    TrailerLf,
    EndCr,
    EndLf,
    End,
}

/// Progress through a chunked body.
#[derive(Debug, Clone, Copy, Default)]
struct ChunkScan {
    state: Chunk,
    /// The chunk size being read, then the data bytes still due.
    size: u64,
}

/// Where a chunked body stands after some bytes.
enum Chunks {
    Open,
    /// It ended this many bytes in.
    Ended(usize),
    Invalid,
}

impl ChunkScan {
    fn advance(&mut self, bytes: &[u8]) -> Chunks {
        let mut at = 0;
        while at < bytes.len() {
            if self.state == Chunk::Data {
                let taken = self.size.min((bytes.len() - at) as u64);
                self.size -= taken;
                at += taken as usize;
                if self.size == 0 {
                    self.state = Chunk::DataCr;
                }
                continue;
            }
            let byte = bytes[at];
            at += 1;
            match self.next(byte) {
                Some(Chunk::End) => return Chunks::Ended(at),
                Some(state) => self.state = state,
                None => return Chunks::Invalid,
            }
        }
        Chunks::Open
    }

    /// The state after `byte`; none when hyper's decoder refuses it.
    fn next(&mut self, byte: u8) -> Option<Chunk> {
        use Chunk::*;
        Some(match (self.state, byte) {
            (Start | Size, _) if byte.is_ascii_hexdigit() => {
                let digit = (byte as char).to_digit(16)? as u64;
                self.size = self.size.checked_mul(16)?.checked_add(digit)?;
                Size
            }
            (Size | SizeLws, b'\t' | b' ') => SizeLws,
            (Size | SizeLws, b';') => Extension,
            (Size | SizeLws | Extension, b'\r') => SizeLf,
            (Extension, b'\n') => return None,
            (Extension, _) => Extension,
            (SizeLf, b'\n') if self.size == 0 => EndCr,
            (SizeLf, b'\n') => Data,
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Start,
            (Trailer, b'\r') => TrailerLf,
            (Trailer, _) => Trailer,
            (TrailerLf, b'\n') => EndCr,
            (EndCr, b'\r') => EndLf,
            (EndCr, _) => Trailer,
            (EndLf, b'\n') => End,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests;
