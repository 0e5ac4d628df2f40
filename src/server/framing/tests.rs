//! The framing follower against whole byte streams, cut at every point.

use super::*;

/// What following `stream` found: where each head ended, and where a
/// refused head began (the bytes cleared before it).
#[derive(Debug, PartialEq, Eq)]
struct Followed {
    head_ends: Vec<usize>,
    refused_at: Option<usize>,
}

/// Follows `stream` delivered in pieces ending at `cuts`, answering each
/// ended head with the next of `bodies` (none left: no request, as for HTTP/2).
fn follow(stream: &[u8], bodies: &[BodyFraming], cuts: &[usize]) -> Followed {
    let mut framing = Framing::new();
    let mut bodies = bodies.iter().copied();
    let mut followed = Followed {
        head_ends: Vec::new(),
        refused_at: None,
    };
    let (mut scanned, mut cleared) = (0, 0);
    for end in cuts.iter().copied().chain([stream.len()]) {
        while scanned < end {
            if framing.awaits_body() {
                framing.body(bodies.next());
            }
            let step = framing.advance(&stream[scanned..end]);
            if step.cleared > 0 {
                cleared = scanned + step.cleared;
            }
            match step.stop {
                Stop::Consumed => scanned = end,
                Stop::HeadEnded => {
                    scanned += step.cleared;
                    followed.head_ends.push(scanned);
                }
                Stop::BareLf => {
                    followed.refused_at = Some(cleared);
                    return followed;
                }
            }
        }
    }
    followed
}

/// `follow` gives the same answer whole, cut once anywhere, and byte by byte.
fn follow_every_way(stream: &[u8], bodies: &[BodyFraming]) -> Followed {
    let whole = follow(stream, bodies, &[]);
    for cut in 1..stream.len() {
        assert_eq!(follow(stream, bodies, &[cut]), whole, "cut at {cut}");
    }
    let bytewise: Vec<usize> = (1..stream.len()).collect();
    assert_eq!(follow(stream, bodies, &bytewise), whole, "byte by byte");
    whole
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n";

#[test]
fn crlf_heads_end_at_their_blank_line() {
    let stream = [GET, GET].concat();
    let followed = follow_every_way(&stream, &[BodyFraming::Length(0); 2]);
    assert_eq!(followed.head_ends, [GET.len(), 2 * GET.len()]);
    assert_eq!(followed.refused_at, None);
}

#[test]
fn blank_lines_before_a_request_line_are_skipped() {
    let stream = [b"\r\n\r\n".as_slice(), GET].concat();
    let followed = follow_every_way(&stream, &[BodyFraming::Length(0)]);
    assert_eq!(followed.head_ends, [stream.len()]);
}

#[test]
fn a_bare_lf_anywhere_in_a_head_refuses_it() {
    for stream in [
        b"GET / HTTP/1.1\nHost: x\n\n".as_slice(),
        b"GET / HTTP/1.1\nHost: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\nX-A: 1\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\n",
        b"\nGET / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nX-A: 1\r\r\n\n",
    ] {
        let followed = follow_every_way(stream, &[]);
        assert_eq!(followed.refused_at, Some(0), "{stream:?}");
    }
}

#[test]
fn a_pipelined_bare_lf_head_is_refused_after_the_heads_before_it() {
    let bad = b"GET /b HTTP/1.1\nHost: x\n\n";
    let stream = [GET, bad].concat();
    let followed = follow_every_way(&stream, &[BodyFraming::Length(0)]);
    assert_eq!(followed.head_ends, [GET.len()]);
    assert_eq!(followed.refused_at, Some(GET.len()));
}

#[test]
fn line_feeds_in_a_counted_body_are_not_a_head() {
    let post = b"POST /a HTTP/1.1\r\nContent-Length: 6\r\n\r\n";
    let stream = [post.as_slice(), b"\n\n{}\n\n", GET].concat();
    let bodies = [BodyFraming::Length(6), BodyFraming::Length(0)];
    let followed = follow_every_way(&stream, &bodies);
    assert_eq!(followed.head_ends, [post.len(), stream.len()]);
    assert_eq!(followed.refused_at, None);
}

#[test]
fn a_chunked_body_is_followed_to_its_last_chunk_and_trailers() {
    let post = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let body = b"3;ext=1\r\n\n\n\n\r\nA \r\n012345678\n\r\n0\r\nX-T: 1\r\n\r\n";
    let bad = b"GET /b HTTP/1.1\nHost: x\n\n";
    let stream = [post.as_slice(), body, GET, bad].concat();
    let bodies = [BodyFraming::Chunked, BodyFraming::Length(0)];
    let followed = follow_every_way(&stream, &bodies);
    let after_body = post.len() + body.len();
    assert_eq!(followed.head_ends, [post.len(), after_body + GET.len()]);
    assert_eq!(followed.refused_at, Some(after_body + GET.len()));
}

#[test]
fn chunked_framing_hyper_refuses_stops_the_following() {
    let post = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for body in [
        b"ffffffffffffffffffff\r\n".as_slice(),
        b"-1\r\n",
        b"zz\r\n",
        b"3 4\r\n",
        b"3;a\nb\r\n",
        b"3\r\nabcX",
    ] {
        let stream = [post.as_slice(), body, b"GET / HTTP/1.1\n\n"].concat();
        let followed = follow_every_way(&stream, &[BodyFraming::Chunked]);
        assert_eq!(followed.head_ends, [post.len()], "{body:?}");
        assert_eq!(followed.refused_at, None, "{body:?}");
    }
}

#[test]
fn an_http2_preface_stops_the_following() {
    // The preface reads as a head; no request is handed over for it.
    let stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\n\n\x00";
    let followed = follow_every_way(stream, &[]);
    assert_eq!(followed.head_ends, [18]);
    assert_eq!(followed.refused_at, None);
}
